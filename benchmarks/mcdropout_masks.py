"""MC Dropout's test-time masks, side by side in one process: one pass over the suite's
evaluation questions with dropout off (the deterministic pass), with ``nn.Dropout`` in train
mode (torch's ``bernoulli_`` masks), and with ``methods.mcdropout.lora_dropout_masks``
(16-bit random lanes). Rotating order, medians of the per-round ratios to the
deterministic pass. ``python benchmarks/mcdropout_masks.py [--rounds 9]`` (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from suite import Suite

from bayeslora.methods.mcdropout import lora_dropout_masks
from bayeslora.models.classifier import lora_classifier
from bayeslora.training.loop import predict_logits


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--eval-questions", type=int, default=16)
    args = p.parse_args()
    settings = argparse.Namespace(
        quick=True,
        rounds=args.rounds,
        device="auto",
        model="smollm2-135m",
        dtype="float32",
        quantization="none",
        examples=None,
        train_questions=16,
        eval_questions=args.eval_questions,
    )
    suite = Suite(settings)
    with lora_classifier(suite.base(), suite.answer_ids, suite.lora, seed=0) as clf:
        layers, data = clf.lora_dropout_modules(), suite.eval

        def deterministic():
            clf.eval()
            predict_logits(clf, data)

        def nn_dropout():
            for layer in layers:
                layer.train()
            predict_logits(clf, data)
            clf.eval()

        def lanes():
            with lora_dropout_masks(layers, torch.Generator().manual_seed(0)):
                predict_logits(clf, data)

        variants = {"deterministic": deterministic, "nn_dropout": nn_dropout, "lanes": lanes}
        names, times = list(variants), {name: [] for name in variants}
        for run in variants.values():  # warm-up
            run()
        for r in range(args.rounds):
            for name in names[r % 3 :] + names[: r % 3]:
                start = time.perf_counter()
                variants[name]()
                times[name].append(time.perf_counter() - start)
    for name in names:
        ratios = [t / d for t, d in zip(times[name], times["deterministic"], strict=True)]
        print(
            f"{name:14s} median {statistics.median(times[name]):.3f} s, "
            f"over the deterministic pass {statistics.median(ratios):.3f}"
        )


if __name__ == "__main__":
    main()
