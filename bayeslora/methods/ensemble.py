"""Deep ensemble of LoRA adapters (Lakshminarayanan et al. 2017) on one base model.

Member i is a fresh LoRA initialisation trained with AdamW under its own seed (so its
data order and dropout masks differ too); only its adapter state is kept. Prediction
loads each state in turn and averages the softmax. The base model is shared, so memory
is one model plus M adapters; training time is M AdamW runs (the harness times fit()).

Member 0 is the adapter the harness attached (initialised with the run's seed) trained
with the run's seed: a 1-member ensemble is exactly the AdamW run. Members i >= 1 get
seeds drawn from numpy's SeedSequence((seed, i)), so they repeat per run seed but do not
coincide with another run seed's members. After fit and after each prediction the model
holds member 0's adapter (what --save-adapters stores).

Checkpoints: an interrupted ensemble restarts its cell (``checkpointable = False``; the
harness says so in the run log). Each member is its own training run, so mid-cell
checkpoints would have to track the member index as well; not done.

LoRA ensembles are a baseline of Laplace-LoRA (Yang et al. 2024), SWAG-LoRA (Onal et al.
2024) and BLoB (Wang et al. 2024).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import torch

from bayeslora.methods.adamw import AdamW, AdamWConfig
from bayeslora.methods.base import AT_LEAST_ONE, Range
from bayeslora.methods.modes import ModeKind, PredictionMode
from bayeslora.methods.registry import register_method
from bayeslora.training.loop import predict_logits


@dataclass
class EnsembleConfig(AdamWConfig):
    """AdamW's settings for every member (lr 5e-5, no weight decay: the papers' MAP
    baseline) plus ``members`` (3): the ensemble size of the LoRA-ensemble baselines in
    Laplace-LoRA (Yang et al. 2024) and BLoB (Wang et al. 2024) (their baseline
    descriptions); SWAG-LoRA's ensemble evaluation combines 5."""

    members: int = 3

    ranges: ClassVar[dict[str, Range]] = {**AdamWConfig.ranges, "members": AT_LEAST_ONE}


@register_method("ensemble")
class DeepEnsemble(AdamW):
    """M independently initialised and trained LoRA adapters; averages their probabilities."""

    Config = EnsembleConfig
    checkpointable = False  # see the module docstring

    def prediction_modes(self) -> tuple[PredictionMode, ...]:
        return (PredictionMode(self.name, ModeKind.SAMPLED, samples=self.config.members),)

    def fit(self, model, train, val=None) -> None:
        if self.config.members < 1:
            raise ValueError(f"members must be >= 1, got {self.config.members}")
        self.model = model
        self.member_states: list[dict[str, torch.Tensor]] = []
        self.history = []
        for i in range(self.config.members):
            seed = self.member_seed(i)
            if i > 0:
                reset_lora(model, seed)
            # A fresh AdamW (and optimizer state) per member, on this member's seed.
            member = AdamW(
                self.config, train=replace(self.train_settings, seed=seed), on_log=self._logger(i)
            )
            member.fit(model, train, val)
            self.member_states.append(model.lora_state())
        model.load_lora_state(self.member_states[0])

    def member_seed(self, i: int) -> int:
        if i == 0:
            return self.train_settings.seed
        return int(np.random.SeedSequence((self.train_settings.seed, i)).generate_state(1)[0])

    def _logger(self, i: int):
        # Members log one after another on one step axis: member i's step s is i*steps + s.
        offset = i * self.train_settings.steps

        def log(step: int, record: dict[str, float]) -> None:
            record = {**record, "ensemble_member": float(i)}
            self.history.append({"step": offset + step, **record})
            if self.on_log:
                self.on_log(offset + step, record)

        return log

    @torch.no_grad()
    def member_proba(self, data) -> torch.Tensor:
        """Each member's probabilities, ``[M, N, K]``."""
        self.model.eval()
        batch_size = self.train_settings.eval_batch_size
        probs = []
        try:
            for state in self.member_states:
                self.model.load_lora_state(state)
                probs.append(predict_logits(self.model, data, batch_size).softmax(-1))
        finally:
            self.model.load_lora_state(self.member_states[0])
        return torch.stack(probs)

    def predict_proba(self, data, mode=None) -> torch.Tensor:
        return self.predict_samples(data, mode).mean(0)

    def predict_samples(self, data, mode=None) -> torch.Tensor:
        """Each member's probabilities, ``[members, N, K]``."""
        self._check_mode(mode)
        return self.member_proba(data)

    def extra_metrics(self) -> dict[str, float]:
        return {"members": float(self.config.members)}


@torch.no_grad()
def reset_lora(model, seed: int) -> None:
    """Re-initialise every LoRA layer in place, as peft does on creation (A random, B zero)."""
    from peft.tuners.lora import LoraLayer

    peft_config = model.peft_model.peft_config
    with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
        torch.manual_seed(seed)
        for module in model.peft_model.modules():
            if isinstance(module, LoraLayer):
                for adapter in module.lora_A:
                    module.reset_lora_parameters(adapter, peft_config[adapter].init_lora_weights)
