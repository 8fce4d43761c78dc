"""The zero-shot baseline: the base model as it is, without any training.

The harness attaches fresh LoRA adapters as for every method; peft initialises B = 0, so
the adapted model computes exactly what the base model does, and this method predicts with
it unchanged. A results table with a ``pretrained`` row shows what finetuning adds. It runs
through the same cell, store, resume and reports as the trained methods; under the letters
protocol it shows whether the model can read the lettered format at all, under choices
scoring what it knows zero-shot.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bayeslora.methods.base import Method, MethodConfig
from bayeslora.methods.registry import register_method
from bayeslora.training.loop import predict_logits


@dataclass
class PretrainedConfig(MethodConfig):
    """No hyperparameters: nothing is trained."""


@register_method("pretrained")
class Pretrained(Method):
    """No training: the base model's own predictions (LoRA attached with B = 0)."""

    Config = PretrainedConfig
    trains = False

    def fit(self, model, train, val=None) -> None:
        self.model = model
        # Fresh adapters output zero; predictions would not be the base model's otherwise.
        for name, param in model.lora_named_parameters():
            if "lora_B" in name and param.abs().max().item() != 0:
                raise ValueError(f"pretrained expects untrained adapters, but {name} is not zero")

    def predict_proba(self, data, mode=None) -> torch.Tensor:
        self._check_mode(mode)
        self.model.eval()
        return predict_logits(self.model, data, self.train_settings.eval_batch_size).softmax(-1)
