"""Cells as Ray tasks (``--executor ray``): the driver plans, Ray runs, the store collects.

The driver (the ``python -m bayeslora.bench`` process) plans the cells as for a local run
and reuses the finished ones from the store. Each other cell becomes one Ray task with
the cell's resources (``bayeslora/cluster.py``). A task runs in a Ray worker process:
it opens the same tracking store, nests its runs under the driver's bench run, takes the
cell's claim, looks up which of its modes are finished (a retry after a killed attempt
finds those the attempt recorded), runs the others with the runner's own
:func:`~bayeslora.bench.runner.execute_cell` and records them with
:meth:`~bayeslora.bench.store.ResultStore.record`, exactly as a local run does. The base
model stays loaded in the worker process for the next cell it runs.

When a task ends the driver loads the cell's results back from the store
by the run ids the task returned (``ResultStore.result_runs``/``load``: no search by time,
so the nodes' clocks need not agree) and goes on as for a local cell: ``results.jsonl``,
then the same tables, comparisons and over-seed summaries. A cell that raised is that
cell's failure; a worker that died (killed, out of memory, a lost node) is retried by
Ray up to ``--max-retries`` times, and what it left RUNNING in the store is marked FAILED
(by the next task on its node, or by the driver on its own). Ctrl-C on the driver
cancels the tasks in flight (their worker processes are killed: ``cluster.py`` says why)
and marks what they left RUNNING FAILED; finished cells stay in the store.

While tasks run, the driver prints a line whenever the counts change: cells done,
running, pending, failed. Which cell runs where is kept by a small Ray actor
(``cluster.StartedTasks``), named ``bayeslora-cells-<bench run id>`` in namespace
``bayeslora``, that each task tells when it starts (``running()``: cell key -> (pid, host)).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import socket
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bayeslora.bench.claims import Claims
from bayeslora.bench.config import BenchConfig
from bayeslora.bench.runner import (
    BenchContext,
    _attempt,
    _missing_modes,
    execute_cell,
    write_results,
)
from bayeslora.bench.store import ResultStore
from bayeslora.cell import Cell
from bayeslora.cluster import StartedTasks, cached_model, gpu_ids, keep_model, say

POLL_S = 2.0  # how often the driver looks at the tasks when none has ended
PROGRESS_ACTOR = "bayeslora-cells-"  # + the driver's bench run id
NAMESPACE = "bayeslora"


@dataclass
class CellJob:
    """What every cell task of one bench invocation shares (put in Ray's object store once)."""

    cfg: BenchConfig  # output_dir made absolute: a worker's working directory may differ
    tokenizer: Any
    tasks: dict  # name -> PreparedTask: the data, tokenized once by the driver
    common_params: dict
    tracking_uri: str
    artifact_dir: str
    parent_run_id: str  # the driver's bench run: the cells' runs nest under it
    progress: Any  # the StartedTasks actor's handle


def run_cells_on_ray(ctx: BenchContext, tasks, cells, stored, results, failures) -> None:
    """The runner's ``_run_cells`` under ``--executor ray``: same arguments, same effect."""
    todo = [cell for cell in cells if _missing_modes(cell, stored.get(cell.key, {}))]
    if not todo:
        for cell in cells:
            _attempt(ctx, tasks[cell.task], cell, results, failures, stored.get(cell.key, {}))
        return
    cluster, ray = ctx.cluster, ctx.cluster.ray
    parent_run_id = ctx.tracker.mlflow.active_run().info.run_id
    progress = (
        ray.remote(num_cpus=0)(StartedTasks)
        .options(name=PROGRESS_ACTOR + parent_run_id, namespace=NAMESPACE)
        .remote()
    )
    cfg = dataclasses.replace(ctx.cfg, output_dir=str(Path(ctx.cfg.output_dir).resolve()))
    job = ray.put(
        CellJob(
            cfg,
            ctx.tokenizer,
            tasks,
            ctx.common_params,
            ctx.tracker.tracking_uri,
            str(Path(cfg.output_dir) / "mlartifacts"),
            parent_run_id,
            progress,
        )
    )
    refs = {cluster.submit(_cell_task, job, cell): cell for cell in todo}
    board = _Board(len(todo))
    pending = set(refs)
    running_keys = {cell.key for cell in todo}
    try:
        for cell in cells:  # finished earlier: loaded here while the others run
            if cell.key not in running_keys:
                _attempt(ctx, tasks[cell.task], cell, results, failures, stored[cell.key])
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
            for ref in ready:
                pending.discard(ref)
                cell = refs[ref]
                failed_before = len(failures)
                collect = functools.partial(_collect, ctx, cell, ref)
                _attempt(ctx, tasks[cell.task], cell, results, failures, ran_elsewhere=collect)
                board.ended(cell.key, failed=len(failures) > failed_before)
            board.show(_running(ray, progress))
        _fail_orphans(ctx)  # attempts killed on this machine (retried since)
    finally:
        if pending:
            say(f"cancelling {len(pending)} Ray task(s); finished cells stay in the store")
            cluster.cancel(pending)
            _fail_orphans(ctx)
        ray.kill(progress)


def _fail_orphans(ctx: BenchContext) -> None:
    """Mark FAILED what killed tasks on this machine left RUNNING (other nodes: their next
    task does it), without letting a failing store hide why the run stops."""
    try:
        orphans = ctx.tracker.fail_orphans()
    except Exception:
        return
    if orphans:
        say(f"marked {len(orphans)} run(s) of stopped Ray tasks FAILED: {', '.join(orphans)}")


def _running(ray, progress) -> set[str]:
    try:
        return set(ray.get(progress.running.remote(), timeout=10))
    except Exception:  # the actor is busy or gone: no count this time
        return set()


class _Board:
    """Counts of the cells to run, printed when they change."""

    def __init__(self, total: int):
        self.total = total
        self.done: set[str] = set()
        self.failed: set[str] = set()
        self._last: tuple | None = None

    def ended(self, key: str, failed: bool) -> None:
        (self.failed if failed else self.done).add(key)

    def show(self, started: set[str]) -> None:
        running = len(started - self.done - self.failed)
        ended = len(self.done) + len(self.failed)
        counts = (len(self.done), running, self.total - ended - running, len(self.failed))
        if counts != self._last:
            self._last = counts
            say(
                f"cells: {counts[0]} done, {counts[1]} running, {counts[2]} pending, "
                f"{counts[3]} failed (of {self.total} to run on Ray)"
            )


def _collect(ctx: BenchContext, cell: Cell, ref) -> list:
    """The results of a cell a Ray task ran, loaded back from the store by the run ids the
    task returned (no search by time: the nodes' clocks may differ); the task's error raised
    as the cell's."""
    summary = ctx.cluster.result(ref)
    stored = ctx.store.result_runs([*summary["runs"], *summary["reused"]])
    missing = _missing_modes(cell, stored)
    if missing:
        raise RuntimeError(
            f"the Ray task of {cell.label} ended, but the store has no FINISHED result of "
            f"mode(s) {', '.join(missing)}"
        )
    rows = {}
    for mode in cell.modes():
        row, probs = ctx.store.load(cell, stored[mode.name])
        if row.mlflow_run_id in summary["runs"]:  # run by this invocation, not reused
            row = dataclasses.replace(row, reused=False, trained=summary["trained"])
        rows[mode.name] = (row, probs)
    return write_results(ctx, cell, rows)


def _cell_task(job: CellJob, cell: Cell) -> dict:
    """One cell in a Ray worker process: its missing modes run and recorded (module
    docstring). Returns the ids of the runs it recorded, of the stored runs it reused for
    the other modes, and when it trained."""
    from bayeslora.cluster import require_ray
    from bayeslora.threads import worker_threads
    from bayeslora.tracking.mlflow_tracker import MlflowTracker

    ray = require_ray()
    job.progress.started.remote(cell.key, os.getpid(), socket.gethostname())
    cfg = job.cfg
    # No progress bars through Ray's log forwarding; not part of the key.
    cell = dataclasses.replace(cell, train=dataclasses.replace(cell.train, progress=False))
    with worker_threads(cfg.cpus_per_cell) as worker:  # the CPUs Ray reserved for the cell
        tracker = MlflowTracker(
            job.tracking_uri,
            cfg.experiment,
            artifact_dir=job.artifact_dir,
            parent_run_id=job.parent_run_id,
        )
        tracker.fail_orphans()  # what a killed attempt on this node left RUNNING
        model_key = (repr(cfg.model_settings()), gpu_ids(ray))
        ctx = BenchContext(
            cfg,
            tracker,
            ResultStore(tracker, job.common_params, cfg.save_adapters),
            Path(cfg.output_dir),
            job.tokenizer,
            job.common_params,
            worker,
            loaded_model=cached_model(model_key),
            claims=Claims(job.tracking_uri, cfg.experiment),
        )
        claim = ctx.claims.try_claim(cell.key)  # a local bench on this node may run it too
        waiting = ctx.claims.wait_for(cell.key, cell.label) if claim is None else nullcontext()
        try:
            with waiting:
                # under --force, what this invocation recorded (a killed attempt's finished
                # modes), found by parent run: the driver's clock is not this node's
                parent = job.parent_run_id if cfg.force else None
                stored = ctx.store.finished(cell, parent_run_id=parent)
                ran = execute_cell(ctx, job.tasks[cell.task], cell, stored)
        finally:
            if claim is not None:
                claim.release()
            keep_model(model_key, ctx.loaded_model)
    rows = [row for row, _ in ran.values()]
    sys.stderr.flush()
    return {
        "runs": [row.mlflow_run_id for row in rows],
        "reused": [run.info.run_id for mode, run in stored.items() if mode not in ran],
        "trained": rows[0].trained if rows else None,
    }
