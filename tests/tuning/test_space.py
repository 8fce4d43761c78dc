"""Search spaces: the method's proposal, the shared LoRA part, and the user's overrides."""

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from bayeslora.methods.adamw import AdamW
from bayeslora.methods.ivon import IVON
from bayeslora.models.classifier import LoraSettings
from bayeslora.tuning.space import LORA_SPACE, SearchSpace, lora_from_values, parse_search_space

METHODS = {"ivon": IVON, "adamw": AdamW}


def _space(raw=None, method=IVON, hparams=None):
    overrides = parse_search_space(raw, METHODS)[method.name]
    return SearchSpace.build(method, "arc_easy", hparams or {}, LoraSettings(), overrides)


def _propose(space, seed=0, n=8):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    proposals = []
    for _ in range(n):
        trial = study.ask()
        proposals.append(space.propose(trial))
        study.tell(trial, 0.0)
    return proposals


def test_method_space_plus_the_shared_lora_space():
    hparams, lora = _propose(_space())[0]
    assert set(hparams) == {"lr", "ess", "hess_init"}
    assert set(lora) == set(LORA_SPACE) == {"lora_rank", "lora_alpha", "lora_dropout"}
    assert lora["lora_rank"] in (2, 4, 8, 16)
    settings = lora_from_values(LoraSettings(), lora)
    assert (settings.r, settings.alpha, settings.dropout) == (
        lora["lora_rank"],
        lora["lora_alpha"],
        lora["lora_dropout"],
    )


def test_user_entries_replace_add_and_remove():
    raw = {
        "ivon": {
            # YAML reads 1e5 as the string "1e5": accepted and converted
            "ess": {"type": "float", "low": "1e5", "high": 1e9, "log": True},
            "lora_rank": {"type": "categorical", "choices": [4, "8"]},
            "mc_samples": {"type": "int", "low": 1, "high": 3},
            "lr": None,
        },
        "all": {"lora_dropout": None, "weight_decay": {"type": "float", "low": 0, "high": 0.1}},
    }
    space = _space(raw)
    for hparams, lora in _propose(space):
        assert 1e5 <= hparams["ess"] <= 1e9
        assert lora["lora_rank"] in (4, 8)
        assert hparams["mc_samples"] in (1, 2, 3)
        assert 0 <= hparams["weight_decay"] <= 0.1  # "all" applies to methods that have it
        assert "lr" not in hparams and "lora_dropout" not in lora
        assert 1e-5 <= hparams["hess_init"] <= 1e-1  # the method's own proposal stays
    described = space.describe()
    assert set(described) == {
        "ess",
        "hess_init",
        "lora_rank",
        "lora_alpha",
        "mc_samples",
        "weight_decay",
    }
    assert '"low": 100000.0' in described["ess"]
    assert space.overrides["lora_rank"] == CategoricalDistribution([4, 8])


def test_describe_is_stable_and_changes_with_the_space():
    assert _space().describe() == _space().describe()
    narrower = _space({"ivon": {"ess": {"type": "float", "low": 1e5, "high": 1e6, "log": True}}})
    assert narrower.describe() != _space().describe()


def test_parsed_distributions():
    parsed = parse_search_space(
        {
            "ivon": {
                "hess_init": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
                "beta1": {"type": "float", "low": 0.8, "high": 0.95, "step": 0.05},
                "test_samples": {"type": "int", "low": 2, "high": 32, "log": True},
                "rescale_lr": {"type": "categorical", "choices": ["true", False]},
            }
        },
        METHODS,
    )["ivon"]
    assert parsed["hess_init"] == FloatDistribution(1e-5, 1e-2, log=True)
    assert parsed["beta1"] == FloatDistribution(0.8, 0.95, step=0.05)
    assert parsed["test_samples"] == IntDistribution(2, 32, log=True)
    assert parsed["rescale_lr"] == CategoricalDistribution([True, False])
    assert parse_search_space(None, METHODS) == {"ivon": {}, "adamw": {}}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"swa": {}}, r"method\(s\) \['swa'\] that are not in --methods"),
        ({"ivon": [1, 2]}, "search_space.ivon must map hyperparameter names"),
        ({"ivon": {"bogus": None}}, r"search_space.ivon.bogus: 'bogus' is not a hyperparameter"),
        ({"all": {"bogus": None}}, "no selected method has a hyperparameter 'bogus'"),
        ({"ivon": {"ess": {"type": "normal"}}}, "type float, int or categorical"),
        ({"ivon": {"ess": 3.0}}, "type float, int or categorical"),
        ({"ivon": {"ess": {"type": "float", "low": 1}}}, "ess: low and high are required"),
        ({"ivon": {"ess": {"type": "float", "low": 1, "high": 2, "lg": 1}}}, r"unknown key\(s\)"),
        ({"ivon": {"ess": {"type": "float", "low": 5, "high": 1}}}, "search_space.ivon.ess"),
        ({"ivon": {"ess": {"type": "float", "low": 0, "high": 1, "log": True}}}, "ess"),
        ({"ivon": {"ess": {"type": "float", "low": 1, "high": 2, "log": "yes"}}}, "log must be"),
        (
            {"ivon": {"ess": {"type": "float", "low": "big", "high": 2}}},
            "ess=.big.: expected float",
        ),
        ({"ivon": {"mc_samples": {"type": "float", "low": 1, "high": 3}}}, "use type int"),
        ({"ivon": {"mc_samples": {"type": "int", "low": 1.5, "high": 3}}}, "not a whole number"),
        ({"ivon": {"rescale_lr": {"type": "int", "low": 0, "high": 1}}}, "use type categorical"),
        ({"ivon": {"lora_rank": {"type": "categorical", "choices": []}}}, "non-empty list"),
        ({"ivon": {"lora_rank": {"type": "categorical", "choices": [0, 4]}}}, "rank must be >= 1"),
        ({"ivon": {"lora_dropout": {"type": "float", "low": 0, "high": 1.5}}}, "dropout"),
    ],
)
def test_errors_name_the_entry(raw, message):
    with pytest.raises(ValueError, match=message):
        parse_search_space(raw, METHODS)


def test_removed_name_gives_the_method_code_the_run_value():
    class Dependent(IVON):
        @classmethod
        def search_space(cls, trial):
            ess = trial.suggest_float("ess", 1e4, 1e9, log=True)
            return {"ess": ess, "hess_init": 1.0 / ess}  # uses ess even if not tuned

    Dependent.name = "ivon"
    space = _space({"ivon": {"ess": None}}, method=Dependent, hparams={"ess": 1e7})
    hparams, _ = _propose(space, n=1)[0]
    assert hparams == {"hess_init": 1e-7}
