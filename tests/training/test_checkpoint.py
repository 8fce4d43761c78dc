"""Checkpoints: safetensors + JSON round trips, only complete ones are loaded."""

import json

import pytest
import torch

from bayeslora.training.checkpoint import Checkpointer, pack, unpack


def test_pack_round_trips_optimizer_state():
    p = torch.nn.Parameter(torch.randn(3, 2))
    optimizer = torch.optim.AdamW([p], lr=0.1)
    p.grad = torch.randn(3, 2)
    optimizer.step()
    state = {"optimizer": optimizer.state_dict(), "t": (1, 2.5, None, "x"), "nan": float("nan")}
    tensors = {}
    meta = json.loads(json.dumps(pack(state, tensors)))  # what the JSON file holds
    back = unpack(meta, tensors)
    assert back["t"] == (1, 2.5, None, "x")
    assert list(back["optimizer"]["state"]) == [0]  # int keys stay ints
    for name in ("exp_avg", "exp_avg_sq", "step"):
        assert torch.equal(back["optimizer"]["state"][0][name], optimizer.state[p][name])
    assert back["optimizer"]["param_groups"] == optimizer.state_dict()["param_groups"]


def test_pack_refuses_what_json_cannot_hold():
    with pytest.raises(TypeError, match="cannot checkpoint a function"):
        pack({"f": lambda: 0}, {})


def test_only_the_newest_complete_checkpoint_is_kept_and_loaded(tmp_path):
    checkpoints = Checkpointer(tmp_path, every=2)
    assert checkpoints.load() is None
    checkpoints.save(2, {"w": torch.ones(2)})
    checkpoints.save(4, {"w": torch.full((2,), 4.0)})
    assert [d.name for d in tmp_path.iterdir()] == ["step-00000004"]
    (tmp_path / "step-00000006").mkdir()  # a save killed half-way: no files
    loaded = checkpoints.load()
    assert loaded.step == 4 and torch.equal(loaded.state["w"], torch.full((2,), 4.0))
    checkpoints.clear()
    assert not tmp_path.exists()


def test_due_every_n_steps_and_at_the_end():
    checkpoints = Checkpointer("unused", every=4)
    assert [s for s in range(1, 11) if checkpoints.due(s, last_step=10)] == [4, 8, 10]
    with pytest.raises(ValueError, match=">= 1"):
        Checkpointer("unused", every=0)


def test_no_pickle_in_a_checkpoint(tmp_path):
    Checkpointer(tmp_path, every=1).save(1, {"w": torch.ones(1)})
    files = sorted(p.name for p in (tmp_path / "step-00000001").iterdir())
    assert files == ["state.json", "state.safetensors"]
