"""Cell results in the MLflow store: written once per prediction mode, found again by key.

The tracking store is the source of truth for what has finished. Each result run carries
the tag ``bayeslora.cell`` (the cell's key) beside ``bayeslora.kind/mode/task/seed/method``,
the key's ingredients as ``cell.*`` params, the metrics, and ``predictions.json`` (ids,
labels, per-example probabilities). A cell counts as finished when each of its modes has a
FINISHED run; runs left RUNNING, KILLED or FAILED by a crash are never taken for results.

For a reader of the MLflow UI, each result run also has a description (what it is, its
headline metrics), the data it was scored on (and trained on) as MLflow dataset inputs, the
calibration metrics logged before anything else (the UI's default choices follow the
logging order), and the cell's real start and end times, although it is written after the
cell finished.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bayeslora.bench.results import ResultRow
from bayeslora.cell import Cell, CellData, CellResult, ModeResult
from bayeslora.cell.identity import examples_digest
from bayeslora.metrics import compute_metrics
from bayeslora.metrics.registry import table_metrics
from bayeslora.tracking.schema import (
    CELL_TAG,
    EVAL_TASK_TAG,
    KIND_TAG,
    METHOD_TAG,
    MODE_TAG,
    NOTES_TAG,
    OOD,
    PARENT_TAG,
    PREDICTIONS,
    RESULT,
    SAMPLE_PROBS,
    SEED_TAG,
    TASK_TAG,
    TAU_PROBS,
    predictions_payload,
    read_predictions,
)

RESULTS_VIEW = "bayeslora-results"  # the runs table with the results table's metrics
# The experiment's description on its MLflow page.
EXPERIMENT_DESCRIPTION = (
    "Results of the bayeslora benchmark. Each `bench-<time>` run is one invocation of "
    "`python -m bayeslora.bench`; the runs nested under it are its results, one per "
    "prediction mode, task and seed, named `<mode>/<task>/seed<n>`: accuracy, ece, nll and "
    "brier as metrics, the examples scored as a dataset input, the per-example probabilities "
    "in `predictions.json`. The `bench-<time>` run holds the invocation's tables "
    "(`table.md`, `table.csv`, `results.txt`, `comparison_<task>.json`) and plots (`plots/`). "
    "With `--eval-tasks`, runs of kind `ood` named `<mode>/<task>-><eval task>/seed<n>` hold "
    "each mode's scores on another task. Tuning studies (`--tune`) are the runs tagged "
    "`bayeslora.kind = study`.\n\n"
    "If this page shows traces rather than runs, switch the sidebar to **Model training**."
)


def result_tags(cell: Cell, mode: str) -> dict[str, str]:
    return {
        KIND_TAG: RESULT,
        METHOD_TAG: cell.method,
        MODE_TAG: mode,
        TASK_TAG: cell.task,
        SEED_TAG: str(cell.seed),
        CELL_TAG: cell.key,
    }


class ResultStore:
    """Result runs of cells in one MLflow experiment (through ``MlflowTracker``)."""

    def __init__(self, tracker, common_params: dict[str, Any], save_adapters: bool):
        self.tracker = tracker
        self.common_params = common_params
        self.save_adapters = save_adapters

    def finished(
        self, cell: Cell, since: float | None = None, parent_run_id: str | None = None
    ) -> dict[str, Any]:
        """mode name -> the newest FINISHED result run of ``cell`` (an MLflow Run); with
        ``since`` (unix seconds), only runs that ended then or later; with ``parent_run_id``,
        only runs nested under that bench run (what one invocation recorded, whatever the
        clocks of the machines that recorded it)."""
        query = (
            f"tags.`{CELL_TAG}` = '{cell.key}' AND tags.`{KIND_TAG}` = '{RESULT}' "
            "AND attributes.status = 'FINISHED'" + _newer(since, parent_run_id)
        )
        runs = self.tracker.search_runs(query, order_by=["attributes.end_time DESC"])
        newest: dict[str, Any] = {}
        for run in runs:
            newest.setdefault(run.data.tags[MODE_TAG], run)
        if cell.eval_tasks:  # a mode counts as finished with its out-of-distribution runs only
            ood = self.finished_ood(cell, since, parent_run_id)
            newest = {
                mode: run
                for mode, run in newest.items()
                if all((mode, task) in ood for task in cell.eval_tasks)
            }
        return newest

    def result_runs(self, run_ids: list[str]) -> dict[str, Any]:
        """mode name -> run, of the FINISHED result runs among ``run_ids``."""
        runs = (self.tracker.mlflow.get_run(run_id) for run_id in run_ids)
        return {
            run.data.tags[MODE_TAG]: run
            for run in runs
            if run.info.status == "FINISHED" and run.data.tags.get(KIND_TAG) == RESULT
        }

    def load(self, cell: Cell, run) -> tuple[ResultRow, torch.Tensor]:
        """A stored result as if it had just run: metrics recomputed from its predictions
        with today's metric registry, times as logged."""
        _, labels, probs = read_predictions(self.tracker.load_dict(run, PREDICTIONS))
        times = run.data.metrics
        row = _row(
            cell,
            run.data.tags[MODE_TAG],
            compute_metrics(probs, labels),
            times.get("train_time_s", float("nan")),
            times.get("eval_time_s", float("nan")),
            run.info.run_id,
            reused=True,
        )
        return row, probs

    def record(
        self, result: CellResult, data_info: dict, data: CellData, extra_tags: dict | None = None
    ) -> list[tuple[ResultRow, torch.Tensor]]:
        """One FINISHED run per mode of ``result``, nested under the current parent run;
        ``extra_tags``: more tags for each of them."""
        cell, tracker, rows = result.cell, self.tracker, []
        for mode_result in result.modes:
            mode = mode_result.mode
            params = {
                **self.common_params,
                "method": cell.method,
                "mode": mode.name,
                "mode_info": mode.describe(),
                "task": data_info,
                "seed": cell.seed,
                "hparams": cell.config.to_dict(),
                "lora": dataclasses.asdict(cell.lora),
                "train": dataclasses.asdict(cell.train),
                "cell": {"key": cell.key, **cell.ingredients()},
                "model_used": result.model_used,  # as read from the loaded model
                "train_size": len(data.train),
                "val_size": len(data.val) if data.val is not None else 0,
            }
            tags = {**result_tags(cell, mode.name), **(extra_tags or {})}
            if result.notes:
                tags[NOTES_TAG] = "; ".join(result.notes)
            name = f"{mode.name}/{cell.task}/seed{cell.seed}"
            start, end = _span(result)
            with tracker.run(
                name,
                nested=True,
                params=params,
                tags=tags,
                description=_description(result, mode_result, data_info, data),
                start_time=start,
                end_time=end,
            ) as run:
                # first the metrics the UI should offer first (the compare view plots the
                # first one logged), the training curve last
                tracker.log_metrics(
                    {
                        **mode_result.metrics,
                        "train_time_s": result.train_time_s,
                        "eval_time_s": mode_result.eval_time_s,
                        **result.extras,
                    }
                )
                for step, values in result.history:
                    tracker.log_metrics(values, step=step)
                _log_datasets(tracker, cell, data_info, data)
                tracker.log_dict(params, "config.json")
                tracker.log_dict(_predictions(data.eval, mode_result.probs), PREDICTIONS)
                labels = data.eval.labels.numpy()
                if mode_result.samples is not None:
                    arrays = {"probs": mode_result.samples.float().numpy(), "labels": labels}
                    tracker.log_arrays(arrays, SAMPLE_PROBS)
                if mode_result.tau_probs is not None:
                    tau = np.asarray(cell.tau_grid, dtype=np.float64)
                    arrays = {"tau": tau, "probs": mode_result.tau_probs.float().numpy()}
                    tracker.log_arrays({**arrays, "labels": labels}, TAU_PROBS)
                if self.save_adapters and result.adapter:
                    tracker.log_directory(lambda d: _write(result.adapter, d), "adapter")
            row = _row(
                cell,
                mode.name,
                mode_result.metrics,
                result.train_time_s,
                mode_result.eval_time_s,
                run.info.run_id,
                trained=result.trained,
            )
            rows.append((row, mode_result.probs))
            for ood in mode_result.ood:
                self._record_ood(cell, mode.name, ood, data.ood[ood.task], params, extra_tags)
        return rows

    def _record_ood(self, cell: Cell, mode: str, ood, dataset, params, extra_tags) -> None:
        """An out-of-distribution result: the cell's adapter scored on ``ood.task``, a run
        of kind ``ood`` (never taken for the cell's own results)."""
        tags = {
            **result_tags(cell, mode),
            KIND_TAG: OOD,
            EVAL_TASK_TAG: ood.task,
            **(extra_tags or {}),
        }
        name = f"{mode}/{cell.task}->{ood.task}/seed{cell.seed}"
        with self.tracker.run(
            name, nested=True, params={**params, "eval_task": ood.task}, tags=tags
        ):
            self.tracker.log_metrics({**ood.metrics, "eval_time_s": ood.eval_time_s})
            self.tracker.log_dict(_predictions(dataset, ood.probs), PREDICTIONS)

    def finished_ood(
        self, cell: Cell, since: float | None = None, parent_run_id: str | None = None
    ) -> dict[tuple[str, str], Any]:
        """(mode, eval task) -> the newest FINISHED out-of-distribution run of ``cell``;
        ``since`` and ``parent_run_id`` as in :meth:`finished`."""
        query = (
            f"tags.`{CELL_TAG}` = '{cell.key}' AND tags.`{KIND_TAG}` = '{OOD}' "
            "AND attributes.status = 'FINISHED'" + _newer(since, parent_run_id)
        )
        newest: dict[tuple[str, str], Any] = {}
        for run in self.tracker.search_runs(query, order_by=["attributes.end_time DESC"]):
            newest.setdefault((run.data.tags[MODE_TAG], run.data.tags[EVAL_TASK_TAG]), run)
        return newest

    def record_failure(self, cell: Cell, error: BaseException, data_info: dict) -> None:
        self.tracker.record_failure(
            cell.label,
            error,
            params={**self.common_params, "task": data_info, "cell": cell.ingredients()},
            tags={k: v for k, v in result_tags(cell, "").items() if k != MODE_TAG},
        )


