"""Is a difference between two methods more than evaluation-set noise? A paired bootstrap.

Both methods are scored on the same resampled examples in each round, so the spread of
the difference reflects only which questions happened to be in the evaluation set (not
training noise: compare seeds for that). A 95% interval that excludes 0 means the
difference is unlikely to come from the choice of evaluation examples alone.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from bayeslora.metrics.functional import accuracy, brier, ece, nll

METRICS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "accuracy": accuracy,
    "nll": nll,
    "ece": ece,
    "brier": brier,
}


def paired_bootstrap(
    probs_a: Tensor,
    probs_b: Tensor,
    labels: Tensor,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """{metric: {"diff", "low", "high"}} for metric(a) - metric(b), percentile intervals."""
    if probs_a.shape != probs_b.shape or probs_a.shape[0] != labels.shape[0]:
        raise ValueError(
            f"paired bootstrap needs predictions of the same examples: got {tuple(probs_a.shape)}, "
            f"{tuple(probs_b.shape)} and {labels.shape[0]} labels"
        )
    if n_resamples < 1 or not 0 < confidence < 1:
        raise ValueError(
            f"need n_resamples >= 1 and 0 < confidence < 1, got {n_resamples}, {confidence}"
        )
    generator = torch.Generator().manual_seed(seed)
    n = labels.shape[0]
    draws = {name: [] for name in METRICS}
    for _ in range(n_resamples):
        idx = torch.randint(n, (n,), generator=generator)
        for name, metric in METRICS.items():
            draws[name].append(
                (metric(probs_a[idx], labels[idx]) - metric(probs_b[idx], labels[idx])).item()
            )
    tail = (1 - confidence) / 2
    result = {}
    for name, metric in METRICS.items():
        values = torch.tensor(draws[name], dtype=torch.float64)
        result[name] = {
            "diff": (metric(probs_a, labels) - metric(probs_b, labels)).item(),
            "low": torch.quantile(values, tail).item(),
            "high": torch.quantile(values, 1 - tail).item(),
        }
    return result
