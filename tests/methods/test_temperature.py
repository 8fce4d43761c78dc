"""Temperature scaling: the fit against known temperatures, composite names in the registry,
the composite on the tiny model, and a CLI run."""

import re

import pytest
import torch
import torch.nn.functional as F

from bayeslora.methods.adamw import AdamW, AdamWConfig
from bayeslora.methods.ivon import IVON, IVONConfig
from bayeslora.methods.registry import RegistryError, get_method
from bayeslora.methods.temperature import (
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    TemperatureScaling,
    apply_temperature,
    fit_temperature,
    log_probs,
)
from bayeslora.models.classifier import LoraSettings, lora_classifier
from bayeslora.tasks.encoding import TokenizedDataset
from bayeslora.tasks.spec import Example
from bayeslora.training.settings import TrainSettings
from tests.cli_helpers import TINY_RUN, bench_subprocess

ANSWER_IDS = [330, 389, 340, 422]  # " A", " B", " C", " D"
SETTINGS = TrainSettings(steps=6, batch_size=4, progress=False, eval_batch_size=8)
MLFLOW_METRIC_NAME = re.compile(r"^[\w.\- :/]+$")  # what MLflow accepts


def _data(tokenizer, n, offset=0):
    examples = [
        Example(f"ex{i}", f"Question {i}: the right letter is {'ABCD'[i % 4]}.\nAnswer:", i % 4, 4)
        for i in range(offset, offset + n)
    ]
    return TokenizedDataset(examples, tokenizer, max_length=64)


# -- the temperature fit ------------------------------------------------------------------


def _calibrated(n=8000, k=4, seed=0):
    """Logits and labels drawn from softmax(logits): temperature 1 is right for them."""
    g = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(n, k, generator=g)
    labels = torch.multinomial(logits.softmax(-1), 1, generator=g).squeeze(1)
    return logits, labels


@pytest.mark.parametrize("scale", [3.0, 0.5])  # over-, under-confident
def test_fitted_temperature_undoes_a_known_scaling(scale):
    logits, labels = _calibrated()
    t = fit_temperature(logits * scale, labels)
    assert t == pytest.approx(scale, rel=0.08)
    nll = F.cross_entropy(logits * scale / t, labels)
    assert nll < F.cross_entropy(logits * scale, labels)  # better than T = 1


def test_calibrated_logits_keep_temperature_one():
    logits, labels = _calibrated(seed=1)
    assert fit_temperature(logits, labels) == pytest.approx(1.0, rel=0.08)


def test_temperature_stays_in_bounds_on_degenerate_data():
    labels = torch.arange(40) % 4
    separable = F.one_hot(labels, 4).float() * 5  # NLL keeps falling as T -> 0
    adversarial = -separable  # worse than chance: NLL keeps falling as T -> infinity
    assert MIN_TEMPERATURE <= fit_temperature(separable, labels) < 0.5
    assert 10 < fit_temperature(adversarial, labels) <= MAX_TEMPERATURE
    with pytest.raises(ValueError, match="no examples"):
        fit_temperature(torch.empty(0, 4), torch.empty(0, dtype=torch.long))


def test_scaling_keeps_the_argmax_and_rows_sum_to_one():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.0, 1.0, 0.0]])
    for t in (0.3, 1.0, 4.0):
        scaled = apply_temperature(probs, t)
        assert torch.equal(scaled.argmax(-1), probs.argmax(-1))
        torch.testing.assert_close(scaled.sum(-1), torch.ones(3))
    torch.testing.assert_close(apply_temperature(probs[:2], 1.0), probs[:2])
    assert apply_temperature(probs[:1], 4.0).max() < 0.7 < apply_temperature(probs[:1], 0.3).max()


# -- composite names -----------------------------------------------------------------------


