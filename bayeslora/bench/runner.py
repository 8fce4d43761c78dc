"""Run a benchmark: plan the cells, skip the finished ones, run the rest, report.

:func:`run_bench` reads top to bottom: check and read everything (``prepare.py``: bad
input fails there, before anything is written) → open the store (runs of dead processes
marked FAILED) → plan the cells (one per task, method and seed; tuning, if asked for,
decides their hyperparameters) → look each cell's key up in the MLflow store and reuse
what has finished → run the rest, each claimed so that two processes never run one cell
(``claims.py``), here or as Ray tasks (``--executor ray``: ``ray_executor.py``) → report. Every finished cell is in MLflow and ``results.jsonl`` at once,
so a crash, Ctrl-C or ``kill`` later loses nothing that had finished, and the same command
run again picks up where it stopped (``--force`` reruns everything).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch

from bayeslora.bench.claims import Claims
from bayeslora.bench.config import BenchConfig
from bayeslora.bench.plan import PreparedTask, cell_data, plan_cells
from bayeslora.bench.prepare import PreparedBench, check_methods, preflight, prepare_bench
from bayeslora.bench.results import CellFailure, ResultRow, format_table
from bayeslora.bench.store import EXPERIMENT_DESCRIPTION, RESULTS_VIEW, ResultStore
from bayeslora.cell import Cell, run_cell
from bayeslora.cell.identity import harness_identity, library_versions
from bayeslora.metrics.registry import table_metrics
from bayeslora.models.identity import model_identity
from bayeslora.models.loading import check_loaded_as, load_causal_lm, loaded_as
from bayeslora.report.build import draw_plots, summarise
from bayeslora.report.collect import ResultSource, load_results
from bayeslora.report.curves import result_curves
from bayeslora.report.result import ResultRecord
from bayeslora.report.table import paper_table
from bayeslora.threads import Worker, worker_threads
from bayeslora.tracking.mlflow_tracker import (
    MlflowTracker,
    TrackingStoreError,
    default_tracking_uri,
    describe_error,
    ui_path,
)
from bayeslora.tracking.schema import BENCH, KIND_TAG, METHOD_TAG, RESULT, THREADS_TAG, TUNING
from bayeslora.tracking.urls import mask_url
from bayeslora.training.checkpoint import Checkpointer
from bayeslora.training.loop import DivergedError

__all__ = [
    "BaseModelError",
    "BenchContext",
    "check_methods",
    "preflight",
    "run_bench",
    "run_prepared",
]

Result = tuple[ResultRow, torch.Tensor]  # a row and its per-example probabilities


class BaseModelError(RuntimeError):
    """The base model could not be loaded as asked: no cell can run."""


@dataclass
class BenchContext:
    """What stays fixed across one bench invocation. The base model loads on first use,
    so a rerun whose cells have all finished never loads it."""

    cfg: BenchConfig
    tracker: MlflowTracker
    store: ResultStore
    run_dir: Path
    tokenizer: object
    common_params: dict
    worker: Worker | None = None  # this process's thread share (None: not registered)
    loaded_model: object = field(default=None, repr=False)  # None until first used
    claims: Claims | None = None  # None: no other process to coordinate with (tests)
    cluster: object | None = None  # --executor ray: the cluster cells run on (cluster.py)
    started: float = field(default_factory=time.time)  # unix seconds
    results_done: int = 0  # result rows written to results.jsonl by this invocation

    @property
    def base_model(self):
        if self.loaded_model is None:
            settings = self.cfg.model_settings()
            try:
                model = load_causal_lm(settings)
                check_loaded_as(settings, loaded_as(model))
            except Exception as err:  # every cell needs it: stop rather than fail each
                raise BaseModelError(
                    f"the base model {settings.name} could not be loaded as asked: "
                    f"{describe_error(err)}"
                ) from err
            self.loaded_model = model
        return self.loaded_model

    def checkpoint_dir(self, cell: Cell) -> Path:
        return Path(self.cfg.output_dir) / "checkpoints" / cell.key

    def checkpointer(self, cell: Cell) -> Checkpointer | None:
        if not self.cfg.checkpoint_every:
            return None
        return Checkpointer(self.checkpoint_dir(cell), self.cfg.checkpoint_every)


def run_bench(cfg: BenchConfig, tune=None) -> tuple[list[ResultRow], list[CellFailure]]:
    """Returns the result rows (run now or reused) and the failed cells, each with why.

    ``tune(ctx, task, method_cls) -> (hparams, lora_settings)``, if given, is called once
    per (method, task) while planning; its values become part of the cells' keys.
    """
    return run_prepared(prepare_bench(cfg), tune)


def run_prepared(prepared: PreparedBench, tune=None) -> tuple[list[ResultRow], list[CellFailure]]:
    """:func:`run_bench` on what :func:`~bayeslora.bench.prepare.prepare_bench` checked and read."""
    # Under Ray the cells' threads are their workers' (--cpus-per-cell): this process only
    # plans, waits and reports, and takes no share of the cores.
    local = prepared.cluster is None
    try:
        with worker_threads(prepared.cfg.threads) if local else nullcontext() as worker:
            ctx, stamp = _open(prepared, worker)
            with _store_guard(ctx, "the bench run was being closed"):
                with ctx.tracker.run(
                    f"bench-{stamp}",
                    params=ctx.common_params,
                    tags={KIND_TAG: BENCH},
                    description=_bench_description(ctx.cfg, ctx.run_dir),
                ):
                    outcome = _run(ctx, prepared, tune)
            print(_ui_hint(ctx.tracker), file=sys.stderr)
            return outcome
    finally:
        if not local:
            prepared.cluster.close()


def _bench_description(cfg: BenchConfig, run_dir: Path) -> str:
    """The parent run's description in the MLflow UI (Markdown)."""
    return (
        f"One `bench` invocation: methods {', '.join(cfg.methods)}; tasks "
        f"{', '.join(cfg.tasks)}; seeds {', '.join(str(s) for s in cfg.seeds)}; model "
        f"`{cfg.model}`, preset {cfg.preset}, {cfg.steps} steps.\n\n"
        "Its results are the runs nested under it (`<mode>/<task>/seed<n>`). Its artifacts "
        "are the tables (`table.md`, `table.csv`, `results.txt`, `results.json`, "
        "`comparison_<task>.json`, "
        "`seeds_<task>.json` with several seeds) and the plots (`plots/`); the same files are "
        f"in `{run_dir}`."
    )


