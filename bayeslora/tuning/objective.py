"""One trial: propose values, train on the tuning split's train part, score its held-out part.

Read top to bottom: claim a slot in the study's budget, propose the method's and the LoRA
values, open the trial's MLflow run, fit with fresh adapters while each evaluation is
reported to optuna (which may prune), then score the primary prediction mode on the
validation part. Pruning and divergence leave ``fit`` as exceptions; ``lora_classifier``
unloads the adapters on the way out, so the shared base model is clean for the next trial.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna

from bayeslora.cell import Cell, CellData, run_cell
from bayeslora.metrics.registry import get_metric
from bayeslora.models.classifier import LoraSettings
from bayeslora.training.loop import DivergedError
from bayeslora.training.settings import TrainSettings
from bayeslora.tuning.space import SearchSpace, lora_from_values
from bayeslora.tuning.study import FAIL_REASON, admit
from bayeslora.tuning.tracking import TRIAL_STATE, trial_tags

# The objectives: the metric of each value returned to optuna. Directions: the registry's.
OBJECTIVES: dict[str, tuple[str, ...]] = {
    "nll": ("nll",),  # a proper scoring rule: accuracy and calibration in one
    "accuracy-ece": ("accuracy", "ece"),  # the Pareto front
}


def objective_metrics(name: str) -> list[str]:
    """The metric names of objective ``name``, one per value returned to optuna."""
    try:
        return list(OBJECTIVES[name])
    except KeyError:
        raise ValueError(
            f"unknown objective {name!r}; choose one of {sorted(OBJECTIVES)}"
        ) from None


def objective_directions(name: str) -> list[str]:
    """``"minimize"``/``"maximize"`` per value of objective ``name``, for optuna."""
    return [get_metric(m).optuna_direction for m in objective_metrics(name)]


HPARAMS_ATTR = "bayeslora.hparams"  # user attrs: the values the trial trained with
LORA_ATTR = "bayeslora.lora"
METRICS_ATTR = "bayeslora.val_metrics"


@dataclass
class TuningData:
    """The tuning split of one task (datasets of ``tasks/encoding.py``). Trials train on ``train`` and are
    scored on ``val``; ``val`` is also what the loop evaluates for pruning. A method that
    needs validation data to fit (a temperature, a prior) gets ``fit_val`` instead, carved
    out of ``train`` as the final runs carve theirs, and trains on the rest, ``fit_train``:
    it never sees the data it is scored on."""

    train: Any
    val: Any
    fit_train: Any
    fit_val: Any


@dataclass
class Objective:
    """``objective(trial)`` for ``study.optimize``: validation NLL, or (accuracy, ECE)."""

    method_cls: type
    task_name: str
    space: SearchSpace
    data: TuningData
    base_model: Callable[[], Any]  # loads the shared base model on first use
    answer_ids: list[int] | None  # letters scoring's answer tokens; None for choices
    hparams: dict[str, Any]  # the user's fixed values (--hp, config file)
    lora: LoraSettings  # the run's LoRA settings; tuned values replace some of them
    train: TrainSettings
    objective: str
    n_trials: int
    tracker: Any
    study_name: str

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        # Past the target (another worker took the last slot): Surplus, nothing trains.
        stored = admit(trial, self.n_trials)
        hparams, lora_values = self.space.propose(trial)
        config = self.method_cls.make_config(self.task_name, {**self.hparams, **hparams})
        lora = lora_from_values(self.lora, lora_values)
        trial.set_user_attr(HPARAMS_ATTR, hparams)
        trial.set_user_attr(LORA_ATTR, lora_values)
        params = {
            **trial.params,
            "hparams": config.to_dict(),
            "lora": dataclasses.asdict(lora),
            "train": dataclasses.asdict(self.train),
        }
        tags = trial_tags(self.study_name, self.method_cls.name, self.task_name, stored)
        name = f"{self.method_cls.name}/{self.task_name}/trial{trial.number}"

        pruned = None
        with self.tracker.run(name, nested=True, params=params, tags=tags):
            try:
                metrics = self._fit_and_score(trial, config, lora)
            except optuna.TrialPruned as err:
                pruned = err
                self.tracker.set_tags({TRIAL_STATE: "PRUNED"})
            except DivergedError as err:
                # Counts as a tried (bad) point; the study goes on. The MLflow run ends FAILED.
                trial.set_user_attr(FAIL_REASON, str(err))
                self.tracker.set_tags({TRIAL_STATE: "FAIL", FAIL_REASON: str(err)})
                raise
            else:
                names = objective_metrics(self.objective)
                values = [metrics[m] for m in names]
                trial.set_user_attr(METRICS_ATTR, metrics)
                self.tracker.log_metrics(
                    {f"val_{k}": v for k, v in metrics.items()}, self.train.steps
                )
                self.tracker.log_metrics(
                    {f"objective_{m}": v for m, v in zip(names, values, strict=True)}
                )
                self.tracker.set_tags({TRIAL_STATE: "COMPLETE"})
        if pruned is not None:
            raise pruned
        return values[0] if len(values) == 1 else tuple(values)

    def _fit_and_score(self, trial, config, lora: LoraSettings) -> dict[str, float]:
        """One cell on the tuning split (the same code as the bench's), scored in the
        method's primary mode on the split's validation part."""
        single = len(objective_metrics(self.objective)) == 1

        def on_log(step: int, metrics: dict[str, float]) -> None:
            self.tracker.log_metrics(metrics, step=step)
            # Optuna prunes single-objective studies only (trial.report refuses the others).
            if single and "val_nll" in metrics:
                trial.report(metrics["val_nll"], step)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"val_nll {metrics['val_nll']:.4g} at step {step}")

        cell = Cell(self.task_name, self.method_cls.name, self.train.seed, config, lora, self.train)
        if self.method_cls.needs_validation:  # fits on its own held-out part, scored on val
            train, fit_val = self.data.fit_train, self.data.fit_val
        else:
            train, fit_val = self.data.train, self.data.val
        data = CellData(train, self.data.val, self.answer_ids, val=fit_val)
        primary = cell.modes()[0].name
        result = run_cell(cell, self.base_model(), data, on_log=on_log, modes=[primary])
        return result.modes[0].metrics
