"""The performance figures of bayeslora, measured side by side in one run.

  python benchmarks/suite.py --quick --json out.json     # under 10 min on 2 CPU cores
  python benchmarks/suite.py                              # more rounds, more questions
  python benchmarks/suite.py --figures step,bf16          # some groups only

Runs on the embedded default model (packaged SmolLM2-135M) with real ARC-Easy prompts:
training batches from the training split, evaluation batches from the validation split.
Every ratio interleaves A and B on the same batches (benchmarks/common.py) and is the
median of the per-round ratios; absolute times are printed next to it. ``--json`` writes
``{figure_name: value}`` so that commits can be compared. The figures and their targets
are in TARGETS below and in benchmarks/README.md.

Groups (``--figures``):
  step      ivon_over_adamw_step, answer_head_over_full_logits_train (and _infer),
            length_sorted_over_unsorted_eval
  harness   harness_over_bare_step
  predict   predictive_over_forwards_<method>, laplace_*_over_epoch, peak_rss_mb_<method>
  bf16      roofline_gflops_<dtype>, bf16_*_speedup, bf16_eager_over_sdpa_*,
            train/infer_fraction_of_roofline_<dtype>
  workers   two_workers_throughput (two bench processes at once / one alone)
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from bayeslora.bench.config import EMBEDDED_PRESET, BenchConfig  # noqa: E402
from bayeslora.methods.modes import ModeKind  # noqa: E402
from bayeslora.methods.registry import get_method  # noqa: E402
from bayeslora.models.classifier import (  # noqa: E402
    LoraSettings,
    lora_classifier,
    position_ids_from_mask,
)
from bayeslora.models.loading import (  # noqa: E402
    ModelSettings,
    attn_implementation_for,
    load_causal_lm,
    load_tokenizer,
    resolve_device,
)
from bayeslora.optim import IVON  # noqa: E402
from bayeslora.tasks import answer_token_ids, load_task  # noqa: E402
from bayeslora.tasks.encoding import (  # noqa: E402
    TokenizedDataset,
    length_sorted_batches,
    make_loader,
)
from bayeslora.threads import available_cores  # noqa: E402
from bayeslora.training.loop import batches_forever, predict_logits  # noqa: E402
from bayeslora.training.settings import TrainSettings  # noqa: E402
from benchmarks.common import (  # noqa: E402
    Timings,
    forward_flops,
    interleave,
    matmul_roofline,
    peak_memory,
    train_flops,
)

# figure -> (comparison, target); a figure not listed is informative.
TARGETS: dict[str, tuple[str, float]] = {
    "ivon_over_adamw_step": ("<=", 1.01),
    "harness_over_bare_step": ("<=", 1.05),
    "predictive_over_forwards_ivon": ("<=", 1.05),
    "predictive_over_forwards_mcdropout": ("<=", 1.05),
    "predictive_over_forwards_swag": ("<=", 1.05),
    "train_fraction_of_roofline_float32": (">=", 0.5),
    "infer_fraction_of_roofline_float32": (">=", 0.6),
    "two_workers_throughput": (">=", 0.9),
    # bf16 targets are relative to the machine's bf16/fp32 matmul ratio (see bf16_figures)
    "bf16_train_speedup_over_matmul_ratio": (">=", 0.6),
    "bf16_infer_speedup_over_matmul_ratio": (">=", 0.8),
}
GROUPS = ("step", "harness", "predict", "bf16", "workers")


class Suite:
    """The model, data and settings every figure group reads."""

    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.rounds = args.rounds or (3 if args.quick else 7)
        self.device = resolve_device(args.device)
        self.settings = ModelSettings(
            name=args.model, dtype=args.dtype, quantization=args.quantization, device=args.device
        )
        self.tokenizer = load_tokenizer(self.settings)
        train, eval_, labels = _examples(args.examples)
        self.answer_ids = answer_token_ids(self.tokenizer, labels)
        self.train = TokenizedDataset(train[: args.train_questions], self.tokenizer)
        self.eval = TokenizedDataset(eval_[: args.eval_questions], self.tokenizer)
        self.lora = LoraSettings()  # the paper's: r=8 on q/v, dropout 0.1
        self.train_settings = TrainSettings(
            steps=self.rounds + 1, batch_size=8, seed=0, progress=False, eval_batch_size=32
        )
        # the same real batches for every variant: round r uses batch r (-1: the longest)
        batches = list(itertools.islice(batches_forever(self.train, self.train_settings), 64))
        self.warmup_batch = max(batches, key=lambda b: b["input_ids"].shape[1])
        self.batches = batches[: self.rounds]
        self._bases: dict[tuple[str, str], torch.nn.Module] = {}
        self.figures: dict[str, float] = {}
        self.failures: list[str] = []  # groups (or a group's methods) that raised

    @classmethod
    def on_cpu(cls, model: str, rounds: int, eval_questions: int) -> Suite:
        """A fp32 suite on the CPU for a side script (16 training questions): its model,
        batches and evaluation set."""
        return cls(
            argparse.Namespace(
                quick=True,
                rounds=rounds,
                device="cpu",
                model=model,
                dtype="float32",
                quantization="none",
                examples=None,
                train_questions=16,
                eval_questions=eval_questions,
                json=None,
            )
        )

    def rooflines(self, reps: int) -> dict[str, float]:
        """FLOP/s of ``F.linear`` over one decoder layer's shapes at the median training batch
        (``common.matmul_roofline``), in fp32 and in bf16."""
        tokens = 8 * int(torch.tensor([b["input_ids"].shape[1] for b in self.batches]).median())
        config = self.base().config
        return {
            dtype: matmul_roofline(config, tokens, getattr(torch, dtype), self.device, reps)
            for dtype in ("float32", "bfloat16")
        }

    def base(
        self, dtype: str | None = None, attention: str = "auto", quantization: str | None = None
    ):
        """The base model in ``dtype`` with ``attention`` and ``quantization`` (default: the
        suite's --dtype and --quantization), loaded once."""
        settings = replace(
            self.settings,
            dtype=dtype or self.settings.dtype,
            attn_implementation=attention,
            quantization=quantization or self.settings.quantization,
        )
        key = (settings.dtype, attn_implementation_for(settings), settings.quantization.value)
        if key not in self._bases:
            self._bases[key] = load_causal_lm(settings)
        return self._bases[key]

    def batch(self, r: int) -> dict[str, torch.Tensor]:
        b = self.warmup_batch if r < 0 else self.batches[r]
        return {k: v.to(self.device) for k, v in b.items()}

    def eval_batches(self):
        return length_sorted_batches(self.eval, self.train_settings.eval_batch_size)

    def record(self, name: str, value: float, detail: str = "") -> None:
        self.figures[name] = value
        if self.args.json:  # after every figure: a crash or a timeout keeps what was measured
            Path(self.args.json).write_text(json.dumps(self.figures, indent=2) + "\n")
        target = TARGETS.get(name)
        verdict = ""
        if target:
            op, bound = target
            verdict = f"  target {op} {bound:g}: {'ok' if _ok(value, op, bound) else 'MISSED'}"
        print(f"  {name:<44} {value:10.4g}{verdict}{'  ' + detail if detail else ''}", flush=True)


def _examples(directory: str | None):
    """ARC-Easy's training and validation prompts: packaged, or as benchmarks/gpu_prepare.py
    wrote them (a GPU machine without the data wheel)."""
    if directory is None:
        splits = load_task("arc_easy")
        return splits.train, splits.eval, splits.task.answer_labels
    from bayeslora.tasks import Example, get_task

    def read(name):
        return [Example(**r) for r in json.loads((Path(directory) / f"{name}.json").read_text())]

    return read("train"), read("eval"), get_task("arc_easy").answer_labels


# -- training steps --------------------------------------------------------------------


def head_step(clf, optimizer, batch, sampled=None) -> None:
    """One training step of the harness's classifier (last hidden state x K rows)."""
    optimizer.zero_grad(set_to_none=True)
    with sampled() if sampled else contextlib.nullcontext():
        loss = F.cross_entropy(clf(batch["input_ids"], batch["attention_mask"]), batch["labels"])
        loss.backward()
    optimizer.step()


@torch.inference_mode()
def eval_pass(clf, batches, device) -> None:
    """One inference pass of the harness's classifier over ``batches`` (``eval_batches()``),
    in eval mode."""
    clf.eval()
    for _, b in batches:
        clf(b["input_ids"].to(device), b["attention_mask"].to(device))


def full_logits_step(clf, optimizer, batch) -> None:
    """The same loss read from the LM's full [B, T, V] logits (what the head avoids)."""
    optimizer.zero_grad(set_to_none=True)
    mask = batch["attention_mask"]
    logits = clf.peft_model(
        input_ids=batch["input_ids"],
        attention_mask=mask,
        position_ids=position_ids_from_mask(mask),
        use_cache=False,
    ).logits[:, -1, clf.answer_token_ids]
    F.cross_entropy(logits.float(), batch["labels"]).backward()
    optimizer.step()


def step_figures(suite: Suite) -> None:
    """IVON vs AdamW on the same batches, and the answer head vs full logits."""
    print(f"step ({suite.settings.dtype}, {len(suite.batches)} rounds)", flush=True)
    with lora_classifier(suite.base(), suite.answer_ids, suite.lora, seed=0) as clf:
        clf.train()
        params = clf.lora_parameters()
        adamw = torch.optim.AdamW(params, lr=0.0)  # lr 0: every variant sees the same weights
        ivon = IVON(params, lr=0.0, ess=1e6, hess_init=1e-3, beta2=0.99999, clip_radius=1e-3)
        t = interleave(
            {
                "adamw": lambda r: head_step(clf, adamw, suite.batch(r)),
                "ivon": lambda r: head_step(
                    clf, ivon, suite.batch(r), lambda: ivon.sampled_params(train=True)
                ),
                "full_logits": lambda r: full_logits_step(clf, adamw, suite.batch(r)),
            },
            suite.rounds,
        )
        _print_times(t)
        suite.record("ivon_over_adamw_step", t.ratio("ivon", "adamw"), _paired(t, "ivon", "adamw"))
        suite.record(
            "answer_head_over_full_logits_train",
            t.ratio("adamw", "full_logits"),
            _paired(t, "adamw", "full_logits"),
        )
        clf.eval()
        batches = suite.eval_batches()

        @torch.inference_mode()
        def infer(full: bool):
            for _, b in batches:
                ids, mask = b["input_ids"].to(suite.device), b["attention_mask"].to(suite.device)
                if full:
                    clf.peft_model(
                        input_ids=ids,
                        attention_mask=mask,
                        position_ids=position_ids_from_mask(mask),
                        use_cache=False,
                    ).logits[:, -1, clf.answer_token_ids].float()
                else:
                    clf(ids, mask)

        @torch.inference_mode()
        def infer_unsorted():  # the evaluation set in its own order, as before sorting
            loader = make_loader(
                suite.eval, 32, shuffle=False, seed=0, pad_token_id=suite.eval.pad_token_id
            )
            for b in loader:
                clf(b["input_ids"].to(suite.device), b["attention_mask"].to(suite.device))

        t = interleave(
            {
                "head": lambda r: infer(False),
                "full_logits": lambda r: infer(True),
                "unsorted": lambda r: infer_unsorted(),
            },
            suite.rounds,
        )
        _print_times(t)
        suite.record(
            "answer_head_over_full_logits_infer",
            t.ratio("head", "full_logits"),
            _paired(t, "head", "full_logits"),
        )
        suite.record(
            "length_sorted_over_unsorted_eval",
            t.ratio("head", "unsorted"),
            _paired(t, "head", "unsorted"),
        )


# -- the harness's step against a bare loop ----------------------------------------------


def harness_figures(suite: Suite) -> None:
    """The bench's training step (its method, loop, data loading, logging and progress bar,
    via run_cell as the bench calls it) against a hand-written transformers + peft + torch
    loop over the same batches. MLflow is written after training, not per step, so it is
    not part of either."""
    from bayeslora.cell import Cell, CellData, run_cell

    steps = 4 if suite.quick else 10
    print(f"harness ({suite.settings.dtype}, {steps} steps per block)", flush=True)
    base = suite.base()
    settings = replace(suite.train_settings, steps=steps, progress=True, log_every=10)
    cell = Cell(
        task="arc_easy",
        method="adamw",
        seed=0,
        config=get_method("adamw").make_config("arc_easy"),
        lora=suite.lora,
        train=settings,
        context={},
    )
    data = CellData(suite.train, suite.eval, suite.answer_ids)
    # the batches the harness will draw, collated ahead for the bare loop
    batches = list(itertools.islice(batches_forever(suite.train, settings), steps))

    def harness(r: int) -> float:
        return run_cell(cell, base, data, modes=()).train_time_s / steps

    def bare(r: int) -> float:
        with lora_classifier(base, suite.answer_ids, suite.lora, seed=0) as clf:
            peft_model = clf.peft_model
            decoder = peft_model.get_base_model().get_decoder()
            rows = peft_model.get_base_model().get_output_embeddings().weight[clf.answer_token_ids]
            optimizer = torch.optim.AdamW(clf.lora_parameters(), lr=cell.config.lr)
            peft_model.train()
            start = time.perf_counter()
            for b in batches:
                ids, mask = b["input_ids"].to(suite.device), b["attention_mask"].to(suite.device)
                optimizer.zero_grad(set_to_none=True)
                hidden = decoder(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                    use_cache=False,
                ).last_hidden_state[:, -1]
                loss = F.cross_entropy(
                    hidden.float() @ rows.float().T, b["labels"].to(suite.device)
                )
                loss.backward()
                optimizer.step()
                loss.item()  # the harness reads the loss every step, so does this
            _sync(suite)
            return (time.perf_counter() - start) / steps

    t = interleave({"harness": harness, "bare": bare}, max(2, suite.rounds - 1), warmups=1)
    _print_times(t)
    suite.record(
        "harness_over_bare_step", t.ratio("harness", "bare"), _paired(t, "harness", "bare")
    )


# -- prediction costs ---------------------------------------------------------------------


def predict_figures(suite: Suite) -> None:
    """Each sampling method's predictive against N deterministic forward passes of the same
    adapter over the same questions; Laplace's fit and predictive against a training epoch;
    the peak memory of each method's fit and prediction."""
    samples = 2 if suite.quick else 10
    fit_steps = 3
    print(
        f"predict ({suite.settings.dtype}, {len(suite.eval)} questions, {samples} samples)",
        flush=True,
    )
    settings = replace(suite.train_settings, steps=fit_steps)
    hparams = {
        "adamw": {},
        "ivon": {"test_samples": samples},
        "mcdropout": {"test_samples": samples},
        # averaging from a quarter of the steps on, so that a short fit has snapshots
        "swag": {"test_samples": samples, "swa_start": 0.25},
        "laplace": {},  # its defaults: K-FAC, marglik, MC predictive
    }
    if suite.args.methods:
        hparams = {m: hparams[m] for m in suite.args.methods}
    for name, overrides in hparams.items():
        try:
            _predict_method(suite, name, overrides, settings, samples, fit_steps)
        # one method failing (say, on a quantized base) ends only its own figures
        except Exception as err:
            suite.failures.append(f"predict/{name}")
            print(f"  {name}: failed: {type(err).__name__}: {err}", flush=True)


def _predict_method(suite, name, overrides, settings, samples, fit_steps) -> None:
    method_cls = get_method(name)
    method = method_cls(method_cls.make_config("arc_easy", overrides), train=settings)
    with (
        lora_classifier(suite.base(), suite.answer_ids, suite.lora, seed=0) as clf,
        peak_memory(suite.device) as memory,
    ):
        start = time.perf_counter()
        method.fit(clf, suite.train)
        fit_s = time.perf_counter() - start
        modes = method.modes()
        sampled = next((m for m in modes if m.kind is ModeKind.SAMPLED), None)
        posterior = next((m for m in modes if m.kind is ModeKind.POSTERIOR), None)
        if sampled is not None:

            def forwards():
                clf.eval()
                for _ in range(samples):
                    predict_logits(clf, suite.eval, settings.eval_batch_size)

            t = interleave(
                {
                    "forwards": lambda r: forwards(),
                    "predictive": lambda r: method.predict_proba(suite.eval, sampled),
                },
                suite.rounds,
            )
            _print_times(t, prefix=f"{name}: ")
            suite.record(
                f"predictive_over_forwards_{name}",
                t.ratio("predictive", "forwards"),
                _paired(t, "predictive", "forwards"),
            )
        else:
            method.predict_proba(suite.eval, posterior or modes[0])
    suite.record(f"peak_rss_mb_{name}", memory["rss_mb"])
    if "gpu_mb" in memory:
        suite.record(f"peak_gpu_mb_{name}", memory["gpu_mb"])
    if name == "laplace":
        costs = method.extra_metrics()
        laplace_s = costs["laplace_fit_s"] + costs["laplace_prior_s"]  # Hessian, then prior
        # one epoch of the MAP training that came first, from its steps' share of the fit
        steps_per_epoch = math.ceil(len(suite.train) / settings.batch_size)
        epoch_s = (fit_s - laplace_s) / fit_steps * steps_per_epoch
        suite.record(
            "laplace_fit_over_epoch",
            laplace_s / epoch_s,
            f"Hessian and prior {laplace_s:.1f} s, epoch {epoch_s:.1f} s",
        )
        suite.record(
            "laplace_predictive_over_epoch",
            costs["laplace_predict_s"] / epoch_s,
            f"predictive {costs['laplace_predict_s']:.1f} s over {len(suite.eval)} questions",
        )


# -- bf16 and the roofline ----------------------------------------------------------------


def bf16_figures(suite: Suite) -> None:
    """fp32 against bf16 (eager and SDPA attention) on the same batches; the matmul roofline
    of each dtype over the model's linear shapes; the fraction of it a step reaches."""
    print(f"bf16 ({len(suite.batches)} rounds)", flush=True)
    config = suite.base().config
    roof = suite.rooflines(reps=5 if suite.quick else 9)
    for dtype, flops in roof.items():
        suite.record(f"roofline_gflops_{dtype}", flops / 1e9)
    matmul_ratio = roof["bfloat16"] / roof["float32"]
    suite.record("bf16_over_fp32_matmul", matmul_ratio)

    variants = {
        "float32": ("float32", "sdpa"),
        "bf16_eager": ("bfloat16", "eager"),
        "bf16_sdpa": ("bfloat16", "sdpa"),
    }
    with contextlib.ExitStack() as stack:
        clfs, optimizers = {}, {}
        for name, (dtype, attention) in variants.items():
            clf = stack.enter_context(
                lora_classifier(
                    suite.base(dtype, attention, quantization="none"),
                    suite.answer_ids,
                    suite.lora,
                    seed=0,
                )
            )
            clf.train()
            clfs[name] = clf
            optimizers[name] = torch.optim.AdamW(clf.lora_parameters(), lr=0.0)
        t = interleave(
            {
                name: (lambda r, n=name: head_step(clfs[n], optimizers[n], suite.batch(r)))
                for name in variants
            },
            suite.rounds,
        )
        _print_times(t)
        train_t = t
        batches = suite.eval_batches()
        infer_t = interleave(
            {
                name: (lambda r, n=name: eval_pass(clfs[n], batches, suite.device))
                for name in variants
            },
            suite.rounds,
        )
        _print_times(infer_t)

    train_speedup = train_t.ratio("float32", "bf16_eager")
    infer_speedup = infer_t.ratio("float32", "bf16_eager")
    suite.record("bf16_train_speedup", train_speedup, _paired(train_t, "float32", "bf16_eager"))
    suite.record("bf16_infer_speedup", infer_speedup, _paired(infer_t, "float32", "bf16_eager"))
    suite.record("bf16_train_speedup_over_matmul_ratio", train_speedup / matmul_ratio)
    suite.record("bf16_infer_speedup_over_matmul_ratio", infer_speedup / matmul_ratio)
    suite.record("bf16_eager_over_sdpa_train", train_t.ratio("bf16_eager", "bf16_sdpa"))
    suite.record("bf16_eager_over_sdpa_infer", infer_t.ratio("bf16_eager", "bf16_sdpa"))

    # achieved FLOP/s per round (its own batch length), median, over the dtype's roofline
    for dtype, name in (("float32", "float32"), ("bfloat16", "bf16_eager")):
        achieved = sorted(
            train_flops(config, *b["input_ids"].shape) / s
            for b, s in zip(suite.batches, train_t.seconds[name], strict=True)
        )
        suite.record(
            f"train_fraction_of_roofline_{dtype}", achieved[len(achieved) // 2] / roof[dtype]
        )
        eval_flops = sum(forward_flops(config, *b["input_ids"].shape) for _, b in batches)
        suite.record(
            f"infer_fraction_of_roofline_{dtype}",
            eval_flops / infer_t.median(name) / roof[dtype],
        )


# -- two bench processes at once ------------------------------------------------------------


def workers_figures(suite: Suite) -> None:
    """Training throughput of two ``python -m bayeslora.bench`` processes running at once,
    over one running alone. Each process reports its own training time; both train the same
    number of steps on the same data, each with its default thread share."""
    steps = 6 if suite.quick else 20
    print(f"workers ({steps} steps per process)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "BAYESLORA_WORKERS_DIR": str(Path(tmp) / "workers")}

        def launch(tag: str, extra: tuple[str, ...] = ()) -> subprocess.Popen:
            command = [
                sys.executable, "-m", "bayeslora.bench",
                "--model", suite.settings.name, "--dtype", suite.settings.dtype,
                "--methods", "adamw", "--steps", str(steps), "--limit-train", "64",
                "--limit-eval", "8", "--no-progress", "--no-save-adapters",
                "--output-dir", str(Path(tmp) / tag), *extra,
            ]  # fmt: skip
            return subprocess.Popen(
                command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )

        def trained(proc: subprocess.Popen, tag: str) -> tuple[float, float]:
            """The process's training window (wall clock), from its results.jsonl."""
            _, err = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"bench process {tag} failed:\n{err[-2000:]}")
            (results,) = (Path(tmp) / tag).glob("bench-*/results.jsonl")
            return tuple(json.loads(results.read_text().splitlines()[0])["trained"])

        def throughput(*windows: tuple[float, float]) -> float:
            """Examples over the span from the first training start to the last end: where
            one process trains alone, it counts at the speed it has then, never faster."""
            span = max(end for _, end in windows) - min(start for start, _ in windows)
            return len(windows) * steps * 8 / span

        alone = throughput(trained(launch("alone"), "alone"))
        a, b = launch("a"), launch("b")
        together = throughput(trained(a, "a"), trained(b, "b"))
        suite.record(
            "two_workers_throughput",
            together / alone,
            f"alone {alone:.2f} ex/s, two at once {together:.2f} ex/s in all",
        )
        if not suite.quick:  # what the fair share prevents: each process on every core
            cores = ("--threads", str(available_cores()))
            a, b = launch("fixed-a", cores), launch("fixed-b", cores)
            fixed = throughput(trained(a, "fixed-a"), trained(b, "fixed-b"))
            suite.record(
                "two_workers_throughput_all_cores_each",
                fixed / alone,
                f"two at once with --threads {cores[1]} each: {fixed:.2f} ex/s in all",
            )


# -- printing ---------------------------------------------------------------------------------


def _sync(suite: Suite) -> None:
    if suite.device.type == "cuda":
        torch.cuda.synchronize()


def _print_times(t: Timings, prefix: str = "") -> None:
    parts = [f"{name} {t.median(name):.3f} s" for name in t.seconds]
    print(f"    {prefix}median per round: " + ", ".join(parts), flush=True)


def _paired(t: Timings, a: str, b: str) -> str:
    """What a ratio figure prints beside it: the ratio of medians and the medians."""
    return (
        f"(ratio of medians {t.ratio_of_medians(a, b):.3f}; "
        f"{t.median(a):.3f} s vs {t.median(b):.3f} s)"
    )


def main(argv: list[str] | None = None) -> int:
    default = BenchConfig()
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="fewer rounds and questions (< 10 min)")
    p.add_argument("--json", help="write {figure_name: value} here")
    p.add_argument("--markdown", help="write the figures as a markdown table here")
    p.add_argument("--figures", default=",".join(GROUPS), help=f"groups, of {','.join(GROUPS)}")
    p.add_argument("--model", default=default.model)
    p.add_argument(
        "--dtype",
        default=EMBEDDED_PRESET.get("dtype", default.dtype),
        help="dtype of the step/harness/predict/workers groups (default: the embedded default's)",
    )
    p.add_argument("--quantization", default="none", help="none, 8bit, 4bit-nf4 (a GPU path)")
    p.add_argument("--device", default="auto")
    p.add_argument("--examples", help="a folder of train.json/eval.json (benchmarks/gpu.sh)")
    p.add_argument("--methods", help="methods of the predict group (default all five)")
    p.add_argument("--rounds", type=int, default=0, help="timed rounds (default 3 quick, 7 full)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    p.add_argument("--train-questions", type=int, default=0, help="(default 16 quick, 160 full)")
    p.add_argument("--eval-questions", type=int, default=0, help="(default 16 quick, 128 full)")
    args = p.parse_args(argv)
    args.methods = args.methods.split(",") if args.methods else None
    args.train_questions = args.train_questions or (16 if args.quick else 160)
    args.eval_questions = args.eval_questions or (16 if args.quick else 128)
    groups = [g.strip() for g in args.figures.split(",") if g.strip()]
    unknown = set(groups) - set(GROUPS)
    if unknown:
        p.error(f"unknown figure group(s) {sorted(unknown)}; choose from {','.join(GROUPS)}")
    torch.set_num_threads(args.threads or available_cores())
    start = time.perf_counter()
    suite = Suite(args)
    print(
        f"bayeslora benchmark suite: {args.model} on {suite.device}, "
        f"{torch.get_num_threads()} threads, {_cpu_model()}",
        flush=True,
    )
    runners = {
        "step": step_figures,
        "harness": harness_figures,
        "predict": predict_figures,
        "bf16": bf16_figures,
        "workers": workers_figures,
    }
    for group in groups:
        try:
            runners[group](suite)
        except Exception as err:  # the other groups still run
            suite.failures.append(group)
            print(f"group {group} failed: {type(err).__name__}: {err}", flush=True)
            traceback.print_exc()
    suite.record("suite_seconds", time.perf_counter() - start)
    if args.markdown:
        Path(args.markdown).write_text(markdown_table(suite.figures))
    missed = [
        n
        for n, (op, b) in TARGETS.items()
        if n in suite.figures and not _ok(suite.figures[n], op, b)
    ]
    print(f"{len(suite.figures)} figures; targets missed: {', '.join(missed) or 'none'}")
    if suite.failures:
        print(f"failed: {', '.join(suite.failures)}")
    return 1 if suite.failures else 0


def markdown_table(figures: dict[str, float]) -> str:
    """The figures as benchmarks/README.md shows them, in the order they were measured."""
    lines = ["| figure | value | target |", "| --- | ---: | --- |"]
    for name, value in figures.items():
        target = TARGETS.get(name)
        verdict = (
            f"{target[0]} {target[1]:g}: {'ok' if _ok(value, *target) else '**missed**'}"
            if target
            else ""
        )
        lines.append(f"| `{name}` | {value:.4g} | {verdict} |")
    return "\n".join(lines) + "\n"


def _ok(value: float, op: str, bound: float) -> bool:
    return value <= bound if op == "<=" else value >= bound


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