def test_composite_names_resolve_with_the_inner_methods_config_and_modes():
    adamw_t = get_method("adamw+temperature")
    assert adamw_t is get_method("adamw+temperature")  # cached
    assert issubclass(adamw_t, TemperatureScaling) and adamw_t.inner is AdamW
    assert adamw_t.name == "adamw+temperature" and adamw_t.needs_validation
    assert adamw_t.Config is AdamWConfig
    assert tuple(m.name for m in adamw_t(train=SETTINGS).modes()) == ("adamw+temperature",)

    ivon_t = get_method("ivon+temperature")
    assert ivon_t.inner is IVON and ivon_t.Config is IVONConfig
    assert tuple(m.name for m in ivon_t(train=SETTINGS).modes()) == (
        "ivon+temperature",
        "ivon@mean+temperature",
    )
    config = ivon_t.make_config("winogrande_s", {"lr": "0.01"})  # IVON's per-task defaults apply
    assert (config.ess, config.lr) == (1e7, 0.01)
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        ivon_t.make_config(None, {"temperature": 2})

    alone = get_method("temperature")
    assert alone is TemperatureScaling and alone.inner is AdamW and alone.needs_validation
    assert tuple(m.name for m in alone(train=SETTINGS).modes()) == ("adamw+temperature",)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "adamw+ivon",
            r"'ivon' cannot follow '\+' \(in 'adamw\+ivon'\): only post-hoc methods such as temperature",
        ),
        ("adamw+temprature", "Did you mean 'temperature'"),
        ("adamx+temperature", "Did you mean 'adamw'"),
        ("+temperature", "METHOD\\+POSTHOC"),
        ("adamw+", "METHOD\\+POSTHOC"),
    ],
)
def test_bad_composites_say_what_is_wrong(name, message):
    with pytest.raises(RegistryError, match=message):
        get_method(name)


# -- on the tiny model ---------------------------------------------------------------------


@pytest.mark.parametrize("inner", ["adamw", "ivon"])
def test_composite_fits_a_temperature_per_mode_and_keeps_the_accuracy(tokenizer, tiny_model, inner):
    train, val, test = (
        _data(tokenizer, 16),
        _data(tokenizer, 12, offset=50),
        _data(tokenizer, 8, offset=100),
    )
    overrides = {"lr": 1e-3} if inner == "adamw" else {"test_samples": 2}
    cls = get_method(f"{inner}+temperature")
    with lora_classifier(tiny_model, ANSWER_IDS, LoraSettings(), seed=0) as clf:
        method = cls(cls.make_config(None, overrides), train=SETTINGS)
        with pytest.raises(ValueError, match="held-out data"):
            method.fit(clf, train, None)
        method.fit(clf, train, val)
        for inner_mode in method.inner_method.modes():
            raw = method.inner_method.predict_proba(test, inner_mode)
            scaled = method.predict_proba(test, f"{inner_mode}+temperature")
            assert torch.equal(scaled.argmax(-1), raw.argmax(-1))  # accuracy identical
            torch.testing.assert_close(scaled.sum(-1), torch.ones(len(test)))
            expected_t = fit_temperature(
                log_probs(method.inner_method.predict_proba(val, inner_mode)), val.labels
            )
            assert method.temperatures[inner_mode] == pytest.approx(expected_t, rel=1e-6)
    assert method.history and method.history == method.inner_method.history
    metrics = method.extra_metrics()
    expected_keys = (
        {"temperature"}
        if inner == "adamw"
        else {"temperature", "temperature_ivon_mean", "posterior_std_mean"}
    )
    assert expected_keys <= metrics.keys()
    assert all(MLFLOW_METRIC_NAME.match(k) for k in metrics)


def test_cli_runs_adamw_plus_temperature_on_the_tiny_model(tmp_path):
    run = bench_subprocess(
        [
            "--methods",
            "adamw+temperature",
            *TINY_RUN,
            "--output-dir",
            str(tmp_path / "out"),
        ],
        tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "adamw+temperature" in run.stdout and "arc_easy" in run.stdout