def _ui_hint(tracker: MlflowTracker) -> str:
    """Where to look at the runs in the MLflow UI, in its model-training layout."""
    uri, page = tracker.tracking_uri, ui_path(tracker.experiment_id, RESULTS_VIEW)
    if uri.startswith(("http://", "https://")):
        return f"bayeslora: MLflow UI: {mask_url(uri).rstrip('/')}{page}"
    server = "mlflow server --host 127.0.0.1 --port 5000 --workers 1 --backend-store-uri"
    return f"bayeslora: to look at the runs: {server} {uri}, then open http://127.0.0.1:5000{page}"


def _run(ctx, prepared: PreparedBench, tune) -> tuple[list[ResultRow], list[CellFailure]]:
    tasks, failures = prepared.tasks, []
    cells = _plan(ctx, tasks, prepared.method_classes, tune, failures)
    with _store_guard(ctx, "finished cells were being looked up"):
        stored = {} if ctx.cfg.force else {cell.key: ctx.store.finished(cell) for cell in cells}
    todo = [c for c in cells if _missing_modes(c, stored.get(c.key, {}))]
    print(
        f"bayeslora: {len(cells)} cell(s): {len(cells) - len(todo)} finished earlier "
        f"(reused from the store), {len(todo)} to run",
        file=sys.stderr,
    )
    results: dict[str, list[Result]] = {}
    try:
        _run_cells(ctx, tasks, cells, stored, results, failures)
    except KeyboardInterrupt:
        print(
            f"\nbayeslora: interrupted; {ctx.results_done} finished result(s) are in "
            f"{ctx.run_dir / 'results.jsonl'} and MLflow; run the same command again to "
            "continue",
            file=sys.stderr,
        )
        raise
    rows = _report(ctx, tasks, cells, results, failures)
    return rows, failures


