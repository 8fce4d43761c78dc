"""Seeded splits and subsamples that come out the same on every machine.

``random.Random(seed).shuffle`` is used rather than numpy or torch because its
sequence for a given seed has been stable across CPython versions for a decade, and
a fixed split is only useful if it never changes. Selected indices are returned in
their original order, so a split is a choice of rows, not a reordering.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def seeded_split(
    n: int, *, seed: int, eval_size: int, train_size: int | None = None
) -> tuple[list[int], list[int]]:
    """Split ``range(n)`` into (train indices, eval indices).

    One permutation decides both parts: its first ``eval_size`` entries are the eval
    part and the training part is taken from the rest, in permutation order. So the
    eval part does not depend on ``train_size``, and a smaller training set is a
    subset of a larger one with the same seed (WinoGrande S within M).
    """
    if not 0 < eval_size < n:
        raise ValueError(f"cannot take {eval_size} eval rows out of {n}")
    pool = n - eval_size
    if train_size is not None and not 0 < train_size <= pool:
        raise ValueError(f"cannot take {train_size} training rows out of the {pool} left")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    eval_idx = order[:eval_size]
    train_idx = (
        order[eval_size:] if train_size is None else order[eval_size : eval_size + train_size]
    )
    return sorted(train_idx), sorted(eval_idx)


def seeded_subsample(items: Sequence[T], k: int, *, seed: int) -> list[T]:
    """``k`` items chosen with ``seed``, kept in their original order (all of them if k >= len)."""
    if k >= len(items):
        return list(items)
    if k <= 0:
        raise ValueError(f"a subsample needs at least one item, not {k}")
    chosen = sorted(random.Random(seed).sample(range(len(items)), k))
    return [items[i] for i in chosen]
