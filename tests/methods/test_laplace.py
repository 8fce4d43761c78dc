"""Laplace-LoRA: the Hessian against a closed form, the predictive on the tiny LLM, every
option, the optional extra, and a CLI run."""

import sys

import pytest
import torch
from torch import nn

from bayeslora.methods.laplace import LaplaceConfig, LaplaceLoRA, _loader, fit_laplace
from bayeslora.methods.registry import get_method
from bayeslora.models.classifier import LoraSettings, lora_classifier
from bayeslora.tasks.encoding import TokenizedDataset
from bayeslora.tasks.spec import Example
from bayeslora.training.settings import TrainSettings
from tests.cli_helpers import TINY_RUN, bench_subprocess

pytest.importorskip("laplace")

ANSWER_IDS = [330, 389]  # " A", " B"
SETTINGS = TrainSettings(steps=8, batch_size=4, progress=False, eval_batch_size=8)
CHEAP = {"lr": 1e-3, "n_samples": 500, "grid_size": 4}  # keep MC and grid search small


def _data(tokenizer, n=16, offset=0):
    examples = [
        Example(f"ex{i}", f"Question {i}: the right letter is {'AB'[i % 2]}.\nAnswer:", i % 2, 2)
        for i in range(offset, offset + n)
    ]
    return TokenizedDataset(examples, tokenizer, max_length=64)


def _method(**overrides) -> LaplaceLoRA:
    return LaplaceLoRA(LaplaceLoRA.make_config(None, {**CHEAP, **overrides}), train=SETTINGS)


def _functorch_leftovers(model: nn.Module) -> list[str]:
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    return [n for n, t in tensors if torch._C._functorch.is_functorch_wrapped_tensor(t)]


# -- (1) the Hessian of a linear softmax head has a closed form ----------------------------


class _LogisticRegression(nn.Module):
    """Fixed features (mean token embedding) and a linear map, the only trainable weights.

    Shaped like AnswerTokenClassifier where our Laplace code touches it: ``forward(input_ids,
    attention_mask)``, ``device`` and the weights under ``peft_model``.
    """

    def __init__(self, vocab_size: int, dim: int = 3, num_classes: int = 3):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            embed = nn.Embedding(vocab_size, dim).requires_grad_(False)
            head = nn.Linear(dim, num_classes, bias=False)
            nn.init.normal_(head.weight, std=2.0)  # far from uniform predictions
        self.peft_model = nn.ModuleDict({"embed": embed, "head": head})

    @property
    def device(self):
        return self.peft_model["head"].weight.device

    def features(self, input_ids, attention_mask):
        mask = attention_mask.unsqueeze(-1).float()
        return (self.peft_model["embed"](input_ids) * mask).sum(1) / mask.sum(1)

    def forward(self, input_ids, attention_mask):
        return self.peft_model["head"](self.features(input_ids, attention_mask))


def _closed_form_ggn(model, data):
    """sum_n (diag(p_n) - p_n p_n^T) kron x_n x_n^T, for W flattened row-major ([K, d])."""
    from bayeslora.tasks.encoding import collate

    batch = collate([data[i] for i in range(len(data))], data.pad_token_id)
    with torch.no_grad():
        x = model.features(batch["input_ids"], batch["attention_mask"])
        p = model(batch["input_ids"], batch["attention_mask"]).softmax(-1)
    g = torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)
    return sum(torch.kron(g[n], torch.outer(x[n], x[n])) for n in range(len(x)))