def _newer(since: float | None, parent_run_id: str | None) -> str:
    """The part of a run search that keeps only runs of ``finished``'s ``since`` and
    ``parent_run_id``."""
    query = ""
    if since is not None:  # a run spans its cell, which may have started before ``since``
        query += f" AND attributes.end_time >= {int(since * 1000)}"
    if parent_run_id is not None:
        query += f" AND tags.`{PARENT_TAG}` = '{parent_run_id}'"
    return query


def _row(
    cell: Cell, mode: str, metrics, train_s, eval_s, run_id, reused=False, trained=None
) -> ResultRow:
    return ResultRow(
        mode,
        cell.method,
        cell.task,
        cell.seed,
        cell.key,
        metrics,
        train_s,
        eval_s,
        run_id,
        reused,
        trained,
    )


def _span(result: CellResult) -> tuple[float | None, float | None]:
    """When the cell ran (unix seconds): from the start of its fit to the end of its last
    prediction; (None, None) if unknown."""
    if result.trained is None:
        return None, None
    started, fitted = result.trained
    if result.ended is not None:  # predictions, tau curve and OOD tasks included
        return started, result.ended
    return started, fitted + sum(m.eval_time_s for m in result.modes)


def _log_datasets(tracker, cell: Cell, data_info: dict, data: CellData) -> None:
    """The examples the run was scored on ("eval") and trained on ("training")."""
    used = [("eval", data.eval)]
    if cell.method_cls.trains:
        used.append(("training", data.train))
    for context, dataset in used:
        split = str(data_info.get(f"{'train' if context == 'training' else 'eval'}_split", ""))
        source = {
            "source": data_info.get("source"),
            "split": split,
            "path": data_info.get(f"{'train' if context == 'training' else 'eval'}_path"),
            "protocol": data_info.get("protocol"),
        }
        tracker.log_dataset(
            f"{cell.task}/{Path(split).name or context}",
            examples_digest(dataset.examples),
            context,
            {k: v for k, v in source.items() if v is not None},
            len(dataset.examples),
        )


