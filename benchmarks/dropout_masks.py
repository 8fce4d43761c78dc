"""LoRA dropout's masks, side by side in one process (``models/dropout.py``, ``LoraDropout``):

  python benchmarks/dropout_masks.py [--rounds 9] [--json PATH]

- ``lanes_over_bernoulli_train_<dtype>``: a training step (AdamW, LoRA dropout 0.1 on q/v)
  with ``LoraDropout``'s 16-bit lanes over the same step with ``nn.Dropout``'s
  ``bernoulli_`` masks, same batches, fp32 and bf16 bases;
- ``bernoulli_over_deterministic_pass`` and ``lanes_over_deterministic_pass``: one MC-Dropout
  pass over the evaluation questions (dropout on at test time) over the deterministic pass;
- ``bool_mask_over_deterministic_pass``: the same lanes applied as ``x * bool * scale``
  (the first version), to compare with ``lanes_over_deterministic_pass``;
- ``numpy_over_torch_lanes``: drawing the lanes alone (``[16, 160, 576]``), numpy's SFC64
  against torch's ``random_``;
- ``float_mask_over_bool_mask_apply``: applying drawn lanes to an fp32 ``[16, 160, 576]``
  input, ``apply_lanes`` (a float mask and one ``addcmul``) against ``x * bool * scale``.

Each figure is the median of per-round ratios, rotating order (``common.interleave``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import types
from pathlib import Path

import torch
from suite import Suite, _print_times, head_step

from bayeslora.models import dropout
from bayeslora.models.classifier import lora_classifier
from bayeslora.models.dropout import (
    apply_lanes,
    effective_rate,
    lane_threshold,
    numpy_lanes,
    sampling_lora_dropout,
    torch_lanes,
)
from bayeslora.training.loop import predict_logits
from benchmarks.common import interleave


@contextlib.contextmanager
def bernoulli_masks(layers):
    """The layers draw ``nn.Dropout``'s masks (torch's ``bernoulli_``) while open."""
    for layer in layers:
        layer.forward = types.MethodType(torch.nn.Dropout.forward, layer)
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward


def bool_mask_apply(x, lanes, p):
    """``apply_lanes`` as it first was, also at test time: ``x * (lanes >= threshold)``,
    then the scale (torch's CPU kernel for ``x * bool`` is not vectorized)."""
    return torch.mul(x, lanes >= lane_threshold(p)).mul_(1.0 / (1.0 - effective_rate(p)))


@contextlib.contextmanager
def bool_masks():
    """``LoraDropout`` applies its lanes with :func:`bool_mask_apply` while open."""
    saved = dropout.apply_lanes
    dropout.apply_lanes = bool_mask_apply
    try:
        yield
    finally:
        dropout.apply_lanes = saved


def train_steps(suite, dtype: str, rounds: int):
    """AdamW steps on a ``dtype`` base with the lanes and with ``bernoulli_``, same batches."""
    with lora_classifier(suite.base(dtype), suite.answer_ids, suite.lora, seed=0) as clf:
        clf.train()
        layers = clf.lora_dropout_modules()
        optimizer = torch.optim.AdamW(clf.lora_parameters(), lr=0.0)

        def bernoulli_step(r):
            with bernoulli_masks(layers):
                head_step(clf, optimizer, suite.batch(r))

        return interleave(
            {
                "lanes": lambda r: head_step(clf, optimizer, suite.batch(r)),
                "bernoulli": bernoulli_step,
            },
            rounds,
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--eval-questions", type=int, default=16)
    p.add_argument("--json", help="write {figure: value} here")
    args = p.parse_args()
    suite = Suite.on_cpu("smollm2-135m", args.rounds, args.eval_questions)
    figures = {}

    def record(name, t, a, b):
        figures[name] = t.ratio(a, b)
        print(
            f"  {name:<40} {figures[name]:.4f}  (ratio of medians {t.ratio_of_medians(a, b):.4f})"
        )

    for dtype in ("float32", "bfloat16"):
        t = train_steps(suite, dtype, args.rounds)
        print(f"training step, {dtype} base")
        _print_times(t)
        record(f"lanes_over_bernoulli_train_{dtype}", t, "lanes", "bernoulli")

    with lora_classifier(suite.base(), suite.answer_ids, suite.lora, seed=0) as clf:
        layers, data = clf.lora_dropout_modules(), suite.eval
        clf.eval()

        def bernoulli_pass(r):
            with bernoulli_masks(layers):
                for layer in layers:
                    layer.train()
                predict_logits(clf, data)
                clf.eval()

        def lanes_pass(r):
            with sampling_lora_dropout(layers, torch.Generator().manual_seed(r)):
                predict_logits(clf, data)

        def bool_mask_pass(r):
            with bool_masks():
                lanes_pass(r)

        t = interleave(
            {
                "deterministic": lambda r: predict_logits(clf, data),
                "bernoulli": bernoulli_pass,
                "lanes": lanes_pass,
                "bool_mask": bool_mask_pass,
            },
            args.rounds,
        )
        print(f"MC-dropout pass over {len(data)} questions (fp32)")
        _print_times(t)
        record("bernoulli_over_deterministic_pass", t, "bernoulli", "deterministic")
        record("lanes_over_deterministic_pass", t, "lanes", "deterministic")
        record("bool_mask_over_deterministic_pass", t, "bool_mask", "deterministic")

    n, generator = 16 * 160 * 576, torch.Generator().manual_seed(0)
    t = interleave(
        {
            "numpy": lambda r: [numpy_lanes(n, generator) for _ in range(20)],
            "torch": lambda r: [torch_lanes(n, "cpu", generator) for _ in range(20)],
        },
        args.rounds,
    )
    print(f"lanes alone, {n} elements")
    _print_times(t)
    record("numpy_over_torch_lanes", t, "numpy", "torch")

    x, lanes = torch.randn(16, 160, 576), numpy_lanes(n, generator).view(16, 160, 576)
    with torch.no_grad():  # as at test time
        t = interleave(
            {
                "float_mask": lambda r: [apply_lanes(x, lanes, 0.1) for _ in range(20)],
                "bool_mask": lambda r: [bool_mask_apply(x, lanes, 0.1) for _ in range(20)],
            },
            args.rounds,
        )
    print(f"applying the lanes, {n} elements")
    _print_times(t)
    record("float_mask_over_bool_mask_apply", t, "float_mask", "bool_mask")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
