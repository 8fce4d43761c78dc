"""The cell key: equal for equal work, different for anything that changes the result."""

import dataclasses

import pytest

from tests.cell.conftest import make_cell


def test_the_same_cell_has_the_same_key():
    assert make_cell().key == make_cell().key
    assert len(make_cell().key) == 16


@pytest.mark.parametrize(
    "change",
    [
        {"seed": 1},
        {"method": "ivon"},
        {"steps": 13},
        {"hparams": {"lr": 1e-3}},
        {"batch_size": 2},
        {"grad_accum": 2},
        {"eval_batch_size": 4},
    ],
)
def test_a_change_that_changes_the_result_changes_the_key(change):
    assert make_cell(**change).key != make_cell().key


def test_lora_and_context_are_part_of_the_key():
    cell = make_cell()
    other_lora = dataclasses.replace(cell, lora=dataclasses.replace(cell.lora, r=4))
    other_data = dataclasses.replace(cell, context={"data": "other"})
    assert len({cell.key, other_lora.key, other_data.key}) == 3


def test_display_settings_are_not_part_of_the_key():
    assert make_cell(progress=True, log_every=5).key == make_cell().key


def test_ingredients_hold_everything_the_key_hashes():
    ingredients = make_cell(method="ivon").ingredients()
    assert ingredients["hparams"]["ess"] == 1e6
    assert ingredients["lora"]["r"] == 8 and ingredients["train"]["steps"] == 12
    assert ingredients["data"] == "toy" and ingredients["seed"] == 0


def test_modes_are_declared_as_data():
    from bayeslora.methods.modes import ModeKind

    modes = make_cell(method="ivon", hparams={"test_samples": 3}).modes()
    assert [(m.name, m.kind, m.samples) for m in modes] == [
        ("ivon", ModeKind.SAMPLED, 3),
        ("ivon@mean", ModeKind.MEAN, None),
    ]


def test_a_cell_refuses_a_training_seed_other_than_its_own():
    cell = make_cell()
    with pytest.raises(ValueError, match="training seed"):
        dataclasses.replace(cell, seed=3)
