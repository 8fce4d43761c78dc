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


SWA_LATE = {"swa_start": 0.5, "anneal_steps": 2}  # the SWA phase starts after step 6


@pytest.mark.parametrize(
    "method, hparams, train, stop",
    [
        ("adamw", {}, {}, 10),
        ("adamw", {}, {"grad_accum": 2, "eval_every": 3}, 10),
        ("ivon", {"test_samples": 2}, {}, 10),
        ("ivon", {"test_samples": 2, "mc_samples": 2}, {"grad_accum": 2, "eval_every": 3}, 10),
        ("mcdropout", {"test_samples": 2}, {}, 10),
        ("swa", SWA_LATE, {}, 10),  # checkpoint at 8: inside the SWA phase
        ("swa", SWA_LATE, {}, 6),  # checkpoint at 4: before it
        ("swag", {**SWA_LATE, "test_samples": 2, "max_rank": 2}, {}, 10),
        ("ivon+temperature", {"test_samples": 2}, {}, 10),
    ],
)
def test_a_resumed_cell_ends_bit_identical_to_an_uninterrupted_one(
    method, hparams, train, stop, tiny_model, toy_data, tmp_path, monkeypatch
):
    import dataclasses

    import bayeslora.training.loop as loop
    from bayeslora.cell import run_cell
    from bayeslora.training.checkpoint import Checkpointer

    cell = make_cell(method, steps=12, hparams=hparams, **train)
    if cell.method_cls.needs_validation or train.get("eval_every"):
        data = dataclasses.replace(toy_data, val=toy_data.eval)
    else:
        data = toy_data
    reference = run_cell(cell, tiny_model, data)

    checkpoints = Checkpointer(tmp_path / cell.key, every=4)
    with pytest.raises(Interrupt):  # killed at a logged step after the newest checkpoint
        run_cell(cell, tiny_model, data, checkpointer=checkpoints, on_log=_stop_at(stop))
    saved = checkpoints.load().step
    assert saved == stop // 4 * 4

    skipped = []
    real = loop.batches_forever
    monkeypatch.setattr(
        loop, "batches_forever", lambda d, s, skip=0: skipped.append(skip) or real(d, s, skip)
    )
    checkpoints = Checkpointer(tmp_path / cell.key, every=4)  # as a new process makes it
    resumed = run_cell(cell, tiny_model, data, checkpointer=checkpoints)
    # it continued from the checkpoint (micro-batches consumed), not from step 0
    assert skipped == [saved * cell.train.grad_accum]
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


def test_a_plugin_that_declares_plain_names_gets_names(tiny_model, toy_data):
    from bayeslora.cell import run_cell
    from bayeslora.methods.adamw import AdamW
    from bayeslora.methods.registry import register_method, unregister_method

    seen = []

    @register_method("plainmodes")
    class PlainModes(AdamW):
        def prediction_modes(self):
            return ("plainmodes", "plainmodes@half")

        def predict_proba(self, data, mode=None):
            seen.append(mode)
            probs = super().predict_proba(data)
            return (probs + 0.5) / 2 if mode == "plainmodes@half" else probs

    try:
        cell = make_cell("plainmodes", steps=2)
        result = run_cell(cell, tiny_model, toy_data)
    finally:
        unregister_method("plainmodes")
    assert seen == ["plainmodes", "plainmodes@half"]
    assert [r.mode.name for r in result.modes] == ["plainmodes", "plainmodes@half"]


def test_only_the_first_training_loop_of_a_fit_checkpoints(tmp_path):
    from bayeslora.training.checkpoint import Checkpointer

    checkpoints = Checkpointer(tmp_path, every=1)
    assert checkpoints.claim() and not checkpoints.claim()
