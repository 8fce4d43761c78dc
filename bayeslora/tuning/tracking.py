"""The MLflow side of tuning (optuna-integration's MLflowCallback is being removed).

Layout: bench run (the runner's) > study run per (method, task) > trial run per trial.
- Trial run: the trial's parameters (plus the full hparams/lora/train settings), every
  training log and evaluation as metrics with their step, the final validation metrics
  and ``objective_*`` value(s); tags ``bayeslora.trial_number``, ``bayeslora.trial_state``
  (COMPLETE, PRUNED, FAIL) and ``bayeslora.fail_reason`` for a diverged trial.
- Study run: the study's definition and settings, the tuning split, best parameters
  (``best.*`` params, ``best_value``), trial counts, the importance of each parameter
  (``importance.*``), and artifacts: trials.json, importances.json, pareto_front.json
  (multi-objective), plots/ (see plots.py).
All carry ``bayeslora.study`` (the study name), so every trial of a study is one query
away, whichever worker or session ran it.
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from bayeslora.tracking.schema import KIND_TAG, METHOD_TAG, STUDY, TASK_TAG, TRIAL
from bayeslora.tuning.study import SURPLUS, Census

STUDY_TAG = "bayeslora.study"
TRIAL_STATE = "bayeslora.trial_state"
TRIAL_NUMBER = "bayeslora.trial_number"
PED_ANOVA_NOTE = "PedAnovaImportanceEvaluator computes"  # its direction warning: handled


def study_tags(study_name: str, method: str, task: str, worker: str) -> dict[str, str]:
    return {
        KIND_TAG: STUDY,
        STUDY_TAG: study_name,
        METHOD_TAG: method,
        TASK_TAG: task,
        "bayeslora.worker": worker,  # "main" (then retrains) or "tune-only"
    }


def trial_tags(study_name: str, method: str, task: str, trial: FrozenTrial) -> dict[str, str]:
    tags = {
        KIND_TAG: TRIAL,
        STUDY_TAG: study_name,
        METHOD_TAG: method,
        TASK_TAG: task,
        TRIAL_NUMBER: str(trial.number),
        TRIAL_STATE: "RUNNING",
    }
    retry_of = trial.system_attrs.get("failed_trial")  # set by RetryHeartbeatStaleTrialCallback
    if retry_of is not None:
        tags["bayeslora.retry_of"] = str(retry_of)
    return tags


def trial_summary(trial: FrozenTrial) -> dict[str, Any]:
    return {
        "number": trial.number,
        "state": trial.state.name,
        "values": trial.values,
        "params": trial.params,
        "duration_s": trial.duration.total_seconds() if trial.duration else None,
        **{k: v for k, v in trial.user_attrs.items() if k.startswith("bayeslora.")},
    }


def importance_targets(study: optuna.Study, objective_names: list[str]) -> dict[str, Any]:
    """{objective: target for optuna's importance functions}. Its default evaluator
    (PED-ANOVA) explains what makes a target *low*, so maximised objectives are negated."""
    if len(objective_names) == 1:
        return {objective_names[0]: None}
    targets = {}
    for i, (name, direction) in enumerate(zip(objective_names, study.directions, strict=True)):
        sign = -1.0 if direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
        targets[name] = lambda t, i=i, sign=sign: sign * t.values[i]
    return targets


def param_importances(study: optuna.Study, objective_names: list[str]) -> dict[str, dict]:
    """{objective: {param: importance}}; empty where it cannot be computed (it needs two
    completed trials and a parameter that varies between them)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    names = {n for t in complete for n in t.params}
    varying = sorted(n for n in names if len({repr(t.params.get(n)) for t in complete}) > 1)
    if len(complete) < 2 or not varying:
        return {}
    result = {}
    for name, target in importance_targets(study, objective_names).items():
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=PED_ANOVA_NOTE)
                result[name] = optuna.importance.get_param_importances(
                    study, target=target, params=varying
                )
        except Exception as err:  # a summary statistic must never fail the tuning
            warnings.warn(f"parameter importances for {name}: {err!r}", stacklevel=2)
    return result


def log_study_summary(
    tracker, study: optuna.Study, objective_names: list[str], best: FrozenTrial | None
) -> None:
    """Counts, best parameters, importances and the trial table, on the active (study) run."""
    trials = [t for t in study.get_trials(deepcopy=False) if SURPLUS not in t.user_attrs]
    census = Census.of(trials)
    tracker.log_metrics(
        {
            "n_trials_counted": census.done,
            "n_trials_complete": census.complete,
            "n_trials_pruned": census.pruned,
            "n_trials_failed": census.failed,
        }
    )
    tracker.log_dict([trial_summary(t) for t in trials], "trials.json")
    if best is not None:
        tracker.log_params({f"best.{k}": v for k, v in best.params.items()})
        tracker.set_tags({"bayeslora.best_trial": best.number})
        tracker.log_metrics(
            {f"best_{m}": v for m, v in zip(objective_names, best.values, strict=True)}
        )
    if len(objective_names) > 1:
        front = [trial_summary(t) for t in study.best_trials]
        tracker.log_dict(front, "pareto_front.json")
        tracker.log_metrics({"pareto_front_size": len(front)})
    importances = param_importances(study, objective_names)
    if importances:
        tracker.log_dict(importances, "importances.json")
        for name, values in importances.items():
            prefix = "importance." if len(objective_names) == 1 else f"importance.{name}."
            tracker.log_metrics({prefix + p: v for p, v in values.items()})