def _description(result: CellResult, mode: ModeResult, data_info: dict, data: CellData) -> str:
    """The run's description in the UI (Markdown): what it is and its headline numbers."""
    cell = result.cell
    info = mode.mode.describe()
    kind = info["kind"] + (f", {info['samples']} samples" if info["samples"] else "")
    numbers = " · ".join(
        f"{m.name} {mode.metrics[m.name]:.4f}" for m in table_metrics() if m.name in mode.metrics
    )
    others = [m.mode.name for m in result.modes if m is not mode]
    trained = (
        f"trained on {len(data.train.examples)} examples for {cell.train.steps} steps"
        if cell.method_cls.trains
        else "not trained"
    )
    lines = [
        f"**{mode.mode.name}** on **{cell.task}**, seed {cell.seed}: method `{cell.method}`, "
        f"prediction mode `{mode.mode.name}` ({kind}).",
        "",
        f"Scored on {len(data.eval.examples)} examples of {cell.task} "
        f"({data_info.get('eval_split', 'eval')}); {trained}.",
        "",
        numbers + ".",
        "",
        f"Cell `{cell.key}`"
        + (f"; its other modes: {', '.join(others)}" if others else "")
        + ". Per-example probabilities: `predictions.json`; settings: `config.json`.",
    ]
    return "\n".join(lines)


def _predictions(eval_data, probs: torch.Tensor) -> dict:
    return predictions_payload([e.id for e in eval_data.examples], eval_data.labels, probs)


def _write(files: dict[str, bytes], directory: str) -> None:
    for name, content in files.items():
        path = Path(directory) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
