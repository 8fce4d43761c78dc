"""Shared fixtures for the task tests: the real SmolLM2 tokenizer, the packaged tasks,
and a tiny character-level tokenizer for cases no real tokenizer shows."""

from __future__ import annotations

import pytest

from bayeslora.tasks import list_tasks, load_task


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    from bayeslora.models.packaged import packaged_model_dir

    return AutoTokenizer.from_pretrained(packaged_model_dir("smollm2-135m"))


@pytest.fixture(scope="session")
def packaged():
    """Every registered task loaded from the packaged (offline) source, by name."""
    return {name: load_task(name) for name in list_tasks()}


class CharTokenizer:
    """One token per character (id = code point), optionally with a BOS it prepends.

    With it, " A" is two tokens (space, "A"), which no real tokenizer here does.
    """

    def __init__(self, *, bos: bool = False, pad: bool = True):
        self.name_or_path = "char-tokenizer"
        self.bos_token_id = 1 if bos else None
        self.eos_token_id = 2
        self.pad_token_id = 0 if pad else None
        self._bos = bos

    def __call__(self, text, add_special_tokens: bool = True):
        def encode(t: str) -> list[int]:
            head = [1] if self._bos and add_special_tokens else []
            return head + [ord(c) for c in t]

        if isinstance(text, list):
            return {"input_ids": [encode(t) for t in text]}
        return {"input_ids": encode(text)}


@pytest.fixture
def char_tokenizer():
    return CharTokenizer
