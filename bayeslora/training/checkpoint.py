"""Mid-training checkpoints as safetensors plus JSON: no pickles, loadable by anyone.

A checkpoint is one directory ``step-<N>`` holding ``state.safetensors`` (every tensor:
the adapter, the optimizer's state such as IVON's Hessian and momentum, RNG states, a
method's own state such as SWA's running mean) and ``state.json`` (everything else,
with each tensor replaced by a reference into the safetensors file). It is written to a
temporary directory and renamed into place, so a kill while saving leaves the previous
checkpoint intact; only the newest is kept.

:func:`pack` and :func:`unpack` turn any nest of dicts (keys: str or int, as optimizer
state dicts have), lists, tuples, tensors and JSON scalars into that pair and back.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"


def pack(obj: Any, tensors: dict[str, Tensor]) -> Any:
    """A JSON-able copy of ``obj``; each tensor moves to ``tensors`` under a new key."""
    if isinstance(obj, Tensor):
        key = str(len(tensors))
        # clone: safetensors refuses tensors that share storage (views of one buffer)
        tensors[key] = obj.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": key, "device": str(obj.device)}
    if isinstance(obj, dict):
        return {"__dict__": [[k, pack(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [pack(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [pack(v, tensors) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):  # strict JSON has no inf or NaN
        return {"__float__": repr(obj)}
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot checkpoint a {type(obj).__name__}: {obj!r}")


def unpack(obj: Any, tensors: dict[str, Tensor]) -> Any:
    """The inverse of :func:`pack`; tensors come back on the device they were saved from."""
    if isinstance(obj, list):
        return [unpack(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            device = obj["device"]
            tensor = tensors[obj["__tensor__"]]
            return tensor.to(device) if device != "cpu" else tensor
        if "__tuple__" in obj:
            return tuple(unpack(v, tensors) for v in obj["__tuple__"])
        if "__float__" in obj:
            return float(obj["__float__"])
        return {k: unpack(v, tensors) for k, v in obj["__dict__"]}
    return obj


def rng_state() -> dict[str, Any]:
    """The global torch RNG states (CPU, and every CUDA device once CUDA is in use)."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"].cpu())
    if "cuda" in state:
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


@dataclass
class Checkpoint:
    step: int
    state: dict[str, Any]


class Checkpointer:
    """Saves a training run's state every ``every`` steps into ``directory``; loads the newest."""

    def __init__(self, directory: str | Path, every: int):
        if every < 1:
            raise ValueError(f"checkpoint interval must be >= 1 step, got {every}")
        self.directory = Path(directory)
        self.every = every
        self.claimed = False

    def claim(self) -> bool:
        """True for the first training loop that asks, False after: a checkpoint belongs to
        one loop, and a fit that runs two (two phases) must not resume the second from the
        first's final state."""
        first, self.claimed = not self.claimed, True
        return first

    def due(self, step: int, last_step: int) -> bool:
        # The last step too: a run killed while predicting then need not train again.
        return step % self.every == 0 or step == last_step

    def save(self, step: int, state: dict[str, Any]) -> None:
        from safetensors.torch import save_file

        tensors: dict[str, Tensor] = {}
        meta = {"step": step, "state": pack(state, tensors)}
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.directory))
        try:
            save_file(tensors, tmp / STATE_TENSORS)
            (tmp / STATE_JSON).write_text(json.dumps(meta, allow_nan=False))
            target = self.directory / f"step-{step:08d}"
            if target.exists():  # the same step again: move the old one aside first, so
                aside = self.directory / f".old-{target.name}"  # that a kill keeps one
                shutil.rmtree(aside, ignore_errors=True)
                target.rename(aside)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        for old in [*self._complete(), *self.directory.glob(".old-*")]:
            if old != target:
                shutil.rmtree(old, ignore_errors=True)

    def load(self) -> Checkpoint | None:
        """The newest complete checkpoint, or None."""
        from safetensors.torch import load_file

        for leftover in self.directory.glob(".tmp-*"):  # a save killed half-way
            shutil.rmtree(leftover, ignore_errors=True)
        complete = self._complete()
        if not complete:
            return None
        newest = complete[-1]
        meta = json.loads((newest / STATE_JSON).read_text())
        tensors = load_file(newest / STATE_TENSORS)
        return Checkpoint(meta["step"], unpack(meta["state"], tensors))

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def _complete(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(
            d
            for d in self.directory.glob("step-*")
            if (d / STATE_TENSORS).is_file() and (d / STATE_JSON).is_file()
        )