def _run_cells(ctx, tasks, cells, stored, results, failures) -> None:
    """Each cell in plan order, claimed first: a cell that another bench process on this
    machine is running for the same store is left for last, then waited for and reused
    (or run, if that process failed), so that no cell runs twice. Under --executor ray,
    the cells run as Ray tasks instead (``ray_executor.py``)."""
    if ctx.cluster is not None:
        from bayeslora.bench.ray_executor import run_cells_on_ray

        return run_cells_on_ray(ctx, tasks, cells, stored, results, failures)
    waiting = []
    for cell in cells:
        task = tasks[cell.task]
        if not _missing_modes(cell, stored.get(cell.key, {})) or ctx.claims is None:
            _attempt(ctx, task, cell, results, failures, stored.get(cell.key, {}))
            continue
        claim = ctx.claims.try_claim(cell.key)
        if claim is None:
            waiting.append(cell)
            continue
        try:  # held until the cell's results are stored (or it failed)
            _attempt(ctx, task, cell, results, failures)
        finally:
            claim.release()
    for cell in waiting:
        with ctx.claims.wait_for(cell.key, cell.label):
            _attempt(ctx, tasks[cell.task], cell, results, failures)


def _attempt(
    ctx, task, cell: Cell, results, failures, stored: dict | None = None, ran_elsewhere=None
) -> None:
    """Complete one cell (``stored``: its finished runs, or None to look them up now, as
    another process may have added some). An error is recorded as the cell's failure and
    the next cell goes on, unless the store stopped answering or the base model cannot
    load: then no other cell could finish either. ``ran_elsewhere()``, if given, returns
    the results of a cell run by another process (a Ray worker), or raises its error."""
    with _store_guard(ctx, f"{cell.label} was being recorded"):
        try:
            if ran_elsewhere is not None:
                results[cell.key] = ran_elsewhere()
                return
            if stored is None:
                # under --force, only what another process finished during this run counts
                since = ctx.started if ctx.cfg.force else None
                stored = ctx.store.finished(cell, since=since)
            results[cell.key] = _complete_cell(ctx, task, cell, stored)
        except (KeyboardInterrupt, BaseModelError, TrackingStoreError):
            raise
        except Exception as err:  # one broken cell must not cost the others
            if not ctx.tracker.answers():
                raise _store_error(ctx, f"{cell.label} was being recorded", err) from err
            failures.append(CellFailure(cell.method, cell.task, cell.seed, describe_error(err)))
            if isinstance(err, DivergedError):  # the method's numbers, not the code, failed
                print(f"bayeslora: {cell.label} failed: {describe_error(err)}", file=sys.stderr)
            else:
                traceback.print_exc()
            ctx.store.record_failure(cell, err, task.info)


@contextmanager
def _store_guard(ctx, doing: str):
    """Turn a failure while the tracking store does not answer into a TrackingStoreError
    that says what was going on and that nothing finished is lost."""
    try:
        yield
    except (KeyboardInterrupt, TrackingStoreError, BaseModelError):
        raise
    except Exception as err:
        if ctx.tracker.answers():
            raise
        raise _store_error(ctx, doing, err) from err


def _store_error(ctx, doing: str, err: BaseException) -> TrackingStoreError:
    return TrackingStoreError(
        f"the tracking store {mask_url(ctx.tracker.tracking_uri)} stopped answering while "
        f"{doing} ({describe_error(err)}); the {ctx.results_done} result(s) that finished "
        f"before are in the store and in {ctx.run_dir / 'results.jsonl'}. Start the store "
        "again and run the same command: finished cells are reused, the rest run"
    )


