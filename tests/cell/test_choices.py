"""Every built-in method runs a cell under choices scoring, on the tiny model.

The toy task: the context names a word and the right continuation repeats it, so a few
training steps move the predictions. What is checked is what every method must give
under any scoring: finite probabilities over the K choices for every mode, and for the
methods that train, an adapter that changed the predictions of the zero-shot model.
"""

from __future__ import annotations

import random

import pytest
import torch

WORDS = ["red", "blue", "cat", "tree", "moon", "sun", "river"]


def choice_examples(n: int, seed: int, k: int = 3):
    from bayeslora.tasks.spec import Example

    rng = random.Random(seed)
    examples = []
    for i in range(n):
        words = rng.sample(WORDS, k)
        label = rng.randrange(k)
        context = f"Say {words[label]} again:"
        scored = tuple((context, f" {w}") for w in words)
        examples.append(Example(f"c-{seed}-{i}", context, label, k, scored))
    return examples


@pytest.fixture(scope="module")
def choice_data(tokenizer):
    from bayeslora.cell import CellData
    from bayeslora.tasks.encoding import encode

    return CellData(
        encode(choice_examples(24, seed=0), tokenizer),
        encode(choice_examples(10, seed=1), tokenizer),
        None,  # no answer tokens: choices scoring
        val=encode(choice_examples(8, seed=2), tokenizer),
    )


METHODS = [
    "pretrained",
    "adamw",
    "ivon",
    "mcdropout",
    "laplace",
    "swa",
    "swag",
    "ensemble",
    "temperature",
    "ivon+temperature",
]
HPARAMS = {
    "adamw": {"lr": 5e-3},
    "ivon": {"lr": 0.5, "test_samples": 2},
    "mcdropout": {"lr": 5e-3, "test_samples": 2},
    "laplace": {"lr": 5e-3, "n_samples": 100, "marglik_steps": 5},
    "swa": {"lr": 5e-3},
    "swag": {"lr": 5e-3},
    "ensemble": {"lr": 5e-3, "members": 2},
    "temperature": {"lr": 5e-3},
    "ivon+temperature": {"lr": 0.5, "test_samples": 2},
}


@pytest.mark.parametrize("method", METHODS)
def test_every_method_predicts_the_choices(tiny_model, choice_data, method):
    from bayeslora.cell import run_cell
    from tests.cell.conftest import make_cell

    steps = 8 if method in ("swa", "swag") else 6
    cell = make_cell(method, steps=steps, hparams=HPARAMS.get(method))
    result = run_cell(cell, tiny_model, choice_data)
    pretrained = run_cell(make_cell("pretrained"), tiny_model, choice_data).modes[0].probs
    assert [m.mode.name for m in result.modes] == [m.name for m in cell.modes()]
    for mode in result.modes:
        assert mode.probs.shape == (10, 3)
        assert torch.isfinite(mode.probs).all()
        torch.testing.assert_close(mode.probs.sum(-1), torch.ones(10))
        if cell.method_cls.trains:
            assert not torch.allclose(mode.probs, pretrained, atol=1e-4), mode.mode.name
        else:
            torch.testing.assert_close(mode.probs, pretrained)
