"""Cell results in the MLflow store: written once per prediction mode, found again by key.

The tracking store is the source of truth for what has finished. Each result run carries
the tag ``bayeslora.cell`` (the cell's key) beside ``bayeslora.kind/mode/task/seed/method``,
the key's ingredients as ``cell.*`` params, the metrics, and ``predictions.json`` (ids,
labels, per-example probabilities). A cell counts as finished when each of its modes has a
FINISHED run; runs left RUNNING, KILLED or FAILED by a crash are never taken for results.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bayeslora.bench.results import ResultRow
from bayeslora.cell import Cell, CellData, CellResult
from bayeslora.metrics import compute_metrics

CELL_TAG = "bayeslora.cell"
KIND_TAG = "bayeslora.kind"
MODE_TAG = "bayeslora.mode"
EVAL_TASK_TAG = "bayeslora.eval_task"  # on out-of-distribution runs: the task scored on
PREDICTIONS = "predictions.json"
# numpy archives beside predictions.json (np.load(..., allow_pickle=False) reads them):
SAMPLE_PROBS = "sample_probs.npz"  # probs [S, N, K] of a sampled mode, labels [N]
TAU_PROBS = "tau_probs.npz"  # tau [T], probs [T, N, K] (the predictive at each), labels [N]


def result_tags(cell: Cell, mode: str) -> dict[str, str]:
    return {
        KIND_TAG: "result",
        "bayeslora.method": cell.method,
        MODE_TAG: mode,
        "bayeslora.task": cell.task,
        "bayeslora.seed": str(cell.seed),
        CELL_TAG: cell.key,
    }


class ResultStore:
    """Result runs of cells in one MLflow experiment (through ``MlflowTracker``)."""

    def __init__(self, tracker, common_params: dict[str, Any], save_adapters: bool):
        self.tracker = tracker
        self.common_params = common_params
        self.save_adapters = save_adapters

    def finished(self, cell: Cell, since: float | None = None) -> dict[str, Any]:
        """mode name -> the newest FINISHED result run of ``cell`` (an MLflow Run); with
        ``since`` (unix seconds), only runs started then or later."""
        query = (
            f"tags.`{CELL_TAG}` = '{cell.key}' AND tags.`{KIND_TAG}` = 'result' "
            "AND attributes.status = 'FINISHED'"
        )
        if since is not None:
            query += f" AND attributes.start_time >= {int(since * 1000)}"
        runs = self.tracker.search_runs(query, order_by=["attributes.start_time DESC"])
        newest: dict[str, Any] = {}
        for run in runs:
            newest.setdefault(run.data.tags[MODE_TAG], run)
        if cell.eval_tasks:  # a mode counts as finished with its out-of-distribution runs only
            ood = self.finished_ood(cell)
            newest = {
                mode: run
                for mode, run in newest.items()
                if all((mode, task) in ood for task in cell.eval_tasks)
            }
        return newest

    def load(self, cell: Cell, run) -> tuple[ResultRow, torch.Tensor]:
        """A stored result as if it had just run: metrics recomputed from its predictions
        with today's metric registry, times as logged."""
        stored = self.tracker.load_dict(run, PREDICTIONS)
        probs = torch.tensor(stored["probs"], dtype=getattr(torch, stored.get("dtype", "float32")))
        labels = torch.tensor(stored["labels"], dtype=torch.long)
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
                tags["bayeslora.notes"] = "; ".join(result.notes)
            name = f"{mode.name}/{cell.task}/seed{cell.seed}"
            with tracker.run(name, nested=True, params=params, tags=tags) as run:
                for step, values in result.history:
                    tracker.log_metrics(values, step=step)
                tracker.log_metrics(
                    {
                        **mode_result.metrics,
                        "train_time_s": result.train_time_s,
                        "eval_time_s": mode_result.eval_time_s,
                        **result.extras,
                    }
                )
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
            KIND_TAG: "ood",
            EVAL_TASK_TAG: ood.task,
            **(extra_tags or {}),
        }
        name = f"{mode}/{cell.task}->{ood.task}/seed{cell.seed}"
        with self.tracker.run(
            name, nested=True, params={**params, "eval_task": ood.task}, tags=tags
        ):
            self.tracker.log_metrics({**ood.metrics, "eval_time_s": ood.eval_time_s})
            self.tracker.log_dict(_predictions(dataset, ood.probs), PREDICTIONS)

    def finished_ood(self, cell: Cell) -> dict[tuple[str, str], Any]:
        """(mode, eval task) -> the newest FINISHED out-of-distribution run of ``cell``."""
        query = (
            f"tags.`{CELL_TAG}` = '{cell.key}' AND tags.`{KIND_TAG}` = 'ood' "
            "AND attributes.status = 'FINISHED'"
        )
        newest: dict[tuple[str, str], Any] = {}
        for run in self.tracker.search_runs(query, order_by=["attributes.start_time DESC"]):
            newest.setdefault((run.data.tags[MODE_TAG], run.data.tags[EVAL_TASK_TAG]), run)
        return newest

    def record_failure(self, cell: Cell, error: BaseException, data_info: dict) -> None:
        self.tracker.record_failure(
            cell.label,
            error,
            params={**self.common_params, "task": data_info, "cell": cell.ingredients()},
            tags={k: v for k, v in result_tags(cell, "").items() if k != MODE_TAG},
        )


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


def _predictions(eval_data, probs: torch.Tensor) -> dict:
    return {
        "ids": [e.id for e in eval_data.examples],
        "labels": eval_data.labels.tolist(),
        "dtype": str(probs.dtype).removeprefix("torch."),
        "probs": probs.tolist(),
    }


def _write(files: dict[str, bytes], directory: str) -> None:
    for name, content in files.items():
        path = Path(directory) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
