"""The samples and tau curves against the metrics of the predictives computed directly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bayeslora.metrics import compute_metrics
from bayeslora.report.curves import CURVE_METRICS, result_curves, samples_curve, tau_curve
from bayeslora.report.result import ResultRecord
from tests.report.helpers import LABELS, probs_for

SAMPLES = torch.stack([probs_for(s, 1.0) for s in range(5)]).numpy().astype(np.float32)


def test_samples_curve_is_the_running_average_of_the_first_k():
    ks, values = samples_curve(SAMPLES, LABELS.numpy())
    assert ks == [1.0, 2.0, 3.0, 4.0, 5.0]
    for k in (1, 3, 5):
        direct = compute_metrics(torch.from_numpy(SAMPLES[:k].mean(0)), LABELS, names=CURVE_METRICS)
        for name in CURVE_METRICS:
            assert values[name][k - 1] == pytest.approx(direct[name], abs=1e-6)
    assert values["nll"][0] != pytest.approx(values["nll"][-1])  # the samples differ


def test_tau_curve_in_increasing_tau():
    tau = np.array([1.0, 0.0, 0.5])
    ts, values = tau_curve(tau, SAMPLES[:3], LABELS.numpy())
    assert ts == [0.0, 0.5, 1.0]
    direct = compute_metrics(torch.from_numpy(SAMPLES[1]), LABELS, names=["nll"])["nll"]
    assert values["nll"][0] == pytest.approx(direct, abs=1e-6)  # tau 0 was stored second
    with pytest.raises(ValueError, match="2 taus for 3 predictives"):
        tau_curve(tau[:2], SAMPLES[:3], LABELS.numpy())
    with pytest.raises(ValueError, match=r"probs must be \[S, N, K\]"):
        samples_curve(SAMPLES[0], LABELS.numpy())


def test_only_runs_with_the_artifacts_get_curves():
    def record(mode, run_id, kind="result"):
        return ResultRecord(
            kind, "ivon", mode, "t", 0, {}, run_id=run_id, eval_task="u" if kind == "ood" else ""
        )

    stored = {("r1", "sample_probs.npz"): {"probs": SAMPLES, "labels": LABELS.numpy()}}
    curves = result_curves(
        [record("ivon", "r1"), record("adamw", "r2"), record("ivon", "r1", kind="ood")],
        lambda run_id, name: stored.get((run_id, name)),
    )
    assert [(c.mode, len(c.x)) for c in curves["samples"]] == [("ivon", 5)]
    assert curves["tau"] == []
