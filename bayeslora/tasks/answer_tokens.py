"""Which token id each answer label really gets right after "Answer:".

The classifier reads the logits of K tokens at the last prompt position. Which ids
those are depends on the tokenizer: after "Answer:" a BPE tokenizer such as
SmolLM2's produces the leading-space letters (" A" = 330, " B" = 389, ...), not the
bare "A".."D" (49..52), and a SentencePiece one produces "▁A". Guessing wrong
still trains and evaluates without error, just on the wrong logits, so the ids are
measured: tokenize the prefix, then prefix + " " + label, and take the one new token.

The default prefix is the bare "Answer:"; pass a whole prompt as ``prefix`` to check
the ids in context (the tests do both).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Tried in order: with a space (what "Answer: A" produces in running text) and,
# for tokenizers that split " A" into two tokens, directly attached.
SEPARATORS = (" ", "")


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _new_token(tokenizer: Any, prefix_ids: list[int], text: str) -> int | None:
    ids = _ids(tokenizer, text)
    if len(ids) == len(prefix_ids) + 1 and ids[: len(prefix_ids)] == prefix_ids:
        return ids[-1]
    return None  # the label is several tokens, or it merged with the prefix's last token


def tokenizer_name(tokenizer: Any) -> str:
    return getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__


def answer_token_ids(
    tokenizer: Any, answer_labels: Sequence[str], prefix: str = "Answer:"
) -> list[int]:
    """The id of the single token each label becomes right after ``prefix``, in label order.

    The first separator of ``SEPARATORS`` under which every label is exactly one new
    token is used (the same for all labels). Raises ValueError naming the tokenizer
    and the label if a label is not one token after the prefix, or if two labels
    get the same id.
    """
    if not answer_labels:
        raise ValueError("answer_labels is empty")
    prefix_ids = _ids(tokenizer, prefix)
    name = tokenizer_name(tokenizer)
    for sep in SEPARATORS:
        ids = [_new_token(tokenizer, prefix_ids, prefix + sep + label) for label in answer_labels]
        if all(i is not None for i in ids):
            break
    else:
        bad = next(label for label, i in zip(answer_labels, ids, strict=True) if i is None)
        shown = [_ids(tokenizer, prefix + sep + bad)[len(prefix_ids) :] for sep in SEPARATORS]
        raise ValueError(
            f"tokenizer {name!r}: answer {bad!r} is not exactly one new token after {prefix!r} "
            f"(with a space it becomes {shown[0]}, without {shown[1]}); choose answer labels "
            "that are single tokens for this tokenizer"
        )
    seen: dict[int, str] = {}
    for label, token in zip(answer_labels, ids, strict=True):
        if token in seen:
            raise ValueError(
                f"tokenizer {name!r}: answers {seen[token]!r} and {label!r} both become token "
                f"{token} after {prefix!r}, so the classifier could not tell them apart"
            )
        seen[token] = label
    return [int(i) for i in ids if i is not None]
