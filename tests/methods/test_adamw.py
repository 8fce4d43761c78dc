import torch

from bayeslora.methods.adamw import AdamW, AdamWConfig
from bayeslora.training.settings import TrainSettings

from .conftest import ANSWER_IDS


def test_paper_defaults():
    config = AdamWConfig()
    assert (config.lr, config.weight_decay) == (5e-5, 0.0)


def test_fit_lowers_the_training_loss_and_predicts_probabilities(toy_classifier, toy_train):
    with toy_classifier(dropout=0.0, seed=0) as clf:
        method = AdamW(
            AdamWConfig(lr=1e-2), train=TrainSettings(steps=30, batch_size=8, progress=False)
        )
        method.model = clf
        untrained = method.predict_proba(toy_train)
        method.fit(clf, toy_train)
        probs = method.predict_proba(toy_train)
    assert probs.shape == (len(toy_train), len(ANSWER_IDS))
    torch.testing.assert_close(probs.sum(-1), torch.ones(len(toy_train)), rtol=0, atol=1e-6)
    rows = torch.arange(len(toy_train))
    nll_before = -untrained[rows, toy_train.labels].log().mean()
    nll_after = -probs[rows, toy_train.labels].log().mean()
    assert nll_after < nll_before - 0.05
    assert [h["step"] for h in method.history if "train_loss" in h] == [10, 20, 30]


def test_same_seed_same_result(toy_classifier, toy_train, toy_eval):
    results = []
    for _ in range(2):
        with toy_classifier(dropout=0.1, seed=3) as clf:
            method = AdamW(
                AdamWConfig(lr=1e-2),
                train=TrainSettings(steps=4, batch_size=4, seed=3, progress=False),
            )
            method.fit(clf, toy_train)
            results.append(method.predict_proba(toy_eval))
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)


def test_config_from_strings_checks_names_and_types():
    assert AdamW.make_config("arc_easy", {"lr": "1e-4"}).lr == 1e-4
    import pytest

    with pytest.raises(ValueError, match="unknown hyperparameter"):
        AdamW.make_config(None, {"learning_rate": 1})
    with pytest.raises(ValueError, match="expected float"):
        AdamW.make_config(None, {"lr": "fast"})
