"""How bayeslora lays its runs out in an MLflow store, defined once for every writer and
reader (the bench, the tuner, the Ray executor, the reports).

A run's kind is its ``bayeslora.kind`` tag; a result run (kind ``result`` or ``ood``) also
has its cell's key, method, prediction mode, task and seed as tags, and the artifacts below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where predictions are read, not by every tag reader
    import torch

# -- tags -------------------------------------------------------------------------------
KIND_TAG = "bayeslora.kind"
CELL_TAG = "bayeslora.cell"  # the cell's key
METHOD_TAG = "bayeslora.method"
MODE_TAG = "bayeslora.mode"  # the prediction mode, e.g. ivon@mean
TASK_TAG = "bayeslora.task"  # the task trained on
SEED_TAG = "bayeslora.seed"
EVAL_TASK_TAG = "bayeslora.eval_task"  # on out-of-distribution runs: the task scored on
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag on a nested run
ERROR_TAG = "bayeslora.error"  # why a run failed (the exception, or the process that died)
NOTES_TAG = "bayeslora.notes"  # a result's notes, "; "-joined (e.g. a fallback taken)
THREADS_TAG = "bayeslora.threads"  # torch threads of a run in a shared process

# -- run kinds (values of KIND_TAG) -------------------------------------------------------
BENCH = "bench"  # one invocation of python -m bayeslora.bench: the parent of its results
RESULT = "result"  # one prediction mode of a cell, scored on the task it was trained on
OOD = "ood"  # one prediction mode of a cell, scored on another task (--eval-tasks)
TUNING = "tuning"  # the parent of one method's tuning studies in a bench invocation
STUDY = "study"  # one optuna study (method x task)
TRIAL = "trial"  # one optuna trial
REPORT = "report"  # one python -m bayeslora.report

# -- artifacts of a result run ------------------------------------------------------------
PREDICTIONS = "predictions.json"  # ids, labels and per-example probabilities
# numpy archives beside it (np.load(..., allow_pickle=False) reads them):
SAMPLE_PROBS = "sample_probs.npz"  # probs [S, N, K] of a sampled mode, labels [N]
TAU_PROBS = "tau_probs.npz"  # tau [T], probs [T, N, K] (IVON's predictive at each), labels [N]


def predictions_payload(ids: list, labels: torch.Tensor, probs: torch.Tensor) -> dict:
    """What :data:`PREDICTIONS` holds."""
    return {
        "ids": list(ids),
        "labels": labels.tolist(),
        "dtype": str(probs.dtype).removeprefix("torch."),
        "probs": probs.tolist(),
    }


def read_predictions(stored: dict) -> tuple[list | None, torch.Tensor, torch.Tensor]:
    """``(ids, labels, probs)`` from a :data:`PREDICTIONS` payload (ids None if absent)."""
    import torch

    probs = torch.tensor(stored["probs"], dtype=getattr(torch, stored.get("dtype", "float32")))
    return stored.get("ids"), torch.tensor(stored["labels"], dtype=torch.long), probs
