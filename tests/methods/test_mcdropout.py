"""MC Dropout: stochastic LoRA-dropout passes, averaged; p = 0 refused; seeded; eval mode after."""

import pytest
import torch

from bayeslora.methods.mcdropout import MCDropout, MCDropoutConfig
from bayeslora.training.loop import predict_logits


def _fit(clf, toy_train, quick_settings, **config):
    method = MCDropout(MCDropoutConfig(lr=1e-2, **config), train=quick_settings(steps=10))
    method.fit(clf, toy_train)
    return method


def test_dropout_samples_differ_and_their_average_is_not_the_map(
    toy_classifier, toy_train, toy_eval, quick_settings
):
    with toy_classifier(dropout=0.3) as clf:
        method = _fit(clf, toy_train, quick_settings)
        clf.eval()
        for m in clf.lora_dropout_modules():
            m.train()
        first, second = predict_logits(clf, toy_eval), predict_logits(clf, toy_eval)
        assert not torch.allclose(first, second)

        mc = method.predict_proba(toy_eval, "mcdropout")
        deterministic = method.predict_proba(toy_eval, "mcdropout@map")
        torch.testing.assert_close(mc.sum(-1), torch.ones(len(toy_eval)))
        # A method that silently predicted with dropout off would give the MAP here.
        assert (mc - deterministic).abs().max() > 1e-4
        clf.eval()
        torch.testing.assert_close(deterministic, predict_logits(clf, toy_eval).softmax(-1))


def test_predictions_repeat_restore_eval_mode_and_leave_the_global_rng_alone(
    toy_classifier, toy_train, toy_eval, quick_settings
):
    with toy_classifier(dropout=0.3) as clf:
        method = _fit(clf, toy_train, quick_settings, test_samples=3)
        rng = torch.get_rng_state()
        first = method.predict_proba(toy_eval)
        assert torch.equal(torch.get_rng_state(), rng)
        assert not clf.training and not any(m.training for m in clf.modules())
        torch.testing.assert_close(method.predict_proba(toy_eval), first, rtol=0, atol=0)
        assert method.extra_metrics() == {
            "mc_dropout_layers_on": 4.0,
            "mc_dropout_p": 0.3,
            "mc_dropout_p_effective": round(0.3 * 2**16) / 2**16,
        }


def test_zero_lora_dropout_is_an_error(toy_classifier, toy_train, quick_settings):
    with toy_classifier(dropout=0.0) as clf:
        method = MCDropout(train=quick_settings(steps=2))
        with pytest.raises(ValueError, match="--lora-dropout > 0"):
            method.fit(clf, toy_train)


def test_cli_runs_mcdropout(bench_cli, tmp_path):
    code, out = bench_cli("mcdropout", tmp_path)
    assert code == 0
    assert "mcdropout@map" in out and "arc_easy" in out


def test_search_space_never_proposes_dropout_zero():
    import optuna

    from bayeslora.methods.mcdropout import MCDropout

    study = optuna.create_study()
    for _ in range(20):
        values = MCDropout.search_space(study.ask())
        assert values["lora_dropout"] >= 0.05 and "lr" in values
