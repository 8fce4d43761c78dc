"""What choices scoring costs and which of its settings to use, measured.

  python benchmarks/scoring.py --json scoring.json           # about 10 min on 2 CPU cores
  python benchmarks/scoring.py --figures cost --dtype bfloat16

Groups (``--figures``):
  zero_shot  the packaged model's zero-shot accuracy and NLL on the first --zero-shot-questions
             questions of packaged ARC-Easy's --split (default train: choices are made on
             training data, never on the questions the bench reports on) under letters and
             under choices with each length normalisation
             (zero_shot_<metric>_arc_easy_<scoring>), and on the same number of BoolQ
             questions with the answer words "no"/"yes" against "False"/"True"
             (zero_shot_<metric>_boolq_<words>). What the defaults in bench/config.py and
             tasks/registry.py were chosen by.
  cost       per question, on the same ARC-Easy questions and batch sizes, interleaved
             (benchmarks/common.py): choices_over_letters_{train,infer} and
             shared_over_separate_{train,infer}, the packed shared-prefix rows against one
             row per choice (tasks/encoding.py), with the absolute times.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from bayeslora.metrics import compute_metrics  # noqa: E402
from bayeslora.models.classifier import LoraSettings, lora_classifier  # noqa: E402
from bayeslora.models.loading import ModelSettings, load_causal_lm, load_tokenizer  # noqa: E402
from bayeslora.tasks import answer_token_ids, load_task  # noqa: E402
from bayeslora.tasks.encoding import (  # noqa: E402
    EncodingSettings,
    encode,
    length_sorted_batches,
    model_inputs,
)
from bayeslora.tasks.registry import get_task  # noqa: E402
from bayeslora.training.loop import predict_logits  # noqa: E402
from benchmarks.common import interleave  # noqa: E402

GROUPS = ("zero_shot", "cost")


class Figures(dict):
    def __init__(self, path: str | None):
        super().__init__()
        self.path = path

    def record(self, name: str, value: float, detail: str = "") -> None:
        self[name] = value
        if self.path:  # after every figure, so an interrupted run keeps what it measured
            Path(self.path).write_text(json.dumps(self, indent=2) + "\n")
        print(f"  {name:<44} {value:10.4g}{'  ' + detail if detail else ''}", flush=True)


def zero_shot(base, tokenizer, figures: Figures, questions: int, split: str) -> None:
    print(f"zero_shot (first {questions} questions of the {split} split)", flush=True)

    def part(splits):
        return (splits.train if split == "train" else splits.eval)[:questions]

    arc = {s: load_task("arc_easy", scoring=s) for s in ("letters", "choices")}
    letters = encode(part(arc["letters"]), tokenizer)
    ids = answer_token_ids(tokenizer, arc["letters"].task.answer_labels)
    with lora_classifier(base, ids, LoraSettings(dropout=0.0)) as clf:
        _score(figures, "arc_easy_letters", predict_logits(clf.eval(), letters), letters.labels)
    with lora_classifier(base, None, LoraSettings(dropout=0.0)) as clf:
        clf.eval()
        questions_ = part(arc["choices"])
        data = encode(questions_, tokenizer)  # norm none: the summed log-probabilities
        sums = predict_logits(clf, data)
        for norm in ("none", "token", "char"):
            # each normalisation's divisors as the dataset computes them
            normed = encode(questions_, tokenizer, EncodingSettings(length_norm=norm))
            divisor = torch.tensor([item["norm"] for item in normed.items])
            _score(figures, f"arc_easy_choices_{norm}", sums / divisor, data.labels)

        boolq = get_task("boolq")
        for words in (("no", "yes"), ("False", "True")):
            task = dataclasses.replace(boolq, cloze_answers=words)
            splits = load_task(task, scoring="choices")
            data = encode(part(splits), tokenizer)
            _score(
                figures, f"boolq_{''.join(words).lower()}", predict_logits(clf, data), data.labels
            )


def _score(figures: Figures, name: str, logits: torch.Tensor, labels: torch.Tensor) -> None:
    metrics = compute_metrics(logits.softmax(-1), labels)
    for metric in ("accuracy", "nll"):
        figures.record(f"zero_shot_{metric}_{name}", metrics[metric], f"({len(labels)} questions)")


def cost(base, tokenizer, figures: Figures, questions: int, rounds: int) -> None:
    """Per question: a training step (forward, backward) and an inference pass."""
    print(f"cost ({questions} questions per pass, {rounds} rounds)", flush=True)
    splits = {s: load_task("arc_easy", scoring=s) for s in ("letters", "choices")}
    train = {
        "letters": encode(splits["letters"].train[:questions], tokenizer),
        "shared": encode(splits["choices"].train[:questions], tokenizer),
        "separate": encode(
            splits["choices"].train[:questions], tokenizer, EncodingSettings(share_prefix=False)
        ),
    }
    evaluation = {
        "letters": encode(splits["letters"].eval[:questions], tokenizer),
        "shared": encode(splits["choices"].eval[:questions], tokenizer),
        "separate": encode(
            splits["choices"].eval[:questions], tokenizer, EncodingSettings(share_prefix=False)
        ),
    }
    ids = answer_token_ids(tokenizer, splits["letters"].task.answer_labels)
    lora = LoraSettings()
    device = base.device
    for phase, datasets in (("train", train), ("infer", evaluation)):

        def run(name, phase=phase, datasets=datasets) -> float:
            # fresh adapters per pass (peft holds one adapter set on a base model at a
            # time); only the pass itself is timed
            with lora_classifier(base, ids if name == "letters" else None, lora) as clf:
                batches = length_sorted_batches(datasets[name], 8)
                start = time.perf_counter()
                if phase == "infer":
                    clf.eval()
                    with torch.inference_mode():
                        for _, batch in batches:
                            clf(**model_inputs(batch, device))
                else:
                    clf.train()
                    for _, batch in batches:
                        logits = clf(**model_inputs(batch, device))
                        F.cross_entropy(logits, batch["labels"].to(device)).backward()
                return time.perf_counter() - start

        timings = interleave({name: (lambda r, n=name: run(n)) for name in datasets}, rounds)
        for a, b in (("shared", "letters"), ("shared", "separate")):
            label = {"letters": "choices_over_letters", "separate": "shared_over_separate"}[b]
            figures.record(
                f"{label}_{phase}",
                timings.ratio(a, b),
                f"({a} {timings.median(a) / questions * 1e3:.1f} ms/question, "
                f"{b} {timings.median(b) / questions * 1e3:.1f} ms/question)",
            )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--figures", default=",".join(GROUPS), help=f"groups: {','.join(GROUPS)}")
    p.add_argument("--json", help="write {figure: value} here")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--model", default=ModelSettings().name, help="(tiny-random-llama: tests)")
    p.add_argument("--zero-shot-questions", type=int, default=600)
    p.add_argument("--split", choices=["train", "eval"], default="train")
    p.add_argument("--questions", type=int, default=64, help="questions per timed pass")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    groups = [g.strip() for g in args.figures.split(",") if g.strip()]
    unknown = set(groups) - set(GROUPS)
    if unknown:
        p.error(f"unknown figure group(s) {sorted(unknown)}; known: {list(GROUPS)}")
    settings = ModelSettings(name=args.model, dtype=args.dtype)
    tokenizer = load_tokenizer(settings)
    base = load_causal_lm(settings)
    figures = Figures(args.json)
    print(f"bayeslora scoring benchmarks: {args.model}, {args.dtype}", flush=True)
    if "zero_shot" in groups:
        zero_shot(base, tokenizer, figures, args.zero_shot_questions, args.split)
    if "cost" in groups:
        cost(base, tokenizer, figures, args.questions, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
