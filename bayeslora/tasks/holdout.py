"""Carving a seeded validation part out of the training examples.

Used by methods that need held-out data (temperature scaling, Laplace's validation-NLL
prior) and by the tuner; the evaluation split the results are reported on is never
touched.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def split_holdout(examples: Sequence[T], fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """(train, holdout) with ``round(fraction * n)`` examples (at least 1) held out."""
    if not 0 < fraction < 1:
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")
    n_holdout = max(1, round(fraction * len(examples)))
    if n_holdout >= len(examples):
        raise ValueError(f"cannot hold out {fraction:.0%} of only {len(examples)} examples")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_holdout])
    train = [e for i, e in enumerate(examples) if i not in held]
    holdout = [examples[i] for i in sorted(held)]
    return train, holdout
