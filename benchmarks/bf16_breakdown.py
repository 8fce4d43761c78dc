"""Where the time of a bf16 step goes on this CPU: the matrix products against the rest.

  python benchmarks/bf16_breakdown.py [--rounds 3] [--eval-questions 32] [--json PATH]
                                      [--model NAME]  # default: the embedded default's

Figure 8 of ``suite.py`` compares the bf16 speed-up with the machine's bf16/fp32 matmul
ratio. Only the matrix products get that ratio; this script measures how much of a step
they are. For fp32 and bf16 bases (both with eager attention, so that attention's products
are ``bmm`` calls and count as matrix products), ``torch.profiler`` records ``--rounds``
training steps and inference passes over the evaluation questions, after a warm-up of each,
and splits the self CPU time into matrix products (``mm``, ``bmm``, ``addmm``, ``baddbmm``)
and everything else (element-wise work, casts, softmax, copies, the optimizer). Figures,
each for ``train`` and ``infer``:

- ``matmul_share_<phase>_<dtype>``: the matrix products' share of the profiled time;
- ``matmul_speedup_<phase>``: fp32 matmul time over bf16 matmul time in the profile (at
  inference's larger shapes it can exceed ``bf16_over_fp32_matmul``, the matmul ratio
  measured over one layer's linear shapes at the median training batch, as in ``suite.py``);
- ``rest_fp32_over_bf16_<phase>``: how much faster everything else runs in bf16;
- ``profiled_speedup_<phase>``: fp32 time over bf16 time, as profiled;
- ``speedup_bound_<phase>``: the bf16 speed-up if bf16's matrix products ran at the larger of
  the matmul ratio and ``matmul_speedup`` and everything else took the time it takes now:
  fp32 time / (fp32 matmul time / that speed-up + bf16 rest time);
- ``speedup_ceiling_<phase>``: the same with matrix products that take no time at all;
- ``..._over_matmul_ratio_<phase>``: the bound and the ceiling over the matmul ratio, the
  quantity figure 8's targets (0.6 training, 0.8 inference) are stated in. A bound below a
  target means no speed-up of the matrix products to the machine's ratio reaches it; a
  ceiling below it, no speed-up of them at all.

Profiled times are longer than plain ones (the profiler's own cost per op), so the shares
are the figures to read, not the seconds. Time between ops (Python, glue) is in neither
part; it is the same in both dtypes, so leaving it out makes the bound and the ceiling
higher than they are: a bound below a target is conclusive. The fp32 baseline here is eager
attention, where figure 8's fp32 is SDPA (the faster one for fp32 on a CPU).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from suite import Suite, eval_pass, head_step
from torch.profiler import ProfilerActivity, profile

from bayeslora.bench.config import BenchConfig
from bayeslora.models.classifier import lora_classifier

MATMUL_OPS = frozenset({"aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm"})
DTYPES = ("float32", "bfloat16")


def profiled_seconds(work) -> tuple[float, float]:
    """(matrix-product seconds, all other seconds) of ``work()``, by self CPU time."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        work()
    matmul = rest = 0.0
    for event in prof.key_averages():
        seconds = event.self_cpu_time_total / 1e6
        if event.key in MATMUL_OPS:
            matmul += seconds
        else:
            rest += seconds
    return matmul, rest


def breakdown(suite: Suite, dtype: str, rounds: int) -> dict[str, tuple[float, float]]:
    """Profiled (matmul, rest) seconds of ``rounds`` training steps and inference passes."""
    with lora_classifier(
        suite.base(dtype, "eager", quantization="none"), suite.answer_ids, suite.lora, seed=0
    ) as clf:
        optimizer = torch.optim.AdamW(clf.lora_parameters(), lr=0.0)
        batches = suite.eval_batches()

        def train():
            clf.train()
            for r in range(rounds):
                head_step(clf, optimizer, suite.batch(r))

        def infer():
            for _ in range(rounds):
                eval_pass(clf, batches, suite.device)

        head_step(clf, optimizer, suite.batch(-1))  # warm-ups
        infer()
        return {"train": profiled_seconds(train), "infer": profiled_seconds(infer)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--eval-questions", type=int, default=32)
    p.add_argument("--json", help="write {figure: value} here")
    p.add_argument("--model", default=BenchConfig().model)
    args = p.parse_args(argv)
    suite = Suite.on_cpu(args.model, args.rounds, args.eval_questions)
    roof = suite.rooflines(reps=5)
    ratio = roof["bfloat16"] / roof["float32"]
    times = {d: breakdown(suite, d, args.rounds) for d in DTYPES}
    figures = {"bf16_over_fp32_matmul": ratio}
    for phase in ("train", "infer"):
        (m32, r32), (m16, r16) = times["float32"][phase], times["bfloat16"][phase]
        t32 = m32 + r32
        figures[f"matmul_share_{phase}_float32"] = m32 / t32
        figures[f"matmul_share_{phase}_bfloat16"] = m16 / (m16 + r16)
        figures[f"matmul_speedup_{phase}"] = m32 / m16
        figures[f"rest_fp32_over_bf16_{phase}"] = r32 / r16
        figures[f"profiled_speedup_{phase}"] = t32 / (m16 + r16)
        bound = t32 / (m32 / max(ratio, m32 / m16) + r16)
        figures[f"speedup_bound_{phase}"] = bound
        figures[f"speedup_bound_over_matmul_ratio_{phase}"] = bound / ratio
        figures[f"speedup_ceiling_{phase}"] = t32 / r16
        figures[f"speedup_ceiling_over_matmul_ratio_{phase}"] = t32 / r16 / ratio
        print(
            f"{phase}: fp32 {m32:.2f} s matmul + {r32:.2f} s rest, "
            f"bf16 {m16:.2f} s matmul + {r16:.2f} s rest (profiled)",
            flush=True,
        )
    for name, value in figures.items():
        print(f"  {name:<44} {value:8.4f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
