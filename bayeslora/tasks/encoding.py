"""Prompts to token ids, and token ids to padded batches.

Decisions, and why (letters scoring, :class:`TokenizedDataset`):
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

Choices scoring (``scoring.py``) is encoded by :class:`ChoiceDataset`:
  * Each choice's context + continuation is encoded as one text and split where the
    context's own encoding ends (lm-evaluation-harness's ``_encode_pair``).
  * Prefix sharing: the K token sequences of a question share a prefix (ARC: the whole
    question). It is encoded once, followed by the K branches in one packed row; a branch
    attends to the shared prefix and to itself only (a block mask built from ``segments``:
    0 padding, 1 shared, k+2 choice k) and its positions continue from the prefix, so each
    branch computes what its own sequence would. A branch's last token predicts nothing and
    is not fed. ``share_prefix=False`` encodes one row per choice instead (what
    ``benchmarks/scoring.py`` compares against).
  * Only the positions that predict a scored token are read: ``score_index`` (flat over
    the batch's rows and positions), the token it predicts (``score_token``) and its
    question and choice (``score_choice`` = question * K + choice); ``choice_norm`` holds
    each choice's divisor (1, its number of tokens, or of characters).
  * Truncation cuts the shared prefix from the left (after the BOS token, if any) until
    every choice's own sequence fits ``max_length``, so the question's end and every choice
    survive. Padding is on the right (positions are explicit, so nothing shifts).

Importing this module imports torch; ``bayeslora.tasks`` itself does not.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from bayeslora.tasks.scoring import LengthNorm, as_length_norm
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

    def length(self, index: int) -> int:
        """Tokens of example ``index`` (what batches are sorted by)."""
        return len(self.input_ids[index])

    def collate(self, batch: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        return collate(batch, self.pad_token_id)

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


@dataclass(frozen=True)
class EncodingSettings:
    """How examples become token ids: the run's data settings (``BenchConfig.encoding``)."""

    max_length: int = DEFAULT_MAX_LENGTH
    truncation_side: str = "left"
    length_norm: str = LengthNorm.NONE.value  # choices scoring only
    share_prefix: bool = True  # choices scoring only: the common prefix encoded once

    def __post_init__(self) -> None:
        object.__setattr__(self, "length_norm", as_length_norm(self.length_norm).value)
        if self.max_length < 2:  # a question token and an answer token at least
            raise ValueError(f"max_length must be >= 2 tokens, got {self.max_length}")
        if self.truncation_side != "left":  # both datasets need the prompt's end: see them
            raise ValueError(
                f"truncation_side must be 'left', got {self.truncation_side!r}: cutting the "
                "right end would remove 'Answer:' and the answer choices"
            )


def encode(examples: Sequence[Example], tokenizer: Any, settings: EncodingSettings | None = None):
    """The dataset of ``examples`` for their scoring: :class:`TokenizedDataset` for lettered
    prompts, :class:`ChoiceDataset` for cloze pairs."""
    settings = settings or EncodingSettings()
    examples = list(examples)
    kinds = {bool(e.scored) for e in examples}
    if len(kinds) > 1:
        raise ValueError("examples mix letters and choices scoring; render them with one")
    if kinds == {True}:
        return ChoiceDataset(
            examples,
            tokenizer,
            settings.max_length,
            settings.truncation_side,
            length_norm=settings.length_norm,
            share_prefix=settings.share_prefix,
        )
    return TokenizedDataset(examples, tokenizer, settings.max_length, settings.truncation_side)


@dataclass(frozen=True)
class _Row:
    ids: list[int]
    segments: list[int]  # 0 padding, 1 shared prefix, k + 2 branch of choice k
    positions: list[int]


