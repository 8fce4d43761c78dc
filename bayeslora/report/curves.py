"""Metric curves of one result, from the predictions its run stored.

- **Samples curve** (sampling modes: IVON, MC Dropout, SWAG, ensembles): accuracy, ECE and
  NLL of the running average of the first k test samples' predictive probabilities, k = 1..S,
  from ``sample_probs.npz`` (``probs`` [S, N, K], ``labels`` [N]), as the IVON-LoRA code does.
- **Tau curve** (IVON): the same metrics of the predictive with the posterior variance
  scaled by tau (0 = the mean, 1 = the trained posterior), from ``tau_probs.npz`` (``tau``
  [T], ``probs`` [T, N, K], ``labels`` [N]): the accuracy-calibration trade-off.

A run without the artifact has no curve; the report leaves that plot out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from bayeslora.metrics import compute_metrics
from bayeslora.report.result import ResultRecord
from bayeslora.tracking.schema import SAMPLE_PROBS, TAU_PROBS

CURVE_METRICS = ("accuracy", "ece", "nll")

Arrays = Callable[[str, str], "dict[str, np.ndarray] | None"]  # (run id, artifact) -> arrays


@dataclass
class Curve:
    task: str
    mode: str
    seed: int
    x: list[float]  # k (1..S) or tau
    values: dict[str, list[float]]  # metric -> one value per x

    def to_dict(self) -> dict:
        return {"task": self.task, "mode": self.mode, "seed": self.seed, "x": self.x, **self.values}


def samples_curve(
    probs: np.ndarray, labels: np.ndarray
) -> tuple[list[float], dict[str, list[float]]]:
    """k = 1..S and the metrics of ``mean(probs[:k])`` for each k."""
    _check(probs, labels, "sample_probs")
    running = np.cumsum(probs.astype(np.float64), axis=0)
    ks = np.arange(1, probs.shape[0] + 1)
    return [float(k) for k in ks], _metrics(running / ks[:, None, None], labels)


def tau_curve(
    tau: np.ndarray, probs: np.ndarray, labels: np.ndarray
) -> tuple[list[float], dict[str, list[float]]]:
    """The metrics of the predictive at each tau, in increasing tau."""
    _check(probs, labels, "tau_probs")
    if tau.shape != (probs.shape[0],):
        raise ValueError(f"tau_probs: {tau.shape[0]} taus for {probs.shape[0]} predictives")
    order = np.argsort(tau)
    return [float(t) for t in tau[order]], _metrics(probs[order].astype(np.float64), labels)


def result_curves(records: Iterable[ResultRecord], arrays: Arrays) -> dict[str, list[Curve]]:
    """``{"samples": [...], "tau": [...]}``: the curves of the in-distribution records whose
    run stored the artifacts (``arrays(run_id, name)``: its arrays, or None)."""
    curves: dict[str, list[Curve]] = {"samples": [], "tau": []}
    for r in records:
        if not r.run_id or not r.in_distribution:
            continue
        stored = arrays(r.run_id, SAMPLE_PROBS)
        if stored is not None:
            x, values = samples_curve(stored["probs"], stored["labels"])
            curves["samples"].append(Curve(r.task, r.mode, r.seed, x, values))
        stored = arrays(r.run_id, TAU_PROBS)
        if stored is not None:
            x, values = tau_curve(stored["tau"], stored["probs"], stored["labels"])
            curves["tau"].append(Curve(r.task, r.mode, r.seed, x, values))
    return curves


def _metrics(predictives: np.ndarray, labels: np.ndarray) -> dict[str, list[float]]:
    y = torch.from_numpy(labels.astype(np.int64))
    values: dict[str, list[float]] = {m: [] for m in CURVE_METRICS}
    for p in predictives:
        p = p / p.sum(axis=1, keepdims=True)  # float32 rows, averaged, miss one by ~1e-7
        for name, value in compute_metrics(torch.from_numpy(p), y, names=CURVE_METRICS).items():
            values[name].append(value)
    return values


def _check(probs: np.ndarray, labels: np.ndarray, what: str) -> None:
    if probs.ndim != 3 or labels.shape != (probs.shape[1],):
        raise ValueError(
            f"{what}: probs must be [S, N, K] and labels [N], got {probs.shape} and {labels.shape}"
        )
