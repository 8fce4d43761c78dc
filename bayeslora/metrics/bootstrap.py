"""Is a difference between two methods more than evaluation-set noise? A paired bootstrap.

Both methods are scored on the same resampled examples in each round, so the spread of
the difference reflects only which questions happened to be in the evaluation set (not
training noise: compare seeds for that). A 95% interval that excludes 0 means the
difference is unlikely to come from the choice of evaluation examples alone.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bayeslora.metrics.registry import bootstrap_metrics


def paired_bootstrap(
    probs_a: Tensor,
    probs_b: Tensor,
    labels: Tensor,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """{metric: {"diff", "low", "high"}} for metric(a) - metric(b), percentile intervals.

    Over the registry's :func:`~bayeslora.metrics.registry.bootstrap_metrics`, in its
    order; binned metrics use the default number of bins."""
    if probs_a.shape != probs_b.shape or probs_a.shape[0] != labels.shape[0]:
        raise ValueError(
            f"paired bootstrap needs predictions of the same examples: got {tuple(probs_a.shape)}, "
            f"{tuple(probs_b.shape)} and {labels.shape[0]} labels"
        )
    if n_resamples < 1 or not 0 < confidence < 1:
        raise ValueError(
            f"need n_resamples >= 1 and 0 < confidence < 1, got {n_resamples}, {confidence}"
        )
    metrics = bootstrap_metrics()  # the registry's, in display order
    generator = torch.Generator().manual_seed(seed)
    n = labels.shape[0]
    draws: dict[str, list[float]] = {m.name: [] for m in metrics}
    for _ in range(n_resamples):
        # One draw per resample, whatever the metrics: every metric sees the same examples.
        idx = torch.randint(n, (n,), generator=generator)
        a, b, y = probs_a[idx], probs_b[idx], labels[idx]
        for metric in metrics:
            draws[metric.name].append((metric(a, y) - metric(b, y)).item())
    tail = (1 - confidence) / 2
    result = {}
    for metric in metrics:
        values = torch.tensor(draws[metric.name], dtype=torch.float64)
        result[metric.name] = {
            "diff": (metric(probs_a, labels) - metric(probs_b, labels)).item(),
            "low": torch.quantile(values, tail).item(),
            "high": torch.quantile(values, 1 - tail).item(),
        }
    return result