@pytest.mark.parametrize(("structure", "n"), [("diag", 10), ("kron", 1)])
def test_hessian_equals_the_closed_form_on_a_linear_head(tokenizer, structure, n):
    # diag is exact for any data; K-FAC is exact for a single example.
    data = TokenizedDataset(
        [Example(f"e{i}", f"word{i} and more words {i * 7}", i % 3, 3) for i in range(n)],
        tokenizer,
        32,
    )
    model = _LogisticRegression(len(tokenizer))
    config = LaplaceConfig(hessian_structure=structure, prior_method="fixed", prior_precision=0.5)
    la, _ = fit_laplace(model, data, config, batch_size=4)  # two batches for diag: they must add up

    expected = _closed_form_ggn(model, data)
    assert la.n_params == 9  # only the head: the embedding is frozen
    if structure == "diag":
        torch.testing.assert_close(la.H, expected.diagonal(), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(
            la.posterior_precision, expected.diagonal() + 0.5, rtol=1e-4, atol=1e-6
        )
    else:
        torch.testing.assert_close(la.H_facs.to_matrix(), expected, rtol=1e-4, atol=1e-6)


# -- (2)-(4) on the tiny LLM ---------------------------------------------------------------


def test_predictive_spread_shrinks_as_the_prior_precision_grows(tokenizer, tiny_model):
    data = _data(tokenizer, 8)
    with lora_classifier(tiny_model, ANSWER_IDS, LoraSettings(), seed=0) as clf:
        method = _method(prior_method="fixed", link_approx="probit")
        method.fit(clf, data)
        map_probs = method.predict_proba(data, "laplace@map")
        batch = next(iter(_loader(data, 8)))
        variances, distances = [], []
        for prior in (1e-2, 1.0, 1e4):
            method.la.prior_precision = prior
            js, _ = method.la.backend.jacobians(batch)
            variances.append(
                method.la.functional_variance(js).diagonal(dim1=-2, dim2=-1).mean().item()
            )
            probs = method.predict_proba(data, "laplace")
            torch.testing.assert_close(probs.sum(-1), torch.ones(len(data)))
            distances.append((probs - map_probs).abs().max().item())
    assert all(v > 0 for v in variances)
    assert variances[0] > variances[1] > variances[2]
    assert distances[0] > distances[1] > distances[2]
    assert distances[2] < 1e-3  # a tight prior leaves the MAP prediction


@pytest.mark.parametrize(
    "options",
    [
        {"hessian_structure": "kron", "prior_method": "marglik", "link_approx": "probit"},
        {"hessian_structure": "diag", "prior_method": "gridsearch", "link_approx": "mc"},
        {
            "hessian_structure": "kron",
            "prior_method": "gridsearch",
            "link_approx": "mc",
            "prior_structure": "layerwise",
        },
        {
            "hessian_structure": "diag",
            "prior_method": "marglik",
            "link_approx": "mc",
            "prior_structure": "diag",
        },
    ],
    ids=lambda o: "-".join(o.values()),
)
def test_every_option_fits_and_predicts(tokenizer, tiny_model, options):
    train, val, test = (
        _data(tokenizer),
        _data(tokenizer, 8, offset=100),
        _data(tokenizer, 6, offset=200),
    )
    with lora_classifier(tiny_model, ANSWER_IDS, LoraSettings(), seed=0) as clf:
        method = _method(**options)
        method.fit(clf, train, val)
        assert tuple(m.name for m in method.modes()) == ("laplace", "laplace@map")
        probs = {m.name: method.predict_proba(test, m) for m in method.modes()}
        for p in probs.values():
            assert p.shape == (6, 2) and (p >= 0).all()
            torch.testing.assert_close(p.sum(-1), torch.ones(6))
        torch.testing.assert_close(
            method.predict_proba(test, "laplace"), probs["laplace"]
        )  # left ready
        assert not _functorch_leftovers(tiny_model)  # the Jacobians left the model as it was
        n_lora = sum(p.numel() for p in clf.lora_parameters())
    metrics = method.extra_metrics()
    for key in (
        "laplace_fit_s",
        "laplace_prior_s",
        "laplace_predict_s",
        "laplace_fit_peak_rss_mb",
        "laplace_posterior_mb",
        "laplace_prior_precision",
        "laplace_log_marglik",
    ):
        assert torch.isfinite(torch.tensor(metrics[key])), key
    assert metrics["laplace_posterior_mb"] > 0
    assert metrics["laplace_n_params"] == n_lora
    if options["prior_method"] == "gridsearch":
        assert 1e-3 * 0.999 <= metrics["laplace_prior_precision"] <= 1e4 * 1.001  # on the grid


def test_mc_prediction_is_reproducible_and_matches_probit_roughly(tokenizer, tiny_model):
    data = _data(tokenizer, 8)
    with lora_classifier(tiny_model, ANSWER_IDS, LoraSettings(), seed=0) as clf:
        method = _method(prior_method="fixed", prior_precision=0.1, n_samples=20_000)
        method.fit(clf, data)
        mc = method.predict_proba(data)
        torch.testing.assert_close(method.predict_proba(data), mc)  # a seeded generator
        method.config.link_approx = "probit"
        torch.testing.assert_close(method.predict_proba(data), mc, atol=0.03, rtol=0)


def test_bf16_base_keeps_the_posterior_in_float32(tokenizer, tiny_model):
    data = _data(tokenizer, 8)
    with lora_classifier(tiny_model.to(torch.bfloat16), ANSWER_IDS, LoraSettings(), seed=0) as clf:
        method = _method(link_approx="probit")
        method.fit(clf, data)
        torch.testing.assert_close(method.predict_proba(data).sum(-1), torch.ones(8))
    assert method.la.prior_precision.dtype == torch.float32
    assert method.la.prior_precision.item() != pytest.approx(
        1.0
    )  # marglik moved it (not stuck in bf16)


def test_gridsearch_without_held_out_data_fails_before_training(tokenizer, tiny_model):
    data = _data(tokenizer, 8)
    with lora_classifier(tiny_model, ANSWER_IDS, LoraSettings(), seed=0) as clf:
        before = clf.lora_state()
        with pytest.raises(ValueError, match="--eval-every"):
            _method(prior_method="gridsearch").fit(clf, data, None)
        assert all(torch.equal(before[n], p) for n, p in clf.lora_named_parameters())


def test_validation_during_training_scores_the_map(tokenizer, tiny_model):
    data = _data(tokenizer, 8)
    settings = TrainSettings(steps=4, batch_size=4, progress=False, eval_batch_size=8, eval_every=2)
    with lora_classifier(tiny_model, ANSWER_IDS, LoraSettings(), seed=0) as clf:
        method = LaplaceLoRA(LaplaceLoRA.make_config(None, CHEAP), train=settings)
        method.fit(clf, data, data)
    assert [h["step"] for h in method.history if "val_nll" in h] == [2, 4]


def test_config_names_the_options():
    with pytest.raises(
        ValueError, match=r"hessian_structure='full' is not one of \['kron', 'diag'\]"
    ):
        LaplaceLoRA.make_config(None, {"hessian_structure": "full"})
    with pytest.raises(ValueError, match="link_approx"):
        LaplaceLoRA.make_config(None, {"link_approx": "bridge"})
    config = LaplaceLoRA.make_config("arc_easy", {"lr": "1e-4", "prior_method": "gridsearch"})
    assert (config.lr, config.prior_method, config.hessian_structure) == (
        1e-4,
        "gridsearch",
        "kron",
    )
    assert config.to_dict()["link_approx"] == "mc"  # plain strings, logged as such
    assert not LaplaceLoRA.needs_validation


# -- (5) the optional extra and the CLI -----------------------------------------------------


def test_missing_laplace_torch_fails_before_any_model_is_loaded(monkeypatch, capsys, tmp_path):
    from bayeslora._optional import OptionalDependencyError
    from bayeslora.bench import cli, prepare, runner

    monkeypatch.setitem(sys.modules, "laplace", None)  # what an uninstalled package looks like

    def no_loading(*args, **kwargs):
        raise AssertionError(
            "a model or tokenizer was loaded before the missing extra was reported"
        )

    monkeypatch.setattr(runner, "load_causal_lm", no_loading)
    monkeypatch.setattr(prepare, "load_tokenizer", no_loading)

    assert get_method("laplace") is LaplaceLoRA  # listing and lookup work without the extra
    with pytest.raises(OptionalDependencyError, match=r"pip install 'bayeslora\[laplace\]'"):
        get_method("laplace+temperature").make_config(None, {})
    for methods in ("laplace", "adamw,laplace+temperature"):
        code = cli.main(
            [
                "--methods",
                methods,
                "--model",
                "tiny-random-llama",
                "--quick",
                "--output-dir",
                str(tmp_path),
                "--no-progress",
            ]
        )
        err = capsys.readouterr().err
        assert code == 2, err
        assert "Laplace-LoRA" in err and "pip install 'bayeslora[laplace]'" in err
    assert not list(tmp_path.iterdir())  # nothing started, not even the MLflow store


def test_cli_runs_laplace_on_the_tiny_model(tmp_path):
    run = bench_subprocess(
        [
            "--methods",
            "laplace",
            *TINY_RUN,
            "--output-dir",
            str(tmp_path / "out"),
            "--hp",
            "laplace.n_samples=2000",
        ],
        tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "laplace@map" in run.stdout and "arc_easy" in run.stdout


def test_search_space_covers_prior_method_and_hessian_structure():
    import optuna

    from bayeslora.methods.laplace import LaplaceLoRA

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = [LaplaceLoRA.search_space(study.ask()) for _ in range(30)]
    assert {v["hessian_structure"] for v in seen} == {"kron", "diag"}
    assert {v["prior_method"] for v in seen} == {"marglik", "fixed"}
    assert all(("prior_precision" in v) == (v["prior_method"] == "fixed") for v in seen)
    for values in seen[:5]:
        LaplaceLoRA.make_config("arc_easy", values)  # every proposal is a valid config


def test_jacobian_batch_size_does_not_change_predictions(tiny_model, tokenizer):
    """Prediction runs one question at a time by default (memory); batching must agree."""
    from tests.methods.conftest import toy_examples

    data = TokenizedDataset(toy_examples(8), tokenizer, max_length=64)
    probs = []
    for jacobian_batch_size in (1, 4):
        with lora_classifier(tiny_model, ANSWER_IDS, LoraSettings(dropout=0.0), seed=0) as clf:
            config = LaplaceConfig(link_approx="probit", jacobian_batch_size=jacobian_batch_size)
            method = LaplaceLoRA(config, train=SETTINGS)
            method.fit(clf, data)
            probs.append(method.predict_proba(data, "laplace"))
    torch.testing.assert_close(probs[0], probs[1], atol=1e-5, rtol=1e-4)
