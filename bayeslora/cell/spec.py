"""A cell: one (task, method, seed) with every setting resolved, and its key.

The key is a hash of everything that decides what the cell computes: the method and
its hyperparameters after presets, task defaults, overrides and tuning; the LoRA and
training settings; the seed; and the context (which model weights, which exact train
and eval examples, the prompt protocol, the harness's and libraries' versions). Two
runs that would compute the same thing have the same key, so a finished cell can be
found in the tracking store and skipped; anything that changes the result changes it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bayeslora.methods.base import MethodConfig
from bayeslora.methods.modes import PredictionMode
from bayeslora.methods.registry import get_method
from bayeslora.models.classifier import LoraSettings
from bayeslora.training.settings import TrainSettings

# Bumped when the meaning of a key's ingredients changes, so old results are not reused.
KEY_SCHEMA = 2  # 2: scoring named letters | choices (was "answer_tokens")
KEY_LENGTH = 16  # hex digits of the sha256 kept: 64 bits
# TrainSettings fields that change how a run is shown, not what it computes.
NOT_IN_KEY = ("progress", "log_every")


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no spaces; enums as their values."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class Cell:
    """One unit of work. ``context`` holds the model, data, protocol and code identity."""

    task: str
    method: str  # a registry name, composites included ("ivon+temperature")
    seed: int
    config: MethodConfig  # resolved hyperparameters
    lora: LoraSettings
    train: TrainSettings
    context: Mapping[str, Any] = field(default_factory=dict)
    # what a reader of its runs should know (not part of the key): bench.plan fills it
    notes: tuple[str, ...] = ()
    # Outputs beyond the metrics of its own task, each part of the key when asked for (a
    # cell finished without them has not computed them): the tasks its adapter is also
    # scored on (out of distribution; name -> the data identity), and the posterior
    # scales of the tau curve (methods that scale their posterior's variance only).
    eval_tasks: Mapping[str, Any] = field(default_factory=dict)
    tau_grid: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.train.seed != self.seed:
            raise ValueError(
                f"cell seed {self.seed} differs from its training seed {self.train.seed}"
            )

    @property
    def label(self) -> str:
        return f"{self.method}/{self.task}/seed{self.seed}"

    def ingredients(self) -> dict[str, Any]:
        """Everything the key hashes; logged with every result of the cell."""
        train = {k: v for k, v in dataclasses.asdict(self.train).items() if k not in NOT_IN_KEY}
        return {
            "schema": KEY_SCHEMA,
            "task": self.task,
            "method": self.method,
            "seed": self.seed,
            "hparams": self.config.to_dict(),
            "lora": dataclasses.asdict(self.lora),
            "train": train,
            **self.context,
            **self._outputs(),
        }

    def _outputs(self) -> dict[str, Any]:
        outputs = {}
        if self.eval_tasks:
            outputs["eval_tasks"] = dict(self.eval_tasks)
        if self.tau_grid:
            outputs["tau_grid"] = list(self.tau_grid)
        return {"outputs": outputs} if outputs else {}  # absent: keys as before

    @functools.cached_property
    def key(self) -> str:
        digest = hashlib.sha256(canonical_json(self.ingredients()).encode()).hexdigest()
        return digest[:KEY_LENGTH]

    def modes(self) -> tuple[PredictionMode, ...]:
        """The prediction modes a finished cell has a result for."""
        return self.method_cls(self.config, train=self.train).modes()

    @property
    def method_cls(self) -> type:
        return get_method(self.method)
