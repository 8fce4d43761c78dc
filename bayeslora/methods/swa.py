"""SWA: stochastic weight averaging of the LoRA adapter (Izmailov et al. 2018).

Train with AdamW on the shared linear schedule; after a fraction ``swa_start`` of the
steps, ``torch.optim.swa_utils.SWALR`` anneals the learning rate to ``swa_lr`` and holds
it there, and every ``collect_every`` steps the adapter weights join a running mean.
Predictions use that mean. Only the LoRA weights are averaged (a few MB even for a 7B
base), never a copy of the model. There is no BatchNorm in a transformer, so SWA's
``update_bn`` pass is not needed.

SWA is the mean of SWAG (``bayeslora.methods.swag``), which subclasses this class and
adds second moments to the same snapshot collection. SWAG-LoRA (Onal et al. 2024)
benchmarks both on LoRA-finetuned LLMs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch.optim.swa_utils import SWALR, get_swa_multi_avg_fn

from bayeslora.methods.adamw import AdamW, AdamWConfig
from bayeslora.methods.base import AT_LEAST_ONE, NON_NEGATIVE, Range
from bayeslora.methods.modes import ModeKind, PredictionMode
from bayeslora.methods.registry import register_method
from bayeslora.training.loop import predict_logits


@dataclass
class SWAConfig(AdamWConfig):
    """AdamW's settings (lr 5e-5, no weight decay: the papers' MAP baseline) plus:

    - ``swa_start`` (0.75): averaging starts after this fraction of the steps; the SWA
      paper's runs within one training budget train normally for ~75% of it and average
      over the rest (Izmailov et al. 2018, Sec. 3.2).
    - ``swa_lr`` (2.5e-5 = lr / 2): the learning rate of the SWA phase; the SWA authors'
      CIFAR settings use swa_lr = lr_init / 2 (0.1 -> 0.05, timgaripov/swa README).
    - ``anneal_steps`` (10): steps over which SWALR moves the learning rate from the
      schedule's value to ``swa_lr`` (SWALR's default of 10, in steps here: our choice).
    - ``anneal_strategy`` ("linear"): SWALR's "linear" or "cos"; SWAG-LoRA anneals
      linearly (fortuinlab/swag-lora, conf/method/swag.yaml).
    - ``collect_every`` (1): steps between snapshots. The papers collect once per epoch,
      but our budgets are a few hundred steps (1-2 epochs), so every step (our choice);
      raise it for long runs.
    """

    swa_start: float = 0.75
    swa_lr: float = 2.5e-5
    anneal_steps: int = 10
    anneal_strategy: str = "linear"
    collect_every: int = 1

    ranges: ClassVar[dict[str, Range]] = {
        **AdamWConfig.ranges,
        "swa_start": Range(0, 1, high_open=True),
        "swa_lr": NON_NEGATIVE,
        "anneal_steps": NON_NEGATIVE,
        "collect_every": AT_LEAST_ONE,
    }
    learning_rates: ClassVar[tuple[str, ...]] = ("lr", "swa_lr")


@register_method("swa")
class SWA(AdamW):
    """AdamW, then a running mean of the LoRA weights late in training; predicts with the mean."""

    Config = SWAConfig
    min_snapshots = 1  # SWAG needs two, for a variance

    def prediction_modes(self) -> tuple[PredictionMode, ...]:
        return (PredictionMode(self.name, ModeKind.MEAN),)  # the weight average

    def fit(self, model, train, val=None) -> None:
        c, steps = self.config, self.train_settings.steps
        if not 0 < c.swa_start < 1:
            raise ValueError(f"swa_start is a fraction of the steps in (0, 1), got {c.swa_start}")
        if c.collect_every < 1:
            raise ValueError(f"collect_every must be >= 1, got {c.collect_every}")
        self.start_step = max(1, int(c.swa_start * steps))
        expected = (steps - self.start_step) // c.collect_every
        if expected < self.min_snapshots:
            raise ValueError(
                f"{self.name} would collect {expected} snapshot(s) (steps={steps}, "
                f"swa_start={c.swa_start}, collect_every={c.collect_every}) but needs "
                f"{self.min_snapshots}; raise --steps, or lower swa_start or collect_every"
            )
        self.model = model
        self.num_snapshots = 0
        # float64: SWAG's variance is E[w²] − E[w]², which cancels badly in float32 when the
        # adapter weights barely move; the adapter is small, so this costs little.
        self.swa_state = {
            n: torch.zeros_like(p, dtype=torch.float64) for n, p in model.lora_named_parameters()
        }
        self.swa_scheduler = None
        self.optimizer = torch.optim.AdamW(
            model.lora_parameters(),
            lr=c.lr,
            weight_decay=c.weight_decay,
            betas=(c.beta1, c.beta2),
            eps=c.eps,
        )
        # One train_loop run with the SWA phase in after_step (SWALR and the snapshots): the
        # data order and dropout masks stay those of the AdamW run. Two train_loop calls
        # would restart both, and the second would still bring its own linear schedule.
        # The loop logs the optimizer's lr, which in the SWA phase is SWALR's.
        self.history = self.training_loop(
            model, train, self.optimizer, val, after_step=self._after_step
        )
        self.last_state = model.lora_state()  # the last iterate, kept for comparisons
        model.load_lora_state(self.swa_state)

    def _after_step(self, step: int) -> None:
        if step < self.start_step:
            return
        if self.swa_scheduler is None:
            # Anneals from the lr the linear schedule has reached to swa_lr.
            self.swa_scheduler = self._swalr()
        else:
            # The loop's linear schedule has just overwritten the lr, and SWALR computes its
            # next value from the one it set last: give that back before stepping it.
            for group, lr in zip(
                self.optimizer.param_groups, self.swa_scheduler.get_last_lr(), strict=True
            ):
                group["lr"] = lr
            if (step - self.start_step) % self.config.collect_every == 0:
                self.collect(self.model)
        self.swa_scheduler.step()

    def _swalr(self) -> SWALR:
        return SWALR(
            self.optimizer,
            swa_lr=self.config.swa_lr,
            anneal_epochs=self.config.anneal_steps,
            anneal_strategy=self.config.anneal_strategy,
        )

    def checkpoint_state(self) -> dict:
        scheduler = None
        if self.swa_scheduler is not None:  # anneal_func is a function: SWALR rebuilds it
            state = self.swa_scheduler.state_dict()
            scheduler = {k: v for k, v in state.items() if k != "anneal_func"}
        return {
            "swa_state": self.swa_state,
            "num_snapshots": self.num_snapshots,
            "swa_scheduler": scheduler,
        }

    def load_checkpoint_state(self, state: dict) -> None:
        self.swa_state = state["swa_state"]
        self.num_snapshots = state["num_snapshots"]
        self.swa_scheduler = None
        if state["swa_scheduler"] is not None:
            self.swa_scheduler = self._swalr()
            self.swa_scheduler.load_state_dict(state["swa_scheduler"])

    def _evaluator(self, val):
        # During training the average is not ready: validate the current iterate.
        if val is None:
            return None

        def evaluate() -> dict[str, float]:
            self.model.eval()
            probs = predict_logits(self.model, val, self.train_settings.eval_batch_size).softmax(-1)
            return self.score_validation(probs, val)

        return evaluate

    @torch.no_grad()
    def collect(self, model) -> None:
        """Add the current adapter weights to the running mean (SWAG adds moments)."""
        swa_update = get_swa_multi_avg_fn()  # the library's rule: mean += (w - mean) / (n + 1)
        current = [p.detach().double() for p in model.lora_parameters()]
        swa_update(list(self.swa_state.values()), current, self.num_snapshots)
        self.num_snapshots += 1

    def extra_metrics(self) -> dict[str, float]:
        return {"swa_snapshots": float(self.num_snapshots)}

    @classmethod
    def search_space(cls, trial) -> dict:
        return {
            "lr": trial.suggest_float("lr", 1e-5, 1e-2, log=True),  # as AdamW's
            "swa_lr": trial.suggest_float("swa_lr", 1e-6, 1e-2, log=True),
            "swa_start": trial.suggest_float("swa_start", 0.5, 0.9),
        }
