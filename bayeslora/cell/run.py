"""Run one cell: attach fresh adapters, fit, predict in each mode, score. Nothing else.

The bench and the tuner both call :func:`run_cell`; neither has a fit/predict path of
its own. Where results go (MLflow, ``results.jsonl``, the console) is the caller's
business: a cell returns a :class:`CellResult` and knows no tracking store.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bayeslora.cell.spec import Cell
from bayeslora.methods.modes import ModeKind, PredictionMode
from bayeslora.metrics import compute_metrics
from bayeslora.metrics.ood import ood_metrics
from bayeslora.models.classifier import lora_classifier
from bayeslora.models.loading import loaded_as
from bayeslora.training.checkpoint import Checkpointer
from bayeslora.training.loop import LogCallback, check_finite


@dataclass
class CellData:
    """What a cell trains on, evaluates on during training (or None), and reports on."""

    train: Any  # a dataset of tasks/encoding.py (TokenizedDataset or ChoiceDataset)
    eval: Any
    answer_ids: list[int] | None  # the letters protocol's answer tokens; None: choices scoring
    val: Any = None
    # the cell's eval_tasks: name -> that task's evaluation data, scored out of distribution
    ood: dict[str, Any] = field(default_factory=dict)


@dataclass
class OodResult:
    """One mode's predictions on another task's questions, and how well its uncertainty
    tells them from the cell's own (``metrics.ood``)."""

    task: str
    metrics: dict[str, float]  # the calibration metrics on that task, and ood_* detection
    probs: Tensor  # [N_ood, K]
    eval_time_s: float


@dataclass
class ModeResult:
    mode: PredictionMode
    metrics: dict[str, float]
    probs: Tensor  # [N, K] on the eval data, in its order
    eval_time_s: float
    samples: Tensor | None = None  # [S, N, K]: a sampled mode's S predictions (S > 1)
    tau_probs: Tensor | None = None  # [T, N, K]: the predictive at each of cell.tau_grid
    ood: list[OodResult] = field(default_factory=list)  # one per cell.eval_tasks


@dataclass
class CellResult:
    cell: Cell
    modes: list[ModeResult]
    train_time_s: float
    history: list[tuple[int, dict[str, float]]]  # (step, values) as the loop logged them
    extras: dict[str, float]  # the method's extra_metrics()
    adapter: dict[str, bytes] | None = None  # peft's adapter files, if asked for
    trained: tuple[float, float] | None = None  # wall-clock start and end of fit (unix s)
    ended: float | None = None  # wall-clock end of its last prediction (unix s)
    notes: list[str] = field(default_factory=list)  # what a reader of the run should know
    model_used: dict[str, str] = field(default_factory=dict)  # models.loading.loaded_as


def run_cell(
    cell: Cell,
    base_model,
    data: CellData,
    *,
    on_log: LogCallback | None = None,
    checkpointer: Checkpointer | None = None,
    modes: Collection[str] | None = None,
    save_adapter: bool = False,
) -> CellResult:
    """Fit ``cell`` on ``data.train`` and score ``modes`` (names; default all) on ``data.eval``.

    ``checkpointer``: mid-training checkpoints; a cell with one starts from its newest.
    Raises what the method raises (``DivergedError`` for a non-finite loss or
    predictions, ``optuna.TrialPruned`` from a tuner's ``on_log``).
    """
    history: list[tuple[int, dict[str, float]]] = []

    def log(step: int, values: dict[str, float]) -> None:
        history.append((step, values))
        if on_log:
            on_log(step, values)

    method_cls = cell.method_cls
    method = method_cls(cell.config, train=cell.train, on_log=log)
    notes = list(cell.notes)
    if not method_cls.trains:
        checkpointer = None  # nothing to checkpoint
    if checkpointer is not None and not method_cls.checkpointable:
        notes.append(
            f"{cell.method} keeps no mid-training checkpoints: if interrupted, it restarts"
        )
        checkpointer = None
    method.checkpointer = checkpointer
    wanted = [m for m in method.modes() if modes is None or m.name in modes]

    with lora_classifier(base_model, data.answer_ids, cell.lora, seed=cell.seed) as classifier:
        start, started = time.perf_counter(), time.time()
        method.fit(classifier, data.train, data.val)
        train_time, trained = time.perf_counter() - start, (started, time.time())
        if method_cls.trains and not method.used_training_loop:
            notes.append(
                f"{cell.method}'s fit does not use Method.training_loop: no training curve "
                "was logged, and --eval-every, pruning and --checkpoint-every did nothing"
            )
        results = []
        for mode in wanted:
            start = time.perf_counter()
            samples = _predict_samples(method, data.eval, mode)
            probs = samples.mean(0)
            eval_time = time.perf_counter() - start
            result = ModeResult(mode, compute_metrics(probs, data.eval.labels), probs, eval_time)
            if len(samples) > 1:
                result.samples = samples
            if cell.tau_grid and mode.kind is ModeKind.SAMPLED and method_cls.scales_posterior:
                result.tau_probs = torch.stack(
                    [method.predict_samples_at(data.eval, tau).mean(0) for tau in cell.tau_grid]
                )
                check_finite(
                    result.tau_probs.transpose(0, 1).flatten(1),
                    f"{mode.name} predictions of the tau curve",
                )
            for task, dataset in data.ood.items():
                result.ood.append(_score_ood(method, mode, task, dataset, samples))
            results.append(result)
        ended = time.time()  # after every prediction: its modes, the tau curve, OOD tasks
        extras = method.extra_metrics()  # after predicting: some report prediction costs
        adapter = _adapter_files(classifier) if save_adapter else None
    return CellResult(
        cell,
        results,
        train_time,
        history,
        extras,
        adapter,
        notes=notes,
        trained=trained,
        ended=ended,
        model_used=loaded_as(base_model),
    )


def _predict_samples(method, data, mode: PredictionMode) -> Tensor:
    """``[S, N, K]``: a sampled mode's S predictions, any other mode's one."""
    declared = method.declared_mode(mode)
    if mode.kind is ModeKind.SAMPLED:
        samples = method.predict_samples(data, declared)
    else:
        samples = method.predict_proba(data, declared).unsqueeze(0)
    # per example: a question whose prediction is non-finite in any sample counts once
    check_finite(samples.transpose(0, 1).flatten(1), f"{mode.name} predictions")
    return samples


def _score_ood(method, mode: PredictionMode, task: str, dataset, in_samples: Tensor) -> OodResult:
    start = time.perf_counter()
    out_samples = _predict_samples(method, dataset, mode)
    probs = out_samples.mean(0)
    eval_time = time.perf_counter() - start
    metrics = {**compute_metrics(probs, dataset.labels), **ood_metrics(in_samples, out_samples)}
    return OodResult(task, metrics, probs, eval_time)


def _adapter_files(classifier) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        classifier.save_adapter(tmp)
        return {
            str(p.relative_to(tmp)): p.read_bytes() for p in Path(tmp).rglob("*") if p.is_file()
        }
