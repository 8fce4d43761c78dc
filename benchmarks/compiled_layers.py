"""What ``torch.compile`` of the decoder layers would buy: an option the harness does not take.

  python benchmarks/compiled_layers.py [--rounds 3] [--eval-questions 64] [--json PATH]
                                       [--backend inductor] [--dtypes float32,bfloat16]
                                       [--train-dropout lanes|fused]
                                       [--model NAME]  # default: the embedded default's

Figure 8 of ``suite.py`` (bf16 over fp32 against the machine's matmul ratio) is held back by
element-wise work that runs no faster in bf16 (``bf16_breakdown.py``); fusing it is what a
compiler does. For each dtype in turn, in one process (eager attention, the bf16 CPU
default), this script compiles every decoder layer on its own
(``torch.compile(layer, dynamic=True)``: the layers share their graphs, and sequence lengths
do not recompile) and times, interleaved on the same batches, a training step and an
inference pass over the evaluation questions with the eager layers against the compiled ones
(swapped in and out of the decoder's layer list). Figures, per dtype:

- ``compile_seconds_<dtype>``: the first training step and inference pass with compiled
  layers less the same work with warm eager layers: the cost a run would pay once. Inductor
  keeps a cache on disk, so a second process (or the second dtype) can compile faster
  (dynamo's own in-process caches are reset per dtype);
- ``compiled_over_eager_train_<dtype>``, ``compiled_over_eager_infer_<dtype>``: compiled time
  over eager time (median of per-round ratios; below 1 is faster);
- ``graphs_<dtype>``, ``graph_breaks_<dtype>``: how many graphs dynamo compiled and how many
  times it broke one (``torch._dynamo``'s counters), so that a ratio near 1 cannot hide
  layers that silently ran uncompiled; hitting the recompile limit is an error here.

LoRA dropout's numpy draw cannot be traced (``models/dropout.py``). ``--train-dropout``
says what the compiled layers do with it in training:

- ``lanes`` (the default): the harness's draw runs outside the graph
  (``torch.compiler.disable``), so each adapter's dropout breaks its layer's graph;
- ``fused``: the compiled layers trace torch's own ``F.dropout`` instead, which inductor
  draws with its own generator inside the fused kernels (other masks than the harness's,
  the same rate up to the lanes' 2**-16): what compiling training could buy at best (fused
  with inductor; a backend that generates no kernels, such as ``aot_eager``, fuses nothing).
  A layer with a generator of its own (MC Dropout's sampling) keeps its lanes. The
  training figure is then named ``compiled_fused_dropout_over_eager_train_<dtype>``; the
  eager layers keep the harness's dropout, and inference (no dropout) is the same in both
  modes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

import torch
import torch._dynamo
import torch.nn.functional as F
from common import interleave
from suite import Suite, _print_times, eval_pass, head_step
from torch._dynamo.utils import counters

import bayeslora.models.dropout as lora_dropout
from bayeslora.bench.config import BenchConfig
from bayeslora.models.classifier import lora_classifier
from bayeslora.models.dropout import LoraDropout


@contextlib.contextmanager
def lanes_outside_the_graph():
    """LoRA dropout's random draw (numpy) run eagerly inside a compiled layer."""
    eager = lora_dropout.random_lanes
    lora_dropout.random_lanes = torch.compiler.disable(eager)
    try:
        yield
    finally:
        lora_dropout.random_lanes = eager


@contextlib.contextmanager
def torch_dropout_in_the_graph():
    """LoRA dropout traced as torch's ``F.dropout`` while dynamo compiles a layer; eager
    calls keep the harness's lanes."""
    lanes_forward = LoraDropout.forward

    def forward(self, x):
        # a layer with a generator of its own (MC Dropout's sampling) keeps its lanes: torch's
        # dropout would silently draw from the global generator instead
        traced = torch.compiler.is_compiling() and self.generator is None
        if traced and self.training and self.p > 0:
            return F.dropout(x, self.p, training=True)
        return lanes_forward(self, x)

    LoraDropout.forward = forward
    try:
        yield
    finally:
        LoraDropout.forward = lanes_forward