class ChoiceDataset(Dataset):
    """Cloze examples (``Example.scored``) as packed rows and scored positions, tokenized once.

    Each item is ``{"rows", "targets", "norm", "label"}``: the rows of one question (one
    with ``share_prefix``, else K), and per scored token (row, position that predicts it,
    token id, choice). ``collate`` makes the batch :class:`ChoiceLikelihoodClassifier`
    reads. Exposes ``labels``, ``examples``, ``num_truncated`` and ``info`` like
    :class:`TokenizedDataset`.
    """

    def __init__(
        self,
        examples: Sequence[Example],
        tokenizer: Any,
        max_length: int = DEFAULT_MAX_LENGTH,
        truncation_side: str = "left",
        *,
        length_norm: LengthNorm | str = LengthNorm.NONE,
        share_prefix: bool = True,
    ):
        if truncation_side != "left":
            raise ValueError(
                f"truncation_side must be 'left' (keep the end of the context and every "
                f"choice), not {truncation_side!r}"
            )
        self.examples = list(examples)
        if not self.examples:
            raise ValueError("no examples to encode")
        self.num_choices = self.examples[0].num_choices
        for e in self.examples:
            if len(e.scored) != self.num_choices:
                raise ValueError(
                    f"example {e.id} has {len(e.scored)} scored choices, expected "
                    f"{self.num_choices} (one (context, continuation) pair per choice)"
                )
        self.pad_token_id = pad_token_id(tokenizer)
        self.max_length, self.truncation_side = max_length, truncation_side
        self.length_norm = as_length_norm(length_norm)
        self.share_prefix = share_prefix
        self.bos_added = prepends_bos(tokenizer)
        head = [int(tokenizer.bos_token_id)] if self.bos_added else []
        pairs = [pair for e in self.examples for pair in e.scored]
        # lm-evaluation-harness's _encode_pair: encode context + continuation as one text and
        # split it where the context's own encoding ends. Encoding the continuation alone would
        # give a SentencePiece tokenizer (Llama's) a stray word-start token to score.
        contexts = tokenizer([c for c, _ in pairs], add_special_tokens=False)["input_ids"]
        wholes = tokenizer([c + t for c, t in pairs], add_special_tokens=False)["input_ids"]
        k = self.num_choices
        self.items: list[dict[str, Any]] = []
        self.num_truncated = self.num_over_length = 0
        for i, example in enumerate(self.examples):
            seqs = []
            for j in range(k):
                split, whole = len(contexts[i * k + j]), list(wholes[i * k + j])
                if len(whole) <= split:
                    raise ValueError(
                        f"example {example.id}: choice {j}'s text {example.scored[j][1]!r} adds "
                        "no token to its context (it is empty, or merged into the context)"
                    )
                seqs.append((head + whole[:split], whole[split:]))
            item, truncated, over = self._pack(example, seqs, len(head))
            self.num_truncated += truncated
            self.num_over_length += over
            self.items.append(item)
        self.labels = torch.tensor([e.label for e in self.examples], dtype=torch.long)

    def _pack(self, example: Example, seqs, num_head: int) -> tuple[dict[str, Any], bool, bool]:
        """One question's rows and scored positions; whether it was truncated, and whether a
        choice is still longer than ``max_length`` after the prefix was cut to one token."""
        full = [ctx + cont for ctx, cont in seqs]
        scored = [len(cont) for _, cont in seqs]
        if self.share_prefix:
            shared_len = min(
                _common_prefix(full), *(len(f) - n for f, n in zip(full, scored, strict=True))
            )
            layouts = [(full[0][:shared_len], list(enumerate(f[shared_len:] for f in full)))]
        else:
            layouts = [
                (f[: len(f) - n], [(j, f[len(f) - n :])])
                for j, (f, n) in enumerate(zip(full, scored, strict=True))
            ]
        rows, targets, truncated, over = [], [], False, False
        for r, (shared, branches) in enumerate(layouts):
            # max_length bounds each choice's own sequence (what the model reads for it), as
            # in lm-evaluation-harness, so packing the choices together changes no result
            excess = max(len(shared) + len(b) - 1 for _, b in branches) - self.max_length
            if excess > 0:  # cut the shared prefix after the BOS token, keeping >= 1 token
                cut = min(excess, len(shared) - num_head - 1)
                if cut > 0:
                    shared = shared[:num_head] + shared[num_head + cut :]
                truncated, over = True, over or cut < excess
            start = len(shared)
            ids, segments = list(shared), [1] * start
            positions = list(range(start))
            for j, branch in branches:
                offset = len(ids)
                ids += branch[:-1]  # the last token predicts nothing
                segments += [j + 2] * (len(branch) - 1)
                positions += range(start, start + len(branch) - 1)
                for t in range(len(branch) - scored[j], len(branch)):
                    if t == 0 and start == 0:
                        raise ValueError(
                            f"example {example.id}: choice {j} has an empty context and the "
                            "tokenizer adds no BOS token, so nothing predicts its first token"
                        )
                    source = offset + t - 1 if t > 0 else start - 1
                    targets.append((r, source, branch[t], j))
            rows.append(_Row(ids, segments, positions))
        norm = {
            LengthNorm.NONE: [1.0] * len(seqs),
            LengthNorm.TOKEN: [float(n) for n in scored],
            # the choice's characters without the space that joins it to its context, as
            # lm-evaluation-harness's acc_norm
            LengthNorm.CHAR: [float(max(1, len(text.lstrip()))) for _, text in example.scored],
        }[self.length_norm]
        item = {"rows": rows, "targets": targets, "norm": norm, "label": example.label}
        return item, truncated, over

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]

    def length(self, index: int) -> int:
        """The longest row of example ``index`` (what a batch pads to)."""
        return max(len(row.ids) for row in self.items[index]["rows"])

    def collate(self, batch: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Right-padded rows, and the flat indices of the positions that are scored."""
        rows = [row for item in batch for row in item["rows"]]
        width = max(len(row.ids) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        segments = torch.zeros((len(rows), width), dtype=torch.long)
        position_ids = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            n = len(row.ids)
            input_ids[r, :n] = torch.tensor(row.ids, dtype=torch.long)
            segments[r, :n] = torch.tensor(row.segments, dtype=torch.long)
            position_ids[r, :n] = torch.tensor(row.positions, dtype=torch.long)
        index, token, choice, first_row = [], [], [], 0
        for q, item in enumerate(batch):
            for r, source, target, j in item["targets"]:
                index.append((first_row + r) * width + source)
                token.append(target)
                choice.append(q * self.num_choices + j)
            first_row += len(item["rows"])
        return {
            "input_ids": input_ids,
            "attention_mask": (segments > 0).long(),
            "segments": segments,
            "position_ids": position_ids,
            "score_index": torch.tensor(index, dtype=torch.long),
            "score_token": torch.tensor(token, dtype=torch.long),
            "score_choice": torch.tensor(choice, dtype=torch.long),
            "choice_norm": torch.tensor([item["norm"] for item in batch], dtype=torch.float),
            "labels": torch.tensor([item["label"] for item in batch], dtype=torch.long),
        }

    @property
    def info(self) -> dict[str, str | int | float]:
        """What to record about the encoding of this split."""
        return {
            "max_length": self.max_length,
            "truncation_side": self.truncation_side,
            "num_truncated": self.num_truncated,
            "bos_added": int(self.bos_added),
            "max_tokens": max((self.length(i) for i in range(len(self))), default=0),
            "num_over_length": self.num_over_length,
            "length_norm": self.length_norm.value,
            "share_prefix": int(self.share_prefix),
        }


def _common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    n = min(len(s) for s in seqs)
    for i in range(n):
        if any(s[i] != seqs[0][i] for s in seqs[1:]):
            return i
    return n


def model_inputs(batch: Mapping[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    """The batch without its labels, on ``device``: what a classifier's forward takes."""
    return {k: v.to(device) for k, v in batch.items() if k != "labels"}


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
        lengths = torch.tensor([dataset.length(i) for i in range(len(dataset))])
        order = torch.argsort(lengths, descending=True, stable=True)
        cache[batch_size] = [
            (chunk, dataset.collate([dataset[int(i)] for i in chunk]))
            for chunk in order.split(batch_size)
        ]
    return cache[batch_size]


def make_loader(
    dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int, pad_token_id: int | None = None
) -> DataLoader:
    """A DataLoader whose order depends only on ``seed``.

    The shuffle draws from its own ``torch.Generator``, so the global torch RNG
    (dropout, IVON's weight samples) neither changes nor is changed by the data
    order. Each epoch (each new iterator) gets a fresh permutation; the sequence of
    permutations repeats exactly for the same seed. ``num_workers=0``: tokenized
    batches are cheap, and worker processes would only compete for the CPU cores.
    Batches are the dataset's own ``collate`` (ours have one); another dataset's items are
    left-padded with ``pad_token_id``.
    """
    collate_fn = getattr(dataset, "collate", None) or functools.partial(
        collate, pad_token_id=pad_token_id
    )
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=0,
        collate_fn=collate_fn,
    )
