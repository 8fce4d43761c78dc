"""MC Dropout (Gal & Ghahramani 2016) on the LoRA adapters.

Training is plain AdamW with LoRA dropout on (the harness's ``--lora-dropout``, default
0.1 as the LoRA papers). Prediction keeps dropout on and averages the softmax over
``test_samples`` stochastic passes.

Which dropout layers are on at test time: ONLY the LoRA dropout layers (the ones on the
adapters' inputs, ``classifier.lora_dropout_modules()``); the rest of the model stays in
eval mode, as the MC-dropout baselines of the LoRA papers (Laplace-LoRA, Yang et al.
2024; SWAG-LoRA, Onal et al. 2024; BLoB, Wang et al. 2024). ``extra_metrics`` records
how many layers that is and their rate.

The masks (in training and at test time) are :class:`bayeslora.models.dropout.LoraDropout`'s:
the same distribution as ``nn.Dropout``'s at a fraction of its cost on a CPU, with the rate
rounded to a multiple of 2**-16 (0.1 becomes 0.100006; ``mc_dropout_p_effective``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from bayeslora.methods.adamw import AdamW, AdamWConfig
from bayeslora.methods.base import AT_LEAST_ONE, Range
from bayeslora.methods.modes import ModeKind, PredictionMode
from bayeslora.methods.registry import register_method
from bayeslora.models.dropout import effective_rate, sampling_lora_dropout
from bayeslora.training.loop import predict_logits


@dataclass
class MCDropoutConfig(AdamWConfig):
    """AdamW's settings (lr 5e-5, no weight decay: the papers' MAP baseline) plus:

    ``test_samples`` (10): stochastic passes averaged per prediction, the sample count of
    the MC-dropout baselines in Laplace-LoRA (Yang et al. 2024) and BLoB (Wang et al. 2024)
    (their baseline descriptions), and IVON's own default (the embedded preset lowers IVON's
    to 4 for time; README). SWAG-LoRA's dropout evaluation uses 15.
    The dropout rate is not a field here: it is the harness's LoRA setting
    (``--lora-dropout``, default 0.1, the LoRA rate of the IVON-LoRA and Laplace-LoRA papers).
    """

    test_samples: int = 10

    ranges: ClassVar[dict[str, Range]] = {**AdamWConfig.ranges, "test_samples": AT_LEAST_ONE}


@register_method("mcdropout")
class MCDropout(AdamW):
    """AdamW with LoRA dropout; predicts by averaging stochastic LoRA-dropout passes."""

    Config = MCDropoutConfig

    @classmethod
    def check_lora(cls, lora) -> None:
        if lora.dropout <= 0:
            raise ValueError(
                f"method '{cls.name}' samples the LoRA dropout masks, and --lora-dropout is "
                f"{lora.dropout}: every sample would be identical; use --lora-dropout 0.1 "
                "(the papers' rate) or more"
            )

    def prediction_modes(self) -> tuple[PredictionMode, ...]:
        # "@map": dropout off, the same weights: the paired deterministic baseline.
        return (
            PredictionMode(self.name, ModeKind.SAMPLED, samples=self.config.test_samples),
            PredictionMode(f"{self.name}@map", ModeKind.POINT),
        )

    def fit(self, model, train, val=None) -> None:
        if self.config.test_samples < 1:
            raise ValueError(f"test_samples must be >= 1, got {self.config.test_samples}")
        self.dropout_modules = model.lora_dropout_modules()
        # peft replaces a p = 0 dropout by nn.Identity, so "no modules" also means p = 0.
        if not self.dropout_modules or any(m.p <= 0 for m in self.dropout_modules):
            raise ValueError(
                "MC Dropout needs --lora-dropout > 0 (e.g. 0.1); "
                "p = 0 would make every sample identical"
            )
        super().fit(model, train, val)

    def predict_proba(self, data, mode=None) -> torch.Tensor:
        mode = self._check_mode(mode)
        if mode.kind is ModeKind.POINT:
            return super().predict_proba(data, mode)
        return self.predict_samples(data, mode).mean(0)

    def predict_samples(self, data, mode=None) -> torch.Tensor:
        """Each stochastic pass's probabilities, ``[test_samples, N, K]``."""
        mode = self._check_mode(mode)
        if mode.kind is ModeKind.POINT:
            return super().predict_samples(data, mode)
        model, batch_size = self.model, self.train_settings.eval_batch_size
        model.eval()
        # A generator of its own, seeded: the same masks on every call, and nobody else's
        # random stream disturbed.
        generator = torch.Generator(device=model.device).manual_seed(self.train_settings.seed)
        with sampling_lora_dropout(self.dropout_modules, generator):
            return torch.stack(
                [
                    predict_logits(model, data, batch_size).softmax(-1)
                    for _ in range(self.config.test_samples)
                ]
            )

    @classmethod
    def search_space(cls, trial) -> dict:
        # The tuner's shared LoRA space starts dropout at 0, which MC Dropout refuses.
        return {
            **super().search_space(trial),
            "lora_dropout": trial.suggest_float("lora_dropout", 0.05, 0.3),
        }

    def extra_metrics(self) -> dict[str, float]:
        return {
            "mc_dropout_layers_on": float(len(self.dropout_modules)),
            "mc_dropout_p": float(self.dropout_modules[0].p),
            "mc_dropout_p_effective": effective_rate(self.dropout_modules[0].p),
        }
