"""SWAG: a Gaussian over the LoRA weights from the SWA snapshots (Maddox et al. 2019).

The snapshots SWA collects (same schedule, same code: SWAG subclasses SWA) also give a
diagonal second moment and a deviation matrix D of the last K snapshots, each column
θ_i − θ̄_i (Maddox et al. 2019, Algorithm 1). A sample is

    θ = θ_SWA + √scale · (Σ_diag^½ z1 + D z2 / √(K − 1)),   z1 ~ N(0, I_d), z2 ~ N(0, I_K)

which with scale = 1/2 is the paper's θ_SWA + (1/√2) Σ_diag^½ z1 + (1/√(2(K−1))) D z2,
a sample of N(θ_SWA, ½ (Σ_diag + D Dᵀ / (K − 1))) (Sec. 3). "swag" averages the softmax
over ``test_samples`` such samples; "swag@mean" predicts with θ_SWA (= SWA).
SWAG-LoRA (Onal et al. 2024) applies exactly this to the LoRA weights of LLMs; BLoB
(Wang et al. 2024) and Laplace-LoRA (Yang et al. 2024) are the other Bayesian-LoRA
benchmarks it is compared with.

Why written here rather than taken from a library: torch has SWA but not SWAG, and the
reference SWAG code (wjmaddox/swa_gaussian, copied by SWAG-LoRA) wraps a whole module;
only the adapter's tensors are kept here, as flat vectors.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch.optim.swa_utils import get_swa_multi_avg_fn

from bayeslora.methods.base import AT_LEAST_ONE, NON_NEGATIVE, Range
from bayeslora.methods.modes import ModeKind, PredictionMode
from bayeslora.methods.registry import register_method
from bayeslora.methods.swa import SWA, SWAConfig
from bayeslora.training.loop import predict_logits


@dataclass
class SWAGConfig(SWAConfig):
    """SWA's settings (snapshot schedule and learning rates, see :class:`SWAConfig`) plus:

    - ``max_rank`` (5): K, the number of last snapshots in the deviation matrix; 5 as
      SWAG-LoRA (``swag_max_num_models: 5``, fortuinlab/swag-lora conf/method/swag.yaml).
      The SWAG paper uses K = 20 over one snapshot per epoch; our SWA phase is a few
      hundred steps. 0 = diagonal only (SWAG-Diag); 1 is refused (the D term divides by
      K − 1).
    - ``test_samples`` (10): weight samples averaged per prediction; the same as the other
      sampling methods here (IVON, MC Dropout) for equal test-time cost. SWAG-LoRA's
      evaluation scripts use 15, the SWAG paper 30.
    - ``scale`` (0.5): multiplies the covariance; 0.5 is the paper's ½ (Sec. 3), the value
      SWAG-LoRA's swag.yaml gives for sampling with D ("True -> use 0.5 according to
      swa_gaussian"). 0 samples the mean.
    """

    max_rank: int = 5
    test_samples: int = 10
    scale: float = 0.5

    ranges: ClassVar[dict[str, Range]] = {
        **SWAConfig.ranges,
        "max_rank": NON_NEGATIVE,
        "test_samples": AT_LEAST_ONE,
        "scale": NON_NEGATIVE,
    }


@register_method("swag")
class SWAG(SWA):
    """SWA-Gaussian over the LoRA weights; predicts by averaging over weight samples."""

    Config = SWAGConfig
    min_snapshots = 2  # a variance needs two

    def prediction_modes(self) -> tuple[PredictionMode, ...]:
        return (
            PredictionMode(self.name, ModeKind.SAMPLED, samples=self.config.test_samples),
            PredictionMode(f"{self.name}@mean", ModeKind.MEAN),
        )

    def checkpoint_state(self) -> dict:
        return {
            **super().checkpoint_state(),
            "sq_state": self.sq_state,
            "deviations": list(self.deviations),
        }

    def load_checkpoint_state(self, state: dict) -> None:
        super().load_checkpoint_state(state)
        self.sq_state = state["sq_state"]
        self.deviations = deque(state["deviations"], maxlen=self.config.max_rank)

    def fit(self, model, train, val=None) -> None:
        c = self.config
        if c.max_rank < 0 or c.max_rank == 1:
            raise ValueError(f"max_rank must be 0 (diagonal only) or >= 2, got {c.max_rank}")
        if c.test_samples < 1:
            raise ValueError(f"test_samples must be >= 1, got {c.test_samples}")
        if c.scale < 0:
            raise ValueError(f"scale must be >= 0, got {c.scale}")
        self.sq_state = {
            n: torch.zeros_like(p, dtype=torch.float64) for n, p in model.lora_named_parameters()
        }
        self.deviations: deque[torch.Tensor] = deque(maxlen=c.max_rank)
        super().fit(model, train, val)

    @torch.no_grad()
    def collect(self, model) -> None:
        current = [p.detach().double() for p in model.lora_parameters()]
        second_moment = get_swa_multi_avg_fn()
        second_moment(list(self.sq_state.values()), [w * w for w in current], self.num_snapshots)
        super().collect(model)  # the mean (and the count) now include this snapshot
        if self.config.max_rank:
            deviation = [w - m for w, m in zip(current, self.swa_state.values(), strict=True)]
            self.deviations.append(_flat(deviation).float())

    def variance(self) -> torch.Tensor:
        """The diagonal Σ_diag = E[w²] − E[w]² over the snapshots, flat (float64)."""
        mean = _flat(self.swa_state.values())
        return (_flat(self.sq_state.values()) - mean**2).clamp(min=0)

    @torch.no_grad()
    def sample_state(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """One weight sample θ from the SWAG Gaussian, as an adapter state."""
        mean = _flat(self.swa_state.values())
        z1 = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        noise = self.variance().sqrt() * z1
        rank = len(self.deviations)
        if rank >= 2:
            deviations = torch.stack(list(self.deviations), dim=1).to(mean.dtype)  # [d, K]
            z2 = torch.randn(rank, generator=generator, device=mean.device, dtype=mean.dtype)
            noise = noise + deviations @ z2 / math.sqrt(rank - 1)
        theta, out, start = mean + math.sqrt(self.config.scale) * noise, {}, 0
        for name, like in self.swa_state.items():
            out[name] = theta[start : start + like.numel()].view_as(like)
            start += like.numel()
        return out

    def predict_proba(self, data, mode=None) -> torch.Tensor:
        mode = self._check_mode(mode)
        if mode.kind is ModeKind.MEAN:
            return super().predict_proba(data, mode)  # the model holds θ_SWA
        return self.predict_samples(data, mode).mean(0)

    def predict_samples(self, data, mode=None) -> torch.Tensor:
        """``test_samples`` weight samples' probabilities, ``[S, N, K]`` (θ_SWA: one)."""
        mode = self._check_mode(mode)
        if mode.kind is ModeKind.MEAN:
            return super().predict_samples(data, mode)
        model, batch_size = self.model, self.train_settings.eval_batch_size
        # A fixed generator: the same weight samples every time this is called.
        generator = torch.Generator(device=model.device).manual_seed(self.train_settings.seed)
        model.eval()
        samples = []
        try:
            for _ in range(self.config.test_samples):
                model.load_lora_state(self.sample_state(generator))
                samples.append(predict_logits(model, data, batch_size).softmax(-1))
        finally:
            model.load_lora_state(self.swa_state)
        return torch.stack(samples)

    def extra_metrics(self) -> dict[str, float]:
        return {
            **super().extra_metrics(),
            "swag_rank": float(len(self.deviations)),
            "swag_std_mean": self.variance().sqrt().mean().item(),
        }


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.flatten() for t in tensors])
