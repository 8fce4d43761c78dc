"""Outputs beyond a cell's own metrics: per-sample predictions, the tau curve, and scores
on other tasks (out of distribution)."""

import pytest
import torch

from tests.cell.conftest import make_cell


def _ood_data(tokenizer):
    from bayeslora.tasks.encoding import TokenizedDataset
    from tests.methods.conftest import toy_examples

    return TokenizedDataset(toy_examples(10, seed=7), tokenizer, max_length=64)


def test_ivon_cell_stores_samples_tau_curve_and_ood_scores(tiny_model, toy_data, tokenizer):
    import dataclasses

    from bayeslora.cell import run_cell

    cell = dataclasses.replace(
        make_cell("ivon", hparams={"test_samples": 3}),
        tau_grid=(0.0, 0.5, 1.0),
        eval_tasks={"other": {"data": "toy-7"}},
    )
    data = dataclasses.replace(toy_data, ood={"other": _ood_data(tokenizer)})
    result = run_cell(cell, tiny_model, data)
    sampled, mean = result.modes
    assert sampled.samples.shape == (3, 12, 2) and mean.samples is None
    torch.testing.assert_close(sampled.samples.mean(0), sampled.probs)
    # tau 1 is the trained posterior (the mode itself), tau 0 the mean
    assert sampled.tau_probs.shape == (3, 12, 2) and mean.tau_probs is None
    torch.testing.assert_close(sampled.tau_probs[2], sampled.probs)
    torch.testing.assert_close(sampled.tau_probs[0], mean.probs)
    for mode in result.modes:
        (ood,) = mode.ood
        assert ood.task == "other" and ood.probs.shape == (10, 2)
        assert 0 <= ood.metrics["ood_auroc_entropy"] <= 1 and "accuracy" in ood.metrics
    assert "ood_auroc_mi" in sampled.ood[0].metrics  # disagreement needs samples
    assert "ood_auroc_mi" not in mean.ood[0].metrics


@pytest.mark.parametrize("method", ["mcdropout", "swag", "ensemble"])
def test_sampling_methods_keep_their_samples(method, tiny_model, toy_data):
    from bayeslora.cell import run_cell

    hparams = {"members": 2} if method == "ensemble" else {"test_samples": 2}
    if method == "swag":
        hparams["swa_start"] = 0.25
    result = run_cell(make_cell(method, steps=8, hparams=hparams), tiny_model, toy_data)
    sampled = result.modes[0]
    assert sampled.samples.shape == (2, 12, 2)
    torch.testing.assert_close(sampled.samples.mean(0), sampled.probs)
    assert all(m.samples is None for m in result.modes[1:])


def test_outputs_enter_the_key_only_when_asked_for():
    import dataclasses

    cell = make_cell("ivon")
    assert "outputs" not in cell.ingredients()  # keys of cells without them are unchanged
    with_tau = dataclasses.replace(cell, tau_grid=(0.0, 1.0))
    with_ood = dataclasses.replace(cell, eval_tasks={"obqa": {"eval_examples": "x"}})
    assert len({cell.key, with_tau.key, with_ood.key}) == 3
    assert with_tau.ingredients()["outputs"] == {"tau_grid": [0.0, 1.0]}
