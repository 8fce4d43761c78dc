"""Accuracy and calibration metrics for classifiers that output class probabilities.

Functions of ``(probs [N, K], labels [N])`` in :mod:`~bayeslora.metrics.functional`; the
registry of them (name, direction, display) in :mod:`~bayeslora.metrics.registry`; and
:class:`CalibrationMetrics`, which accumulates batches and computes them all at the end.
Importing this package needs only torch (torchmetrics is imported on first use).
"""

from bayeslora.metrics.collection import CalibrationMetrics
from bayeslora.metrics.functional import (
    ReliabilityBins,
    accuracy,
    brier,
    ece,
    mce,
    nll,
    reliability_bins,
)
from bayeslora.metrics.registry import (
    METRICS,
    Direction,
    Metric,
    bootstrap_metrics,
    calibration_metrics,
    compute_metrics,
    get_metric,
    register_metric,
    table_metrics,
)

__all__ = [
    "METRICS",
    "CalibrationMetrics",
    "Direction",
    "Metric",
    "ReliabilityBins",
    "accuracy",
    "bootstrap_metrics",
    "brier",
    "calibration_metrics",
    "compute_metrics",
    "ece",
    "get_metric",
    "mce",
    "nll",
    "register_metric",
    "reliability_bins",
    "table_metrics",
]
