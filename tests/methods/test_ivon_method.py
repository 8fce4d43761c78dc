import pytest
import torch

from bayeslora.methods.ivon import IVON, IVONConfig
from bayeslora.training.settings import TrainSettings


def test_paper_defaults_and_per_task_values():
    config = IVONConfig()
    assert (
        config.lr,
        config.beta2,
        config.weight_decay,
        config.clip_radius,
        config.rescale_lr,
    ) == (0.03, 0.99999, 0.0, 1e-3, False)
    assert (config.mc_samples, config.test_samples) == (1, 10)
    assert (IVON.make_config("arc_challenge").ess, IVON.make_config("arc_challenge").hess_init) == (
        1e6,
        1e-3,
    )
    assert (IVON.make_config("boolq").ess, IVON.make_config("boolq").hess_init) == (1e7, 3e-4)
    assert (IVON.make_config("winogrande_s").ess, IVON.make_config("winogrande_m").ess) == (
        1e7,
        1e8,
    )
    assert IVON.make_config("winogrande_m", {"ess": 5}).ess == 5.0  # user overrides win


def _fit(clf, train, **config):
    method = IVON(IVONConfig(**config), train=TrainSettings(steps=6, batch_size=8, progress=False))
    method.fit(clf, train)
    return method


def test_two_prediction_modes_sum_to_one(toy_classifier, toy_train, toy_eval):
    with toy_classifier(dropout=0.0) as clf:
        method = _fit(clf, toy_train, ess=100.0, hess_init=1.0, test_samples=3)
        assert tuple(m.name for m in method.modes()) == ("ivon", "ivon@mean")
        for mode in method.modes():
            probs = method.predict_proba(toy_eval, mode)
            torch.testing.assert_close(probs.sum(-1), torch.ones(len(toy_eval)))
        with pytest.raises(ValueError, match="no prediction mode"):
            method.predict_proba(toy_eval, "ivon@median")


def test_posterior_averaging_differs_from_the_mean_and_tau_zero_is_the_mean(
    toy_classifier, toy_train, toy_eval
):
    with toy_classifier(dropout=0.0) as clf:
        # A small ess gives a wide posterior, so the samples visibly move the predictions.
        method = _fit(clf, toy_train, ess=50.0, hess_init=1.0, test_samples=4)
        state = clf.lora_state()
        mean = method.predict_proba(toy_eval, "ivon@mean")
        averaged = method.predict_proba(toy_eval, "ivon")
        assert not torch.allclose(mean, averaged, atol=1e-4)
        torch.testing.assert_close(
            averaged, method.predict_proba(toy_eval, "ivon"), rtol=0, atol=0
        )  # seeded
        assert all(
            torch.equal(state[n], p) for n, p in clf.lora_named_parameters()
        )  # mean restored
        method.config.tau = 0.0
        torch.testing.assert_close(method.predict_proba(toy_eval, "ivon"), mean, rtol=0, atol=0)
        assert method.extra_metrics()["posterior_std_mean"] > 0


def test_mc_samples_run_several_passes_per_step(toy_classifier, toy_train, monkeypatch):
    with toy_classifier(dropout=0.0) as clf:
        calls = []
        forward = clf.forward
        monkeypatch.setattr(clf, "forward", lambda *a, **k: calls.append(1) or forward(*a, **k))
        method = IVON(
            IVONConfig(mc_samples=2), train=TrainSettings(steps=3, batch_size=8, progress=False)
        )
        method.fit(clf, toy_train)
    assert len(calls) == 6


def test_a_non_finite_hessian_stops_the_fit_naming_the_step(toy_classifier, toy_train, monkeypatch):
    from bayeslora.optim import IVON as IVONOptimizer
    from bayeslora.training.loop import DivergedError

    update = IVONOptimizer._update_group

    def update_then_break(self, group):  # what an overflowing Hessian estimate leaves
        update(self, group)
        if group["step"] == 2:
            self.state[group["params"][0]]["hess"].view(-1)[0] = float("inf")

    monkeypatch.setattr(IVONOptimizer, "_update_group", update_then_break)
    method = IVON(train=TrainSettings(steps=4, batch_size=4, progress=False))
    with toy_classifier() as clf, pytest.raises(DivergedError) as raised:
        method.fit(clf, toy_train)
    assert "IVON Hessian estimate became inf at step 2 (1 of" in str(raised.value)


def test_per_task_defaults_come_from_the_method_or_the_task_and_a_gap_is_noticed():
    import dataclasses

    from bayeslora.methods.adamw import AdamW
    from bayeslora.tasks.registry import get_task, register_task, unregister_task

    bare = dataclasses.replace(get_task("arc_easy"), name="plugin_task", method_defaults={})
    declared = dataclasses.replace(
        bare, name="plugin_task_2", method_defaults={"ivon": {"ess": 1e7, "hess_init": 3e-4}}
    )
    register_task(bare)
    register_task(declared)
    try:
        notice = IVON.defaults_notice("plugin_task")
        assert notice.startswith("ivon has no per-task value of ess, hess_init for plugin_task")
        assert "using ess=1000000.0, hess_init=0.001" in notice
        assert "--hp ivon.NAME=VALUE" in notice
        assert IVON.make_config("plugin_task").ess == 1e6  # the Config's, said out loud
        # what the overrides give is not missing
        assert "of hess_init for" in IVON.defaults_notice("plugin_task", {"ess": "1e7"})
        assert IVON.defaults_notice("plugin_task", {"ess": 1, "hess_init": 1}) is None
        config = IVON.make_config("plugin_task_2", {"hess_init": "1e-4"})
        assert (config.ess, config.hess_init) == (1e7, 1e-4)  # the task's, under overrides
        assert IVON.defaults_notice("plugin_task_2") is None
        assert IVON.defaults_notice("winogrande_m") is None
        assert AdamW.defaults_notice("plugin_task") is None  # no per-task defaults at all
        assert IVON.make_config("not_registered").ess == 1e6  # a jsonl task's name
    finally:
        unregister_task("plugin_task")
        unregister_task("plugin_task_2")