# --train-dropout: what the compiled layers do with LoRA dropout in training, and the prefix
# of the training figure it gives
TRAIN_DROPOUT = {
    "lanes": (lanes_outside_the_graph, "compiled"),
    "fused": (torch_dropout_in_the_graph, "compiled_fused_dropout"),
}


def measure(suite: Suite, dtype: str, backend: str, train_figure: str) -> dict[str, float]:
    with lora_classifier(
        suite.base(dtype, "eager", quantization="none"), suite.answer_ids, suite.lora, seed=0
    ) as clf:
        optimizer = torch.optim.AdamW(clf.lora_parameters(), lr=0.0)
        layers = clf.decoder.layers
        eager = list(layers)
        compiled = [torch.compile(layer, backend=backend, dynamic=True) for layer in eager]
        batches = suite.eval_batches()

        def use(which: list) -> None:
            for i, layer in enumerate(which):
                layers[i] = layer

        def train(r: int) -> None:
            clf.train()
            head_step(clf, optimizer, suite.batch(r))

        def first(which: list) -> float:
            use(which)
            start = time.perf_counter()
            train(-1)
            eval_pass(clf, batches, suite.device)
            return time.perf_counter() - start

        torch._dynamo.reset()  # each dtype compiles, and counts, from nothing
        counters.clear()
        try:
            first(eager)  # untimed: the first step at a new length is slower
            compile_seconds = first(compiled) - first(eager)
            t_train = interleave(
                {
                    "eager": lambda r: (use(eager), train(r)),
                    "compiled": lambda r: (use(compiled), train(r)),
                },
                suite.rounds,
            )
            t_infer = interleave(
                {
                    "eager": lambda r: (use(eager), eval_pass(clf, batches, suite.device)),
                    "compiled": lambda r: (use(compiled), eval_pass(clf, batches, suite.device)),
                },
                suite.rounds,
            )
        finally:
            use(eager)  # the base goes back as it came
        _print_times(t_train, "train ")
        _print_times(t_infer, "infer ")
        return {
            f"compile_seconds_{dtype}": compile_seconds,
            f"{train_figure}_over_eager_train_{dtype}": t_train.ratio("compiled", "eager"),
            f"compiled_over_eager_infer_{dtype}": t_infer.ratio("compiled", "eager"),
            f"graphs_{dtype}": float(counters["stats"]["unique_graphs"]),
            f"graph_breaks_{dtype}": float(sum(counters["graph_break"].values())),
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--eval-questions", type=int, default=64)
    p.add_argument("--backend", default="inductor", help="torch.compile backend")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument(
        "--train-dropout", choices=sorted(TRAIN_DROPOUT), default="lanes",
        help="LoRA dropout in compiled training: the harness's draw outside the graph "
        "(lanes) or torch's dropout traced into it, fused by inductor (fused)",
    )  # fmt: skip
    p.add_argument("--json", help="write {figure: value} here")
    p.add_argument("--model", default=BenchConfig().model)
    args = p.parse_args(argv)
    suite = Suite.on_cpu(args.model, args.rounds, args.eval_questions)
    figures: dict[str, float] = {}
    # a layer that recompiles past the limit would run uncompiled and look like no gain
    torch._dynamo.config.fail_on_recompile_limit_hit = True
    train_dropout, train_figure = TRAIN_DROPOUT[args.train_dropout]
    with train_dropout():
        for dtype in args.dtypes.split(","):
            print(
                f"{dtype} ({args.rounds} rounds, backend {args.backend}, "
                f"training dropout: {args.train_dropout})",
                flush=True,
            )
            measured = measure(suite, dtype, args.backend, train_figure)
            for name, value in measured.items():
                print(f"  {name:<40} {value:8.4f}", flush=True)
            figures.update(measured)
            if args.json:  # after each dtype: a crash in the next keeps these
                Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