def _open(prepared: PreparedBench, worker: Worker | None) -> tuple[BenchContext, str]:
    """The run directory, the tracking store (orphaned runs marked FAILED) and the context."""
    cfg = prepared.cfg
    output_dir = Path(cfg.output_dir)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    output_dir.mkdir(parents=True, exist_ok=True)
    run_dir = output_dir / f"bench-{stamp}"
    try:  # atomic: of two processes started in the same second, one gets the plain name
        run_dir.mkdir()
    except FileExistsError:
        run_dir = output_dir / f"bench-{stamp}-{os.getpid()}"
        run_dir.mkdir()
    tracker = MlflowTracker(
        cfg.tracking_uri or default_tracking_uri(output_dir),
        cfg.experiment,
        artifact_dir=output_dir / "mlartifacts",
        description=EXPERIMENT_DESCRIPTION,
    )
    tracker.share_view(RESULTS_VIEW, [m.name for m in table_metrics()])
    where = (
        f"{worker.threads} torch thread(s) on {worker.cores} core(s)"
        if worker
        else prepared.cluster.describe()
    )
    print(
        f"bayeslora: preset {cfg.preset}, {cfg.steps} steps, {where}; results in {run_dir}, "
        f"MLflow store {mask_url(tracker.tracking_uri)}",
        file=sys.stderr,
    )
    orphans = tracker.fail_orphans()
    if orphans:
        print(
            f"bayeslora: marked {len(orphans)} run(s) FAILED whose process on this host died "
            f"without ending them: {', '.join(orphans)}",
            file=sys.stderr,
        )
    # Threads change speed, and results only by float32 rounding (about 1e-7): logged with
    # every run, not part of a cell's key.
    threads = (
        {"cores": worker.cores, "requested": cfg.threads, "at_start": worker.threads}
        if worker
        else {"per_cell": cfg.cpus_per_cell}
    )
    common = {
        "config": cfg.to_dict(),
        "versions": library_versions(),
        "harness": harness_identity(),
        "threads": threads,
    }
    store = ResultStore(tracker, common, cfg.save_adapters)
    claims = Claims(tracker.tracking_uri, cfg.experiment)
    ctx = BenchContext(
        cfg,
        tracker,
        store,
        run_dir,
        prepared.tokenizer,
        common,
        worker,
        claims=claims,
        cluster=prepared.cluster,
    )
    return ctx, stamp


def _plan(ctx, tasks, method_classes, tune, failures) -> list[Cell]:
    """Every (task, method, seed) cell, tuning first where asked for."""
    cfg, cells = ctx.cfg, []
    model = model_identity(cfg.model_settings())
    for task in tasks.values():
        for name, method_cls in method_classes.items():
            hparams, lora = cfg.hparams.get(name, {}), cfg.lora_settings()
            if tune is not None:
                try:
                    hparams, lora = tune(ctx, task, method_cls)
                except Exception as err:  # no tuned values: this method's seeds would mean nothing
                    failure = CellFailure(name, task.name, None, describe_error(err))
                    label = failure.label
                    failures.append(failure)
                    traceback.print_exc()
                    ctx.tracker.record_failure(
                        label,
                        err,
                        params={**ctx.common_params, "task": task.info},
                        tags={KIND_TAG: TUNING, METHOD_TAG: name},
                    )
                    continue
            cells += plan_cells(cfg, task, name, method_cls, model, hparams, lora)
    return cells


def _missing_modes(cell: Cell, stored: dict) -> list[str]:
    """The cell's modes without a FINISHED result in the store (``stored``: mode -> run)."""
    return [m.name for m in cell.modes() if m.name not in stored]


