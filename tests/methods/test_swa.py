"""SWA: the averaged adapter is the mean of the snapshots; SWALR sets the SWA-phase lr."""

import pytest
import torch

from bayeslora.methods.swa import SWA, SWAConfig
from tests.methods.conftest import fit_recording_snapshots


def _fit_recording(clf, toy_train, quick_settings, steps=12, **config):
    """Fit SWA and record every snapshot it collects."""
    method = SWA(
        SWAConfig(**{"lr": 1e-2, "swa_lr": 5e-3, **config}),
        train=quick_settings(steps=steps, log_every=1),
    )
    return method, fit_recording_snapshots(method, clf, toy_train)


def test_swa_weights_are_the_mean_of_the_snapshots(toy_classifier, toy_train, quick_settings):
    with toy_classifier() as clf:
        method, snapshots = _fit_recording(
            clf, toy_train, quick_settings, swa_start=0.5, collect_every=2
        )
        assert len(snapshots) == 3 == method.num_snapshots  # after steps 8, 10 and 12
        assert method.extra_metrics() == {"swa_snapshots": 3.0}
        for name, weight in clf.lora_named_parameters():
            mean = torch.stack([s[name] for s in snapshots]).mean(0)
            torch.testing.assert_close(weight.detach(), mean, rtol=1e-6, atol=1e-7)
        # The average is not the last iterate (what plain AdamW would keep).
        assert any(
            not torch.allclose(p, method.last_state[n]) for n, p in clf.lora_named_parameters()
        )


def test_swa_lr_is_the_learning_rate_of_the_swa_phase(toy_classifier, toy_train, quick_settings):
    with toy_classifier() as clf:
        method, _ = _fit_recording(clf, toy_train, quick_settings, swa_start=0.5, anneal_steps=0)
    lr = {h["step"]: h["lr"] for h in method.history if "lr" in h}  # the lr of the next step
    for step in range(1, 6):
        assert lr[step] == pytest.approx(1e-2 * (12 - step) / 12)  # the loop's linear decay
    for step in range(6, 13):
        assert lr[step] == pytest.approx(5e-3)

    with toy_classifier() as clf:
        method, _ = _fit_recording(
            clf, toy_train, quick_settings, swa_start=0.5, anneal_steps=4, swa_lr=1e-3
        )
    lr = {h["step"]: h["lr"] for h in method.history if "lr" in h}
    start = 1e-2 * 6 / 12  # where the linear decay is when the SWA phase begins
    assert lr[6] == pytest.approx(start + (1e-3 - start) / 4)  # linear anneal, 1 of 4 steps
    assert lr[7] == pytest.approx(start + (1e-3 - start) * 2 / 4)
    for step in range(9, 13):
        assert lr[step] == pytest.approx(1e-3)


def test_swa_predicts_differently_from_the_last_iterate(
    toy_classifier, toy_train, toy_eval, quick_settings
):
    with toy_classifier() as clf:
        method, _ = _fit_recording(clf, toy_train, quick_settings, swa_start=0.5)
        swa = method.predict_proba(toy_eval, "swa")
        torch.testing.assert_close(swa.sum(-1), torch.ones(len(toy_eval)))
        averaged = clf.lora_state()
        clf.load_lora_state(method.last_state)
        last = method.predict_proba(toy_eval)
        assert (swa - last).abs().max() > 1e-4
        clf.load_lora_state(averaged)


def test_too_few_snapshots_is_an_error(toy_classifier, toy_train, quick_settings):
    with toy_classifier() as clf:
        method = SWA(SWAConfig(swa_start=0.75, collect_every=5), train=quick_settings(steps=8))
        with pytest.raises(ValueError, match="0 snapshot"):
            method.fit(clf, toy_train)


def test_cli_runs_swa(bench_cli, tmp_path):
    code, out = bench_cli("swa", tmp_path)
    assert code == 0
    assert "swa" in out and "arc_easy" in out
