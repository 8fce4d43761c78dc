"""SWAG: moments of the SWA snapshots, a low-rank deviation part, and seeded weight samples."""

import math

import pytest
import torch

from bayeslora.methods.swag import SWAG, SWAGConfig
from tests.methods.conftest import fit_recording_snapshots


def _flat(state):
    return torch.cat([t.flatten() for t in state.values()]).double()


def _fit_recording(clf, toy_train, quick_settings, **config):
    """Fit SWAG (12 steps, averaging over the second half) and record every snapshot."""
    config = {"lr": 1e-2, "swa_lr": 5e-3, "swa_start": 0.5, **config}
    method = SWAG(SWAGConfig(**config), train=quick_settings(steps=12))
    return method, fit_recording_snapshots(method, clf, toy_train)


def test_moments_and_deviations_are_those_of_the_snapshots(
    toy_classifier, toy_train, quick_settings
):
    with toy_classifier() as clf:
        method, snapshots = _fit_recording(clf, toy_train, quick_settings, max_rank=4)
    flat = torch.stack([_flat(s) for s in snapshots])  # [6, d]: steps 7..12
    assert len(snapshots) == 6
    torch.testing.assert_close(_flat(method.swa_state), flat.mean(0))
    torch.testing.assert_close(
        method.variance(), flat.var(0, unbiased=False), rtol=1e-6, atol=1e-14
    )
    assert method.variance().max() > 0
    # The last K columns: each snapshot minus the running mean that includes it.
    assert len(method.deviations) == 4
    for column, i in zip(method.deviations, range(2, 6), strict=True):
        expected = flat[i] - flat[: i + 1].mean(0)
        torch.testing.assert_close(column.double(), expected, rtol=1e-5, atol=1e-7)


def test_samples_have_the_swag_mean_and_covariance(toy_classifier, toy_train, quick_settings):
    with toy_classifier() as clf:
        method, _ = _fit_recording(clf, toy_train, quick_settings, max_rank=4)
    generator = torch.Generator().manual_seed(0)
    samples = torch.stack([_flat(method.sample_state(generator)) for _ in range(2000)])
    mean = _flat(method.swa_state)
    assert not any(torch.equal(s, mean) for s in samples[:10])
    deviations = torch.stack(list(method.deviations), dim=1).double()
    # The paper's covariance ½ (Σ_diag + D Dᵀ / (K − 1)), on its diagonal:
    expected_var = 0.5 * (method.variance() + (deviations**2).sum(1) / (4 - 1))
    assert samples.var(0).sum() / expected_var.sum() == pytest.approx(1.0, abs=0.05)
    assert ((samples.mean(0) - mean).abs() <= 5 * (expected_var / 2000).sqrt() + 1e-12).all()
    # And one off-diagonal direction: the covariance along the first deviation column.
    u = deviations[:, 0] / deviations[:, 0].norm()
    along = ((samples - mean) @ u).var()
    expected_along = 0.5 * ((method.variance() * u**2).sum() + ((deviations.T @ u) ** 2).sum() / 3)
    assert along / expected_along == pytest.approx(1.0, abs=0.1)


def test_the_low_rank_part_changes_the_samples(toy_classifier, toy_train, quick_settings):
    states = {}
    for rank in (0, 4):
        with toy_classifier() as clf:
            method, _ = _fit_recording(clf, toy_train, quick_settings, max_rank=rank)
        states[rank] = method
    diag, low_rank = states[0], states[4]
    assert len(diag.deviations) == 0 and len(low_rank.deviations) == 4
    torch.testing.assert_close(diag.variance(), low_rank.variance())  # the same trajectory
    a = _flat(diag.sample_state(torch.Generator().manual_seed(1)))
    b = _flat(low_rank.sample_state(torch.Generator().manual_seed(1)))
    # Same z1, so the difference is exactly √scale · D z2 / √(K − 1), which is not zero.
    assert (a - b).abs().max() > 1e-6
    z = torch.Generator().manual_seed(1)
    torch.randn(a.shape, generator=z, dtype=torch.float64)  # z1
    z2 = torch.randn(4, generator=z, dtype=torch.float64)
    deviations = torch.stack(list(low_rank.deviations), dim=1).double()
    torch.testing.assert_close(
        b - a, math.sqrt(0.5) * deviations @ z2 / math.sqrt(3), rtol=1e-5, atol=1e-9
    )


def test_predictions_sum_to_one_repeat_and_leave_the_mean_loaded(
    toy_classifier, toy_train, toy_eval, quick_settings
):
    with toy_classifier() as clf:
        method, _ = _fit_recording(clf, toy_train, quick_settings, test_samples=4, scale=4.0)
        sampled = method.predict_proba(toy_eval, "swag")
        torch.testing.assert_close(sampled.sum(-1), torch.ones(len(toy_eval)))
        torch.testing.assert_close(method.predict_proba(toy_eval, "swag"), sampled, rtol=0, atol=0)
        for name, weight in clf.lora_named_parameters():
            torch.testing.assert_close(weight.detach(), method.swa_state[name].float())
        mean = method.predict_proba(toy_eval, "swag@mean")
        # Sampling that silently fell back to the mean (or to AdamW) would give the same here.
        assert (sampled - mean).abs().max() > 1e-5
        metrics = method.extra_metrics()
        assert (
            metrics["swa_snapshots"] == 6
            and metrics["swag_rank"] == 5
            and metrics["swag_std_mean"] > 0
        )


def test_bad_settings_are_errors(toy_classifier, toy_train, quick_settings):
    with toy_classifier() as clf:
        with pytest.raises(ValueError, match="max_rank"):
            SWAG(SWAGConfig(max_rank=1), train=quick_settings(steps=8)).fit(clf, toy_train)
        with pytest.raises(ValueError, match="needs 2"):
            SWAG(SWAGConfig(swa_start=0.9), train=quick_settings(steps=8)).fit(clf, toy_train)


def test_cli_runs_swag(bench_cli, tmp_path):
    code, out = bench_cli("swag", tmp_path)
    assert code == 0
    assert "swag@mean" in out and "arc_easy" in out