def _complete_cell(ctx, task: PreparedTask, cell: Cell, stored: dict) -> list[Result]:
    """The cell's results in mode order: the stored ones reused, the missing ones run."""
    reused = {
        m.name: ctx.store.load(cell, stored[m.name]) for m in cell.modes() if m.name in stored
    }
    return write_results(ctx, cell, {**reused, **execute_cell(ctx, task, cell, stored)})


def execute_cell(ctx, task: PreparedTask, cell: Cell, stored: dict) -> dict[str, Result]:
    """Run in this process the modes of ``cell`` that ``stored`` lacks, record each in the
    store, and return them by mode (a Ray worker calls this too)."""
    results: dict[str, Result] = {}
    missing = _missing_modes(cell, stored)
    if ctx.cfg.force:  # starts afresh, from no checkpoint either
        shutil.rmtree(ctx.checkpoint_dir(cell), ignore_errors=True)
    if missing:
        checkpointer = ctx.checkpointer(cell)
        data = cell_data(ctx.cfg, ctx.tokenizer, task, cell)
        worker = ctx.worker
        threads, changes = (worker.threads, len(worker.history)) if worker else (None, 0)
        result = run_cell(
            cell,
            ctx.base_model,
            data,
            checkpointer=checkpointer,
            modes=missing,
            save_adapter=ctx.cfg.save_adapters,
        )
        for note in result.notes:
            print(f"bayeslora: {cell.label}: {note}", file=sys.stderr)
        # every thread count the cell ran with (other workers may start and end meanwhile)
        used = ",".join(str(n) for n in [threads, *worker.history[changes:]]) if worker else ""
        tags = {THREADS_TAG: used} if worker else {}
        for row, probs in ctx.store.record(result, task.info, data, tags):
            results[row.mode] = (row, probs)
            print(format_table([row], header=False), file=sys.stderr)
        for mode_result in result.modes:
            for ood in mode_result.ood:
                shown = ("accuracy", "ece", "ood_auroc_maxprob", "ood_auroc_entropy")
                values = "  ".join(f"{m} {ood.metrics[m]:.4f}" for m in shown)
                label = f"{mode_result.mode.name}/{cell.task}->{ood.task}/seed{cell.seed}"
                print(f"bayeslora: out of distribution {label}: {values}", file=sys.stderr)
    if not ctx.cfg.keep_checkpoints:  # every result is in the store now
        shutil.rmtree(ctx.checkpoint_dir(cell), ignore_errors=True)
    return results


def write_results(ctx, cell: Cell, results: dict[str, Result]) -> list[Result]:
    """The cell's results (every mode's) in mode order, appended to ``results.jsonl``."""
    ordered = [results[m.name] for m in cell.modes()]
    with open(ctx.run_dir / "results.jsonl", "a") as f:
        for row, _ in ordered:
            f.write(json.dumps(asdict(row)) + "\n")
    ctx.results_done += len(ordered)
    return ordered


def _report(ctx, tasks, cells, results, failures) -> list[ResultRow]:
    """Per task: differences to the baseline (the first method's first mode), and over
    seeds; then the whole table, failed cells included; then the paper-style table and the
    plots. All with the code of ``python -m bayeslora.report``, on this invocation's results.
    Written to the run directory before it is logged, so that a store failing now loses
    none of it."""
    rows, records, logged = [], [], []
    for task in tasks.values():
        task_results = [r for c in cells if c.task == task.name for r in results.get(c.key, [])]
        rows += [row for row, _ in task_results]
        records += [_record(row, probs, task, ctx.cfg.model) for row, probs in task_results]
    baselines = {name: _baseline_mode(ctx.cfg, cells, name) for name in tasks}
    # with several seeds, also mean ± std over seeds: what training noise leaves
    for summary in summarise(records, baselines, over_seeds=len(ctx.cfg.seeds) > 1):
        if summary.comparisons:
            text = summary.comparison_text
            logged.append(_publish(ctx, "comparison", summary.task, text, summary.comparisons))
        if summary.seeds:
            text = summary.seeds_text
            logged.append(_publish(ctx, "seeds", summary.task, text, summary.seeds))
    table = format_table(rows, failures=failures)
    (ctx.run_dir / "results.txt").write_text(table + "\n")
    results_json = {"rows": [asdict(r) for r in rows], "failures": [asdict(f) for f in failures]}
    paper, plots = _paper_report(ctx, records, cells, results)
    with _store_guard(ctx, "the results table was being logged (it is in results.txt)"):
        for payload, name in logged:
            ctx.tracker.log_dict(payload, name)
        ctx.tracker.log_text(table, "results.txt")
        ctx.tracker.log_dict(results_json, "results.json")
        for name, text in paper.items():
            ctx.tracker.log_text(text, name)
        if plots:
            ctx.tracker.log_directory(
                lambda d: shutil.copytree(ctx.run_dir / "plots", d, dirs_exist_ok=True), "plots"
            )
    return rows


