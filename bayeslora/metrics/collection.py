"""A stateful shell around :mod:`bayeslora.metrics.registry` for batch-wise evaluation.

ECE and MCE are not averages of per-batch values (the bins need every confidence at
once), so :class:`CalibrationMetrics` keeps all probabilities and labels and computes
everything in one call at the end. That is ``N * K`` numbers, small for the
multiple-choice tasks of the benchmark; they are kept on the CPU so that the GPU memory
stays free for the model.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from bayeslora.metrics.functional import (
    DEFAULT_N_BINS,
    _check_inputs,
    _check_n_bins,
    reliability_bins,
)
from bayeslora.metrics.registry import calibration_metrics


class CalibrationMetrics:
    """Accumulate ``(probs, labels)`` batches; :meth:`compute` scores all of them at once.

    Example::

        metrics = CalibrationMetrics(n_bins=10)
        for probs, labels in batches:
            metrics.update(probs, labels)
        metrics.compute()  # {"accuracy": ..., "ece": ..., "nll": ..., "brier": ..., "mce": ...}

    The result equals :func:`~bayeslora.metrics.registry.calibration_metrics` on the
    concatenated batches, however the data is split.
    """

    def __init__(self, n_bins: int = DEFAULT_N_BINS) -> None:
        _check_n_bins(n_bins)
        self.n_bins = n_bins
        self.reset()

    def reset(self) -> None:
        """Forget all batches seen so far."""
        self._probs: list[Tensor] = []
        self._labels: list[Tensor] = []

    @property
    def num_examples(self) -> int:
        """Number of examples accumulated since the last reset."""
        return sum(len(labels) for labels in self._labels)

    def update(self, probs: Tensor, labels: Tensor) -> None:
        """Add a batch: ``probs`` ``[B, K]`` class probabilities, ``labels`` ``[B]`` indices."""
        # Check each batch as it arrives, so that an error points at the batch at fault.
        _check_inputs(probs, labels)
        if self._probs:
            first = self._probs[0]
            if probs.shape[1] != first.shape[1]:
                raise ValueError(
                    f"this batch has K={probs.shape[1]} classes but earlier batches had "
                    f"K={first.shape[1]}; use one CalibrationMetrics per task."
                )
            # The dtype decides the sum-to-one tolerance and the rounding of the bin
            # edges, so a mix would make the result depend on how batches were split.
            if probs.dtype != first.dtype:
                raise ValueError(
                    f"this batch has dtype {probs.dtype} but earlier batches had "
                    f"{first.dtype}; cast all batches to one dtype."
                )
        # copy=True: the caller may reuse or modify its buffers after update returns.
        self._probs.append(probs.detach().to("cpu", copy=True))
        self._labels.append(labels.detach().to("cpu", dtype=torch.int64, copy=True))

    def _all(self) -> tuple[Tensor, Tensor]:
        if not self._probs:
            raise RuntimeError("no data: call update(probs, labels) before computing metrics.")
        return torch.cat(self._probs), torch.cat(self._labels)

    def compute(self) -> dict[str, float]:
        """``{"accuracy", "nll", "ece", "mce", "brier"}`` over all batches, as floats."""
        return calibration_metrics(*self._all(), n_bins=self.n_bins)

    def reliability_diagram_data(self) -> dict[str, np.ndarray]:
        """Per-bin data for a reliability diagram, as numpy arrays of length ``n_bins``.

        Keys: ``"confidence"`` (mean top-label confidence), ``"accuracy"`` (both NaN for
        empty bins), ``"count"`` (examples per bin) and ``"edges"`` (``n_bins + 1`` bin
        edges, from 0 to 1). Bins as in :func:`~bayeslora.metrics.reliability_bins`.
        """
        bins = reliability_bins(*self._all(), n_bins=self.n_bins)
        return {
            "confidence": bins.confidence.numpy(),
            "accuracy": bins.accuracy.numpy(),
            "count": bins.count.numpy(),
            "edges": np.linspace(0.0, 1.0, self.n_bins + 1),
        }
