"""AdamW: the MAP baseline of the IVON-LoRA and Laplace-LoRA papers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from bayeslora.methods.base import (
    NON_NEGATIVE,
    POSITIVE,
    UNIT_OPEN_TOP,
    Method,
    MethodConfig,
    Range,
)
from bayeslora.methods.registry import register_method
from bayeslora.training.loop import predict_logits


@dataclass
class AdamWConfig(MethodConfig):
    """Defaults as the papers' baseline: lr 5e-5, no weight decay (linear decay comes
    from the shared loop)."""

    lr: float = 5e-5
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    ranges: ClassVar[dict[str, Range]] = {
        "lr": NON_NEGATIVE,
        "weight_decay": NON_NEGATIVE,
        "beta1": UNIT_OPEN_TOP,
        "beta2": UNIT_OPEN_TOP,
        "eps": POSITIVE,
    }
    learning_rates: ClassVar[tuple[str, ...]] = ("lr",)


@register_method("adamw")
class AdamW(Method):
    """MAP estimate of the LoRA weights with AdamW; predicts with the trained weights."""

    Config = AdamWConfig

    def fit(self, model, train, val=None) -> None:
        self.model = model
        optimizer = torch.optim.AdamW(
            model.lora_parameters(),
            lr=self.config.lr,
            weight_decay=self.config.weight_decay,
            betas=(self.config.beta1, self.config.beta2),
            eps=self.config.eps,
        )
        self.history = self.training_loop(model, train, optimizer, val)

    def predict_proba(self, data, mode=None) -> torch.Tensor:
        self._check_mode(mode)
        self.model.eval()
        return predict_logits(self.model, data, self.train_settings.eval_batch_size).softmax(-1)

    @classmethod
    def search_space(cls, trial) -> dict:
        # lr covers the papers' 5e-5 and the embedded preset's 2e-3 (bench/config.py)
        return {
            "lr": trial.suggest_float("lr", 1e-5, 1e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-1, log=True),
        }
