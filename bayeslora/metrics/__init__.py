"""Accuracy and calibration metrics for classifiers that output class probabilities.

Functions of ``(probs [N, K], labels [N])`` in :mod:`~bayeslora.metrics.functional`, and
:class:`CalibrationMetrics`, which accumulates batches and computes them all at the end.
Importing this package needs only torch (torchmetrics is imported on first use).
"""

from bayeslora.metrics.collection import CalibrationMetrics
from bayeslora.metrics.functional import (
    ReliabilityBins,
    accuracy,
    brier,
    calibration_metrics,
    ece,
    mce,
    nll,
    reliability_bins,
)

__all__ = [
    "CalibrationMetrics",
    "ReliabilityBins",
    "accuracy",
    "brier",
    "calibration_metrics",
    "ece",
    "mce",
    "nll",
    "reliability_bins",
]
