"""Read scored results back from an MLflow store: any tracking URI, selected by filters.

The store is the source of truth: every bench invocation writes one parent run (kind
``bench``) and under it one run per (mode, task, seed) of kind ``result`` (or ``ood``),
tagged with the cell's key. A report reads those runs, whichever invocation or machine
wrote them, so results of several invocations combine. The same (kind, cell key, mode,
evaluation task) present twice (a cell run again with ``--force``, or by two stores merged)
counts once: the newest FINISHED run. Runs that are RUNNING, FAILED or KILLED never count.

Everything that can be checked without reading predictions (the store answers, the
experiment and parent runs exist, the filters match something) is checked first, by
:meth:`ResultSource.find`; :meth:`ResultSource.load` then downloads the predictions.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bayeslora.metrics import compute_metrics
from bayeslora.report.result import ResultRecord
from bayeslora.tracking.schema import (
    CELL_TAG,
    EVAL_TASK_TAG,
    KIND_TAG,
    METHOD_TAG,
    MODE_TAG,
    OOD,
    PARENT_TAG,
    PREDICTIONS,
    RESULT,
    SEED_TAG,
    TASK_TAG,
    read_predictions,
)
from bayeslora.tracking.urls import check_reachable, mask_url

MODEL_PARAM = "config.model"  # the bench's --model, as its params flatten it
KINDS = (RESULT, OOD)


class SelectionError(ValueError):
    """The store, the experiment or the filters select nothing; the message says the fix."""


@dataclass(frozen=True)
class Selection:
    """Which results a report reads; empty filters select everything of the experiment."""

    experiment: str = "bayeslora"
    parent_run_ids: tuple[str, ...] = ()  # bench invocations (their parent runs)
    tasks: tuple[str, ...] = ()  # tasks trained on
    methods: tuple[str, ...] = ()
    modes: tuple[str, ...] = ()
    models: tuple[str, ...] = ()  # the bench's --model

    def describe(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def matches(self, run) -> bool:
        tags, params = run.data.tags, run.data.params
        wanted = (
            (self.parent_run_ids, tags.get(PARENT_TAG)),
            (self.tasks, tags.get(TASK_TAG)),
            (self.methods, tags.get(METHOD_TAG)),
            (self.modes, tags.get(MODE_TAG)),
            (self.models, params.get(MODEL_PARAM)),
        )
        return all(not values or value in values for values, value in wanted)


class ResultSource:
    """The result runs of one MLflow store (read only: a report writes its own run)."""

    def __init__(self, tracking_uri: str):
        # reading artifacts would draw a progress bar for each
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        from bayeslora.tracking.mlflow_tracker import apply_http_retry_defaults

        _check_store(tracking_uri)
        apply_http_retry_defaults()
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        self._artifacts: dict[str, set[str]] = {}

    def experiment_id(self, name: str) -> str:
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            names = [e.name for e in self.client.search_experiments()]
            raise SelectionError(
                f"the store {mask_url(self.tracking_uri)} has no experiment {name!r} (it has: "
                f"{', '.join(names) or 'none'}); pass one of those with --experiment"
            )
        return experiment.experiment_id

    def find(self, selection: Selection) -> list:
        """The selected FINISHED result and OOD runs, one per (kind, cell, mode, evaluation
        task), the newest; oldest first (so, for runs of one bench, in the bench's order)."""
        experiment_id = self.experiment_id(selection.experiment)
        for run_id in selection.parent_run_ids:
            self._check_parent(run_id, experiment_id, selection.experiment)
        runs = []
        for kind in KINDS:
            runs += self._search(
                experiment_id,
                f"tags.`{KIND_TAG}` = '{kind}' AND attributes.status = 'FINISHED'",
            )
        if not runs:
            raise SelectionError(
                f"experiment {selection.experiment!r} in {mask_url(self.tracking_uri)} has no "
                "FINISHED result runs; run the bench first (python -m bayeslora.bench) or "
                "choose another --experiment / --tracking-uri"
            )
        selected = [run for run in runs if selection.matches(run)]
        if not selected:
            raise SelectionError(
                f"no FINISHED result run of experiment {selection.experiment!r} matches the "
                f"selection {_given(selection)}; the experiment has {_available(runs)}"
            )
        newest: dict[tuple, Any] = {}
        for run in sorted(selected, key=lambda r: r.info.start_time, reverse=True):
            newest.setdefault(_identity(run), run)
        return sorted(newest.values(), key=lambda r: r.info.start_time)

    def load(self, run) -> ResultRecord:
        """A run as a record: its predictions (if it stored any) and metrics recomputed from
        them with today's metric registry; metrics without predictions as logged."""
        tags = run.data.tags
        record = ResultRecord(
            kind=tags[KIND_TAG],
            method=tags.get(METHOD_TAG, ""),
            mode=tags.get(MODE_TAG, ""),
            task=tags.get(TASK_TAG, ""),
            eval_task=tags.get(EVAL_TASK_TAG, ""),
            seed=int(tags.get(SEED_TAG, 0)),
            cell=tags.get(CELL_TAG, ""),
            model=run.data.params.get(MODEL_PARAM),
            metrics=dict(run.data.metrics),
            run_id=run.info.run_id,
            start_time=run.info.start_time,
        )
        if PREDICTIONS in self.artifact_names(run.info.run_id):
            stored = json.loads(self.read_artifact(run.info.run_id, PREDICTIONS))
            record.ids, record.labels, record.probs = read_predictions(stored)
            record.metrics.update(compute_metrics(record.probs, record.labels))
        return record

    def artifact_names(self, run_id: str) -> set[str]:
        """The files at the top of a run's artifacts (asked once per run)."""
        if run_id not in self._artifacts:
            self._artifacts[run_id] = {f.path for f in self.client.list_artifacts(run_id)}
        return self._artifacts[run_id]

    def read_artifact(self, run_id: str, name: str) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            return Path(self.client.download_artifacts(run_id, name, tmp)).read_bytes()

    def arrays(self, run_id: str, name: str) -> dict[str, np.ndarray] | None:
        """The arrays of an ``.npz`` artifact of the run (no pickles), None if it has none."""
        if name not in self.artifact_names(run_id):
            return None
        with np.load(io.BytesIO(self.read_artifact(run_id, name)), allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}

    def _search(self, experiment_id: str, filter_string: str) -> list:
        runs, token = [], None
        while True:
            page = self.client.search_runs(
                [experiment_id], filter_string, max_results=1000, page_token=token
            )
            runs += list(page)
            token = page.token
            if not token:
                return runs

    def _check_parent(self, run_id: str, experiment_id: str, experiment: str) -> None:
        try:
            run = self.client.get_run(run_id)
        except Exception as err:
            raise SelectionError(
                f"--parent-run-id {run_id}: no such run in {mask_url(self.tracking_uri)} "
                f"({type(err).__name__}); give the id of a bench run (tag "
                "bayeslora.kind=bench, shown in the MLflow UI)"
            ) from None
        if run.info.experiment_id != experiment_id:
            raise SelectionError(
                f"--parent-run-id {run_id} is a run of another experiment than {experiment!r}; "
                "pass its experiment with --experiment"
            )


def load_results(source: ResultSource, runs: list, threads: int = 8) -> list[ResultRecord]:
    """:meth:`ResultSource.load` of each run, in order; downloads overlap (a server's
    latency, not the CPU, is what a report of many runs waits for)."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(source.load, runs))


def _identity(run) -> tuple:
    tags = run.data.tags
    cell = tags.get(CELL_TAG) or run.info.run_id  # no key: never a duplicate
    return (tags[KIND_TAG], cell, tags.get(MODE_TAG), tags.get(EVAL_TASK_TAG))


def _check_store(tracking_uri: str) -> None:
    """A server that answers, or a SQLite file that exists (MLflow would create an empty
    one and report nothing)."""
    try:
        check_reachable(tracking_uri, "--tracking-uri")
    except ValueError as err:
        raise SelectionError(str(err)) from None
    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise SelectionError(
                f"no MLflow store at {path}: run the bench first (python -m bayeslora.bench), "
                "or pass the store with --tracking-uri (or the bench's --output-dir)"
            )


def _given(selection: Selection) -> str:
    given = {k: v for k, v in selection.describe().items() if v and k != "experiment"}
    return ", ".join(f"{k}={','.join(v)}" for k, v in given.items()) or "(none)"


def _available(runs: list) -> str:
    def values(get) -> str:
        found = sorted({v for v in map(get, runs) if v})
        return ",".join(found[:12]) + (" ..." if len(found) > 12 else "")

    return (
        f"tasks {values(lambda r: r.data.tags.get(TASK_TAG))}; "
        f"methods {values(lambda r: r.data.tags.get(METHOD_TAG))}; "
        f"modes {values(lambda r: r.data.tags.get(MODE_TAG))}; "
        f"models {values(lambda r: r.data.params.get(MODEL_PARAM))}; "
        f"{len({r.data.tags.get(PARENT_TAG) for r in runs})} parent run(s)"
    )
