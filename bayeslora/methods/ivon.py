"""IVON: variational learning of the LoRA weights (Cong et al. 2024, Shen et al. 2024).

The optimizer keeps a diagonal Gaussian posterior over the adapter weights at the cost
of AdamW; predictions average the softmax over posterior samples ("ivon") or use the
posterior mean ("ivon@mean").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from bayeslora.methods.base import (
    AT_LEAST_ONE,
    NON_NEGATIVE,
    POSITIVE,
    UNIT_OPEN_TOP,
    Method,
    MethodConfig,
    Range,
)
from bayeslora.methods.modes import ModeKind, PredictionMode
from bayeslora.methods.registry import register_method
from bayeslora.optim import IVON as IVONOptimizer
from bayeslora.training.loop import DivergedError, predict_logits


@dataclass
class IVONConfig(MethodConfig):
    """Defaults are the IVON-LoRA paper's LoRA settings; ``ess`` (λ) and ``hess_init``
    (v0) default to its ARC values and are set per task from ``task_defaults``."""

    lr: float = 0.03
    ess: float = 1e6
    hess_init: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.99999
    weight_decay: float = 0.0
    clip_radius: float = 1e-3
    rescale_lr: bool = False
    mc_samples: int = 1  # posterior samples per training step
    test_samples: int = 10  # posterior samples averaged by the "ivon" prediction
    tau: float = 1.0  # test-time scale of the posterior variance (0 = mean, 1 = posterior)

    ranges: ClassVar[dict[str, Range]] = {
        "lr": NON_NEGATIVE,
        "ess": POSITIVE,  # the prior precision is weight_decay * ess, the noise 1/(ess * h)
        "hess_init": POSITIVE,
        "beta1": UNIT_OPEN_TOP,
        "beta2": UNIT_OPEN_TOP,
        "weight_decay": NON_NEGATIVE,
        "clip_radius": POSITIVE,
        "mc_samples": AT_LEAST_ONE,
        "test_samples": AT_LEAST_ONE,
        "tau": NON_NEGATIVE,
    }
    learning_rates: ClassVar[tuple[str, ...]] = ("lr",)


@register_method("ivon")
class IVON(Method):
    """IVON-trained LoRA; predicts by posterior averaging ("ivon") and at the mean ("ivon@mean")."""

    Config = IVONConfig
    scales_posterior = True  # tau: the test-time scale of the posterior variance
    # ess and hess_init per task, from the IVON-LoRA paper's code.
    task_defaults = {
        "arc_easy": {"ess": 1e6, "hess_init": 1e-3},
        "arc_challenge": {"ess": 1e6, "hess_init": 1e-3},
        "obqa": {"ess": 1e6, "hess_init": 1e-3},
        "winogrande_s": {"ess": 1e7, "hess_init": 3e-4},
        "boolq": {"ess": 1e7, "hess_init": 3e-4},
        "winogrande_m": {"ess": 1e8, "hess_init": 3e-4},
    }

    def prediction_modes(self) -> tuple[PredictionMode, ...]:
        return (
            PredictionMode(self.name, ModeKind.SAMPLED, samples=self.config.test_samples),
            PredictionMode(f"{self.name}@mean", ModeKind.MEAN),
        )

    def fit(self, model, train, val=None) -> None:
        c = self.config
        self.model = model
        self.optimizer = IVONOptimizer(
            model.lora_parameters(),
            lr=c.lr,
            ess=c.ess,
            hess_init=c.hess_init,
            beta1=c.beta1,
            beta2=c.beta2,
            weight_decay=c.weight_decay,
            mc_samples=c.mc_samples,
            clip_radius=c.clip_radius,
            rescale_lr=c.rescale_lr,
        )
        # The optimizer state (Hessian, momentum, step count) is what a checkpoint keeps.
        self.history = self.training_loop(
            model,
            train,
            self.optimizer,
            val,
            sample_context=lambda: self.optimizer.sampled_params(train=True),
            samples_per_batch=c.mc_samples,
            after_step=self._check_hessian,
        )

    def _check_hessian(self, step: int) -> None:
        """A non-finite Hessian estimate would only show later, as a NaN loss; name it now.
        One fused max-abs over all tensors per step (NaN propagates through it)."""
        hess = [
            self.optimizer.state[p]["hess"]
            for g in self.optimizer.param_groups
            for p in g["params"]
        ]
        if torch.isfinite(torch.nn.utils.get_total_norm(hess, norm_type=math.inf)):
            return
        values = torch.cat([h.flatten() for h in hess])
        bad = ~torch.isfinite(values)
        raise DivergedError(
            f"IVON Hessian estimate became {values[bad][0].item()} at step {step} "
            f"({int(bad.sum())} of {len(values)} entries non-finite)"
        )

    def predict_proba(self, data, mode=None) -> torch.Tensor:
        mode = self._check_mode(mode)
        if mode.kind is ModeKind.MEAN:
            self.model.eval()
            return predict_logits(self.model, data, self.train_settings.eval_batch_size).softmax(-1)
        return self.predict_samples(data, mode).mean(0)

    def predict_samples(self, data, mode=None) -> torch.Tensor:
        """``test_samples`` posterior samples' probabilities, ``[S, N, K]`` (the mean: one)."""
        mode = self._check_mode(mode)
        if mode.kind is ModeKind.MEAN:
            return super().predict_samples(data, mode)
        return self.predict_samples_at(data, self.config.tau)

    def predict_samples_at(self, data, tau: float) -> torch.Tensor:
        """:meth:`predict_samples` with the posterior variance scaled by ``tau`` (0: the mean
        ``test_samples`` times, 1: the posterior); what the tau curve of the reports reads."""
        self.model.eval()
        batch_size = self.train_settings.eval_batch_size
        if tau == 0:  # every sample is the mean: compute it once
            probs = predict_logits(self.model, data, batch_size).softmax(-1)
            return probs.expand(self.config.test_samples, *probs.shape)
        # A fixed generator: the same posterior samples every time this is called.
        generator = torch.Generator(device=self.model.device).manual_seed(self.train_settings.seed)
        samples = []
        for _ in range(self.config.test_samples):
            with self.optimizer.sampled_params(train=False, tau=tau, generator=generator):
                samples.append(predict_logits(self.model, data, batch_size).softmax(-1))
        return torch.stack(samples)

    def extra_metrics(self) -> dict[str, float]:
        std = torch.cat([s.flatten() for s in self.optimizer.posterior_std()])
        return {"posterior_std_mean": std.mean().item(), "posterior_std_max": std.max().item()}

    @classmethod
    def search_space(cls, trial) -> dict:
        # lr covers the paper's 0.03 and the embedded preset's 0.3 (bench/config.py)
        return {
            "lr": trial.suggest_float("lr", 3e-3, 3.0, log=True),
            "ess": trial.suggest_float("ess", 1e4, 1e9, log=True),
            "hess_init": trial.suggest_float("hess_init", 1e-5, 1e-1, log=True),
        }
