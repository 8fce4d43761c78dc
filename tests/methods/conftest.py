"""Shared helpers for the method tests: a tiny learnable two-choice task on the tiny model.

Each prompt names the right letter ("The answer is B."), so a few AdamW steps on the
tiny random Llama already move the predictions; every test stays a few seconds.
"""

from __future__ import annotations

import random

import pytest

from tests.cli_helpers import TINY_RUN

ANSWER_IDS = [330, 389]  # " A", " B" in the SmolLM2 tokenizer


def toy_examples(n: int, seed: int = 0):
    from bayeslora.tasks.spec import Example

    rng = random.Random(seed)
    examples = []
    for i in range(n):
        label = rng.randrange(2)
        letter = "AB"[label]
        filler = " ".join(
            rng.choice(["red", "blue", "cat", "tree", "moon"]) for _ in range(rng.randrange(1, 5))
        )
        prompt = f"Question: {filler}. The answer is {letter}.\nA. yes\nB. no\nAnswer:"
        examples.append(Example(f"toy-{seed}-{i}", prompt, label, 2))
    return examples


@pytest.fixture(scope="session")
def toy_train(tokenizer):
    """32 training questions."""
    from bayeslora.tasks.encoding import TokenizedDataset

    return TokenizedDataset(toy_examples(32, seed=0), tokenizer, max_length=64)


@pytest.fixture(scope="session")
def toy_eval(tokenizer):
    """12 held-out questions."""
    from bayeslora.tasks.encoding import TokenizedDataset

    return TokenizedDataset(toy_examples(12, seed=1), tokenizer, max_length=64)


@pytest.fixture
def toy_classifier(tiny_model):
    """A factory: ``with toy_classifier(dropout=0.1, seed=0) as clf`` attaches fresh LoRA."""
    from bayeslora.models.classifier import LoraSettings, lora_classifier

    def make(dropout: float = 0.1, seed: int = 0, r: int = 8):
        return lora_classifier(
            tiny_model, ANSWER_IDS, LoraSettings(r=r, dropout=dropout), seed=seed
        )

    return make


def train_settings(steps: int = 12, seed: int = 0, **overrides):
    from bayeslora.training.settings import TrainSettings

    values = {"batch_size": 4, "eval_batch_size": 8, "progress": False, "log_every": 2, **overrides}
    return TrainSettings(steps=steps, seed=seed, **values)


@pytest.fixture
def quick_settings():
    """A factory for small TrainSettings: ``quick_settings(steps=12, seed=0)``."""
    return train_settings


def run_cli(method: str, output_dir) -> tuple[int, str]:
    """The bench CLI on the tiny model, in-process; returns (exit code, captured stdout)."""
    import contextlib
    import io

    from bayeslora.bench.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--methods", method, *TINY_RUN, "--output-dir", str(output_dir)])
    return code, out.getvalue()


@pytest.fixture
def bench_cli():
    """``bench_cli("swa", tmp_path)`` runs the bench CLI in-process: (exit code, stdout)."""
    return run_cli


def fit_recording_snapshots(method, clf, data) -> list[dict]:
    """Fit an SWA-family ``method`` and return a copy of every snapshot it collected."""
    snapshots = []
    collect = method.collect

    def recording_collect(model):
        snapshots.append(model.lora_state())
        collect(model)

    method.collect = recording_collect
    method.fit(clf, data)
    return snapshots
