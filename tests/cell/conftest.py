"""Cells on the tiny model: a toy two-choice task (see tests/methods/conftest.py)."""

from __future__ import annotations

import pytest

from tests.methods.conftest import ANSWER_IDS, toy_examples, train_settings


@pytest.fixture(scope="session")
def toy_data(tokenizer):
    from bayeslora.cell import CellData
    from bayeslora.tasks.encoding import TokenizedDataset

    train = TokenizedDataset(toy_examples(32, seed=0), tokenizer, max_length=64)
    evaluation = TokenizedDataset(toy_examples(12, seed=1), tokenizer, max_length=64)
    return CellData(train, evaluation, ANSWER_IDS)


def make_cell(method: str = "adamw", seed: int = 0, steps: int = 12, hparams=None, **train):
    from bayeslora.cell import Cell
    from bayeslora.methods.registry import get_method
    from bayeslora.models.classifier import LoraSettings

    config = get_method(method).make_config("toy", hparams or {})
    settings = train_settings(steps=steps, seed=seed, **train)
    return Cell("toy", method, seed, config, LoraSettings(dropout=0.1), settings, {"data": "toy"})
