"""run_cell, and a cell killed mid-training that resumes from its checkpoint."""

import pytest
import torch

from tests.cell.conftest import make_cell


def test_run_cell_scores_every_mode(tiny_model, toy_data):
    from bayeslora.cell import run_cell
    from bayeslora.metrics.registry import METRICS

    result = run_cell(make_cell("ivon", hparams={"test_samples": 2}), tiny_model, toy_data)
    assert [r.mode.name for r in result.modes] == ["ivon", "ivon@mean"]
    for r in result.modes:
        assert set(r.metrics) == set(METRICS)
        assert r.probs.shape == (12, 2)
    assert result.history and result.history[-1][0] == 12
    assert "posterior_std_mean" in result.extras


def test_run_cell_scores_only_the_modes_asked_for(tiny_model, toy_data):
    from bayeslora.cell import run_cell

    result = run_cell(make_cell("ivon"), tiny_model, toy_data, modes=["ivon@mean"])
    assert [r.mode.name for r in result.modes] == ["ivon@mean"]


def test_run_cell_returns_the_adapter_files(tiny_model, toy_data):
    from bayeslora.cell import run_cell

    result = run_cell(make_cell(steps=2), tiny_model, toy_data, save_adapter=True)
    assert {"adapter_model.safetensors", "adapter_config.json"} <= set(result.adapter)


class Interrupt(KeyboardInterrupt):
    pass


def _stop_at(step):
    def on_log(s, values):
        if s == step and "train_loss" in values:
            raise Interrupt

    return on_log


@pytest.mark.parametrize(
    "method, hparams",
    [
        ("adamw", {}),
        ("ivon", {"test_samples": 2}),
        ("mcdropout", {"test_samples": 2}),
        ("swa", {"swa_start": 0.5, "anneal_steps": 2}),
        ("swag", {"swa_start": 0.5, "anneal_steps": 2, "test_samples": 2, "max_rank": 2}),
        ("ivon+temperature", {"test_samples": 2}),
    ],
)
def test_a_resumed_cell_ends_bit_identical_to_an_uninterrupted_one(
    method, hparams, tiny_model, toy_data, tmp_path, monkeypatch
):
    import dataclasses

    import bayeslora.training.loop as loop
    from bayeslora.cell import run_cell
    from bayeslora.training.checkpoint import Checkpointer

    cell = make_cell(method, steps=12, hparams=hparams)
    if cell.method_cls.needs_validation:
        data = dataclasses.replace(toy_data, val=toy_data.eval)
    else:
        data = toy_data
    reference = run_cell(cell, tiny_model, data)

    checkpoints = Checkpointer(tmp_path / cell.key, every=4)
    with pytest.raises(Interrupt):  # killed after step 10: the newest checkpoint is step 8
        run_cell(cell, tiny_model, data, checkpointer=checkpoints, on_log=_stop_at(10))
    assert checkpoints.load().step == 8

    skipped = []
    real = loop.batches_forever
    monkeypatch.setattr(
        loop, "batches_forever", lambda d, s, skip=0: skipped.append(skip) or real(d, s, skip)
    )
    resumed = run_cell(cell, tiny_model, data, checkpointer=checkpoints)
    assert skipped == [8]  # it continued from the checkpoint, not from step 0
    for a, b in zip(reference.modes, resumed.modes, strict=True):
        assert torch.equal(a.probs, b.probs), a.mode.name
        assert a.metrics == b.metrics
    # the log before the checkpoint comes back with the resumed run
    assert [s for s, v in resumed.history if "train_loss" in v] == [
        s for s, v in reference.history if "train_loss" in v
    ]
    assert checkpoints.load().step == 12


def test_a_method_without_checkpoints_says_the_cell_restarts(tiny_model, toy_data, tmp_path):
    from bayeslora.cell import run_cell
    from bayeslora.training.checkpoint import Checkpointer

    cell = make_cell("ensemble", steps=2, hparams={"members": 2})
    result = run_cell(cell, tiny_model, toy_data, checkpointer=Checkpointer(tmp_path, every=1))
    assert any("restarts" in note for note in result.notes)
    assert not list(tmp_path.iterdir())


def test_non_finite_predictions_fail_the_cell(tiny_model, toy_data, monkeypatch):
    from bayeslora.cell import run_cell
    from bayeslora.methods.adamw import AdamW
    from bayeslora.training.loop import DivergedError

    monkeypatch.setattr(
        AdamW, "predict_proba", lambda self, data, mode=None: torch.full((12, 2), float("nan"))
    )
    with pytest.raises(DivergedError, match="adamw predictions became non-finite for 12 of 12"):
        run_cell(make_cell(steps=2), tiny_model, toy_data)