def _record(row: ResultRow, probs: torch.Tensor, task: PreparedTask, model: str) -> ResultRecord:
    """A result of this invocation as the report reads one from the store."""
    return ResultRecord(
        kind=RESULT,
        method=row.method,
        mode=row.mode,
        task=row.task,
        seed=row.seed,
        metrics=row.metrics,
        cell=row.cell,
        model=model,
        run_id=row.mlflow_run_id,
        probs=probs,
        labels=task.eval_data.labels,
    )


def _ood_records(ctx, cells: list[Cell], results: dict) -> list[ResultRecord]:
    """The stored out-of-distribution results of this invocation's finished cells, the
    newest per (cell, mode, evaluation task): the table's "A→B" groups. Reading them must
    never fail the bench (the table is what is left), so a store error skips them."""
    if not ctx.cfg.eval_tasks:
        return []
    try:
        source = ResultSource(ctx.tracker.tracking_uri)
        runs = [
            run
            for cell in cells
            if results.get(cell.key)
            for run in ctx.store.finished_ood(cell).values()
        ]
        return load_results(source, runs)
    except Exception as err:
        print(
            f"bayeslora: out-of-distribution groups skipped: {describe_error(err)}", file=sys.stderr
        )
        return []


def _paper_report(
    ctx, records: list[ResultRecord], cells: list[Cell], results: dict
) -> tuple[dict[str, str], list]:
    """The paper-style table (``table.md``, ``table.csv``: ``records`` and the stored
    out-of-distribution groups of ``cells``) and the plots (reliability per task; the tau
    and samples curves of the runs that stored their predictions) in the run directory;
    returns the table's files by name and the plots written."""
    if not records:
        return {}, []
    table = paper_table(records + _ood_records(ctx, cells, results))
    paper = {"table.md": table.markdown(), "table.csv": table.csv()}
    for name, text in paper.items():
        (ctx.run_dir / name).write_text(text)
    print(paper["table.md"], file=sys.stderr)
    try:
        curves = result_curves(records, ResultSource(ctx.tracker.tracking_uri).arrays)
    except Exception as err:  # a curve must never fail the bench: the table is done
        print(f"bayeslora: curves skipped: {describe_error(err)}", file=sys.stderr)
        curves = {}
    return paper, draw_plots(records, curves, ctx.run_dir / "plots")


def _baseline_mode(cfg: BenchConfig, cells: list[Cell], task: str) -> str:
    """The mode everything is compared with: the first method's first, as its cells
    declare it (the first method's name, if none of its cells was planned)."""
    first = cfg.methods[0]
    for cell in cells:
        if cell.method == first and cell.task == task:
            return cell.modes()[0].name
    return first


def _publish(ctx, kind: str, task_name: str, text: str, payload) -> tuple:
    """A per-task report: printed and appended to ``<kind>.txt``; returns what to log
    (``<kind>_<task>.json``)."""
    print(text, file=sys.stderr)
    with open(ctx.run_dir / f"{kind}.txt", "a") as f:
        f.write(text + "\n")
    return payload, f"{kind}_{task_name}.json"
