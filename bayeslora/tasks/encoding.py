"""Prompts to token ids, and token ids to padded batches.

Decisions, and why:
  * Special tokens: the prompt is tokenized without them, then the BOS token is put
    in front only if this tokenizer normally prepends one (Llama-2 does; SmolLM2
    and GPT-2 do not), so the model sees text the way it was pretrained. No EOS is
    ever appended: the answer is read right after "Answer:".
  * Truncation keeps the *end* of the prompt (``truncation_side="left"``): the
    answer is read at the last position, so "Answer:" must survive; a long BoolQ
    passage loses its beginning instead (the template puts the passage first).
    The BOS token, if any, stays. Default max length 320 tokens as in the paper.
  * Padding is on the *left*, to the longest sequence of the batch, so the last
    position of every row is its real last token.
  * The pad token is the tokenizer's, or its EOS token if it has none (common for
    causal LMs). Padded positions are masked out, so the choice does not change
    the result.

Importing this module imports torch; ``bayeslora.tasks`` itself does not.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from bayeslora.tasks.spec import Example

DEFAULT_MAX_LENGTH = 320


def pad_token_id(tokenizer: Any) -> int:
    """The tokenizer's pad token id, or its EOS id when it has no pad token."""
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    raise ValueError(f"tokenizer {type(tokenizer).__name__} has neither a pad nor an EOS token")


def prepends_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts a BOS token in front of a text when asked for special tokens."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer("x")["input_ids"]
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    return len(ids) > len(plain) and ids[0] == bos


class TokenizedDataset(Dataset):
    """Examples as ``{"input_ids": list[int], "label": int}``, tokenized once up front.

    Also exposes ``labels`` (LongTensor [N], for metrics over the whole split),
    ``pad_token_id`` (what loaders of this dataset pad with, see :func:`pad_token_id`),
    ``examples``, and ``num_truncated``, the number of prompts longer than ``max_length``.
    """

    def __init__(
        self,
        examples: Sequence[Example],
        tokenizer: Any,
        max_length: int = DEFAULT_MAX_LENGTH,
        truncation_side: str = "left",
    ):
        if truncation_side != "left":
            # Cutting the right end would remove "Answer:", and the classifier would
            # read the answer logits after some word in the middle of the prompt.
            raise ValueError(
                f"truncation_side must be 'left' (keep the end, where 'Answer:' is), "
                f"not {truncation_side!r}"
            )
        self.examples = list(examples)
        self.pad_token_id = pad_token_id(tokenizer)  # what the loaders pad with
        self.max_length = max_length
        self.truncation_side = truncation_side
        self.bos_added = prepends_bos(tokenizer)
        head = [int(tokenizer.bos_token_id)] if self.bos_added else []
        if max_length <= len(head):
            raise ValueError(f"max_length {max_length} leaves no room for the prompt")
        keep = max_length - len(head)
        # One batched call: the fast (Rust) tokenizers parallelise it.
        encoded = tokenizer([e.prompt for e in self.examples], add_special_tokens=False)
        self.input_ids: list[list[int]] = []
        self.num_truncated = 0
        for ids in encoded["input_ids"]:
            if len(ids) > keep:
                ids = ids[-keep:]
                self.num_truncated += 1
            self.input_ids.append(head + list(ids))
        self.labels = torch.tensor([e.label for e in self.examples], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"input_ids": self.input_ids[index], "label": int(self.labels[index])}

    @property
    def info(self) -> dict[str, str | int | float]:
        """What to record about the encoding of this split."""
        lengths = [len(ids) for ids in self.input_ids]
        return {
            "max_length": self.max_length,
            "truncation_side": self.truncation_side,
            "num_truncated": self.num_truncated,
            "bos_added": int(self.bos_added),
            "max_tokens": max(lengths, default=0),
        }


def collate(batch: Sequence[Mapping[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Left-pad a list of ``{"input_ids", "label"}`` items to the batch's longest sequence."""
    width = max(len(item["input_ids"]) for item in batch)
    input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, item in enumerate(batch):
        ids = item["input_ids"]
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids) :] = 1
    labels = torch.tensor([item["label"] for item in batch], dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


# dataset -> {batch size: batches}; weak, so a dataset's batches go when the dataset goes
_SORTED_BATCHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def length_sorted_batches(
    dataset: Dataset, batch_size: int
) -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """Evaluation batches of similar lengths, longest first, as ``(indices, batch)`` pairs.

    Sorting by length leaves little padding (unsorted, it is 46 % of ARC-Easy's validation
    tokens at batch size 32: ../shared/notes/perf-anchors.md §2). Longest first, so a batch
    too large for the memory fails at once. Built once per dataset and batch size: every
    Monte Carlo sample and every prediction mode reuses them.
    """
    cache = _SORTED_BATCHES.setdefault(dataset, {})
    if batch_size not in cache:
        lengths = torch.tensor([len(dataset[i]["input_ids"]) for i in range(len(dataset))])
        order = torch.argsort(lengths, descending=True, stable=True)
        cache[batch_size] = [
            (chunk, collate([dataset[int(i)] for i in chunk], dataset.pad_token_id))
            for chunk in order.split(batch_size)
        ]
    return cache[batch_size]


def make_loader(
    dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int, pad_token_id: int
) -> DataLoader:
    """A DataLoader whose order depends only on ``seed``.

    The shuffle draws from its own ``torch.Generator``, so the global torch RNG
    (dropout, IVON's weight samples) neither changes nor is changed by the data
    order. Each epoch (each new iterator) gets a fresh permutation; the sequence of
    permutations repeats exactly for the same seed. ``num_workers=0``: tokenized
    batches are cheap, and worker processes would only compete for the CPU cores.
    """
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=0,
        collate_fn=functools.partial(collate, pad_token_id=pad_token_id),
    )
