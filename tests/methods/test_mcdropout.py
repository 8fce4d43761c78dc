"""MC Dropout: stochastic LoRA-dropout passes, averaged; p = 0 refused; seeded; eval mode after."""

import pytest
import torch

from bayeslora.methods.mcdropout import (
    MCDropout,
    MCDropoutConfig,
    effective_rate,
    lora_dropout_masks,
)
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


@pytest.mark.parametrize("p", [0.05, 0.1, 0.3, 0.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_masks_drop_at_the_rate_and_keep_the_expectation(p, dtype):
    layers = [torch.nn.Dropout(p), torch.nn.Dropout(p)]
    x = torch.ones(64, 128, 96, dtype=dtype)  # 786,432 elements: the rate to about 1e-3
    with lora_dropout_masks(layers, torch.Generator().manual_seed(0)):
        first, second = layers[0](x), layers[1](x)
    assert first.dtype == dtype
    dropped = (first == 0).double().mean().item()
    assert abs(dropped - effective_rate(p)) < 5 * (p * (1 - p) / x.numel()) ** 0.5
    kept = first[first != 0].float()
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / (1 - p)), rtol=1e-2, atol=0)
    # independent masks per layer, and neighbouring elements (lanes of one draw) too
    both = ((first == 0) & (second == 0)).double().mean().item()
    assert abs(both - effective_rate(p) ** 2) < 0.01
    flat = (first == 0).flatten()
    pairs = (flat[0::2] & flat[1::2]).double().mean().item()
    assert abs(pairs - effective_rate(p) ** 2) < 0.01
    # outside the context the layers are plain nn.Dropout again
    assert "forward" not in vars(layers[0])
    assert torch.equal(layers[0].eval()(x), x)


def test_masks_repeat_with_the_generator_seed():
    layer = torch.nn.Dropout(0.2)
    x = torch.randn(4, 10, 16)
    runs = []
    for seed in (1, 1, 2):
        with lora_dropout_masks([layer], torch.Generator().manual_seed(seed)):
            runs.append(layer(x))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
