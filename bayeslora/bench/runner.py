"""Run a benchmark: plan the cells, skip the finished ones, run the rest, report.

:func:`run_bench` reads top to bottom: resolve and validate everything → plan the cells
(one per task, method and seed; tuning, if asked for, decides their hyperparameters) →
look each cell's key up in the MLflow store and reuse what has finished → run the rest
→ report. Every finished cell is in MLflow and ``results.jsonl`` at once, so a crash,
Ctrl-C or ``kill`` later loses nothing that had finished, and the same command run again
picks up where it stopped (``--force`` reruns everything).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import traceback
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import filelock
import torch

from bayeslora.bench.comparison import compare_to_baseline, format_comparisons
from bayeslora.bench.config import BenchConfig
from bayeslora.bench.plan import PreparedTask, cell_data, plan_cells, prepare_task
from bayeslora.bench.results import CellFailure, ResultRow, format_table
from bayeslora.bench.seed_summary import (
    differences_over_seeds,
    format_seed_summary,
    metrics_over_seeds,
)
from bayeslora.bench.store import ResultStore
from bayeslora.cell import Cell, run_cell
from bayeslora.cell.identity import harness_identity, library_versions
from bayeslora.methods.registry import get_method
from bayeslora.models.identity import model_identity
from bayeslora.models.loading import (
    check_loaded_as,
    check_lora_targets,
    load_causal_lm,
    load_tokenizer,
    loaded_as,
)
from bayeslora.threads import Worker, worker_threads
from bayeslora.tracking.mlflow_tracker import (
    MlflowTracker,
    TrackingStoreError,
    default_tracking_uri,
)
from bayeslora.tracking.urls import mask_url
from bayeslora.training.checkpoint import Checkpointer
from bayeslora.training.loop import DivergedError

Result = tuple[ResultRow, torch.Tensor]  # a row and its per-example probabilities


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

    @property
    def base_model(self):
        if self.loaded_model is None:
            settings = self.cfg.model_settings()
            model = load_causal_lm(settings)
            check_loaded_as(settings, loaded_as(model))
            self.loaded_model = model
        return self.loaded_model

    def checkpoint_dir(self, cell: Cell) -> Path:
        return Path(self.cfg.output_dir) / "checkpoints" / cell.key

    def claim(self, cell: Cell) -> filelock.FileLock:
        """The lock a bench process holds while it runs ``cell`` (one file per cell key
        under ``<output-dir>/claims``; the operating system releases it if the process dies)."""
        path = Path(self.cfg.output_dir) / "claims" / f"{cell.key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        return filelock.FileLock(path)

    def checkpointer(self, cell: Cell) -> Checkpointer | None:
        if not self.cfg.checkpoint_every:
            return None
        return Checkpointer(self.checkpoint_dir(cell), self.cfg.checkpoint_every)


def check_methods(cfg: BenchConfig) -> dict[str, type]:
    """Resolve every method, its hyperparameters and its prediction modes before anything
    slow happens."""
    method_classes = {name: get_method(name) for name in cfg.methods}
    lora = cfg.lora_settings()
    for name, cls in method_classes.items():
        for task in cfg.tasks:  # with each task's defaults under the overrides
            cls(cls.make_config(task, cfg.hparams.get(name)), train=cfg.train_settings(0)).modes()
        cls.check_lora(lora)
    if cfg.quantization != "none":
        for name, cls in method_classes.items():
            if not cls.quantized_base:
                raise ValueError(
                    f"method '{name}' does not work on a base quantized with --quantization "
                    f"{cfg.quantization}: {cls.quantized_base_reason}; use --quantization none"
                )
    unknown = set(cfg.hparams) - set(method_classes)
    if unknown:
        raise ValueError(
            f"hyperparameters given for method(s) {sorted(unknown)} that are not in --methods {cfg.methods}"
        )
    return method_classes


def preflight(cfg: BenchConfig) -> None:
    """What can be checked in seconds and would otherwise fail after loading or training:
    the tracking server and the optuna storage answer and have their drivers, the jsonl
    files parse. Raises ValueError (or a subclass) naming the problem."""
    from bayeslora.tracking.urls import check_reachable

    uri = cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        check_reachable(uri, "--tracking-uri")
        if "://" in uri and not uri.startswith(("http", "file", "sqlite", "databricks")):
            from bayeslora.tuning.storage import check_storage

            check_storage(uri, "--tracking-uri")  # an SQLAlchemy URL: its driver must be there
    if cfg.tune or cfg.tune_only:
        from bayeslora.tuning.storage import check_storage

        check_storage(cfg.storage)
    if cfg.source == "jsonl":
        from bayeslora.tasks.jsonl import read_jsonl

        for path in (cfg.jsonl_train, cfg.jsonl_eval):
            if path:
                read_jsonl(path)


def run_bench(cfg: BenchConfig, tune=None) -> tuple[list[ResultRow], list[CellFailure]]:
    """Returns the result rows (run now or reused) and the failed cells, each with why.

    ``tune(ctx, task, method_cls) -> (hparams, lora_settings)``, if given, is called once
    per (method, task) while planning; its values become part of the cells' keys.
    """
    method_classes = check_methods(cfg)
    preflight(cfg)
    with worker_threads(cfg.threads) as worker:
        return _run(cfg, tune, method_classes, worker)


def _run(cfg, tune, method_classes, worker) -> tuple[list[ResultRow], list[CellFailure]]:
    ctx, stamp = _open(cfg, worker)
    failures: list[CellFailure] = []
    with ctx.tracker.run(
        f"bench-{stamp}", params=ctx.common_params, tags={"bayeslora.kind": "bench"}
    ):
        tasks = {name: prepare_task(cfg, ctx.tokenizer, name) for name in cfg.tasks}
        cells = _plan(ctx, tasks, method_classes, tune, failures)
        stored = {} if cfg.force else {cell.key: ctx.store.finished(cell) for cell in cells}
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
            done = sum(len(r) for r in results.values())
            print(
                f"\nbayeslora: interrupted; {done} finished result(s) are in "
                f"{ctx.run_dir / 'results.jsonl'} and MLflow; run the same command again to "
                "continue",
                file=sys.stderr,
            )
            raise
        rows = _report(ctx, tasks, cells, results, failures, method_classes)
    return rows, failures


def _run_cells(ctx, tasks, cells, stored, results, failures) -> None:
    """Each cell in plan order, claimed first: a cell that another bench process sharing
    the output directory is running is left for last, then waited for and reused (or run,
    if that process failed), so that no cell runs twice."""
    waiting = []
    for cell in cells:
        if not _missing_modes(cell, stored.get(cell.key, {})):
            _attempt(ctx, tasks[cell.task], cell, stored[cell.key], results, failures)
            continue
        claim = ctx.claim(cell)
        try:
            claim.acquire(timeout=0)
        except filelock.Timeout:
            waiting.append((cell, claim))
            continue
        try:  # held until the cell's results are stored (or it failed)
            _attempt(ctx, tasks[cell.task], cell, _finished(ctx, cell), results, failures)
        finally:
            claim.release()
    for cell, claim in waiting:
        print(
            f"bayeslora: waiting for {cell.label}: another bench process runs it", file=sys.stderr
        )
        with claim:
            _attempt(ctx, tasks[cell.task], cell, _finished(ctx, cell), results, failures)


def _finished(ctx, cell: Cell) -> dict:
    """The cell's stored results as of now (another process may have added some)."""
    return {} if ctx.cfg.force else ctx.store.finished(cell)


def _attempt(ctx, task, cell: Cell, stored: dict, results, failures) -> None:
    """Complete one cell; an error is recorded as its failure and the next cell goes on,
    unless the tracking store itself stopped answering (then nothing more can be stored)."""
    try:
        results[cell.key] = _complete_cell(ctx, task, cell, stored)
    except KeyboardInterrupt:
        raise
    except Exception as err:  # one broken cell must not cost the others
        if not ctx.tracker.answers():
            raise TrackingStoreError(
                f"the tracking store {mask_url(ctx.tracker.tracking_uri)} stopped answering "
                f"while {cell.label} was being recorded ({type(err).__name__}: {err}); the "
                f"{sum(len(r) for r in results.values())} result(s) finished before it are in "
                f"the store and in {ctx.run_dir / 'results.jsonl'}. Start the store again and "
                "run the same command: finished cells are reused, the rest run"
            ) from err
        failures.append(CellFailure(cell.method, cell.task, cell.seed, _reason(err)))
        if isinstance(err, DivergedError):  # the method's numbers, not the code, failed
            print(f"bayeslora: {cell.label} failed: {_reason(err)}", file=sys.stderr)
        else:
            traceback.print_exc()
        ctx.store.record_failure(cell, err, task.info)


def _reason(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _open(cfg: BenchConfig, worker: Worker) -> tuple[BenchContext, str]:
    output_dir = Path(cfg.output_dir)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    tokenizer = _tokenizer(cfg)  # before the store: a model that is not there fails first
    check_lora_targets(cfg.lora_settings().target_modules, cfg.model_settings())
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
    )
    print(
        f"bayeslora: preset {cfg.preset}, {cfg.steps} steps, {worker.threads} torch thread(s) "
        f"on {worker.cores} core(s); results in {run_dir}, MLflow store "
        f"{mask_url(tracker.tracking_uri)}",
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
    threads = {"cores": worker.cores, "requested": cfg.threads, "at_start": worker.threads}
    common = {
        "config": cfg.to_dict(),
        "versions": library_versions(),
        "harness": harness_identity(),
        "threads": threads,
    }
    store = ResultStore(tracker, common, cfg.save_adapters)
    return BenchContext(cfg, tracker, store, run_dir, tokenizer, common, worker), stamp


def _tokenizer(cfg: BenchConfig):
    """The model's tokenizer; a model that cannot be found is a ValueError saying where
    it was looked for (the hub client's own errors do not)."""
    try:
        return load_tokenizer(cfg.model_settings())
    except (OSError, ValueError) as err:  # HFValidationError is a ValueError, the rest OSError
        raise ValueError(
            f"--model {cfg.model!r} could not be loaded: not a packaged model, not a local "
            f"directory, and not found on the Hugging Face hub or in its cache ({err}); "
            "check the name, or give a local directory"
        ) from None


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
                    failure = CellFailure(name, task.name, None, _reason(err))
                    label = failure.label
                    failures.append(failure)
                    traceback.print_exc()
                    ctx.tracker.record_failure(
                        label,
                        err,
                        params={**ctx.common_params, "task": task.info},
                        tags={"bayeslora.kind": "tuning", "bayeslora.method": name},
                    )
                    continue
            cells += plan_cells(cfg, task, name, method_cls, model, hparams, lora)
    return cells


def _missing_modes(cell: Cell, stored: dict) -> list[str]:
    """The cell's modes without a FINISHED result in the store (``stored``: mode -> run)."""
    return [m.name for m in cell.modes() if m.name not in stored]


def _complete_cell(ctx, task: PreparedTask, cell: Cell, stored: dict) -> list[Result]:
    """The cell's results in mode order: the stored ones reused, the missing ones run."""
    modes = [m.name for m in cell.modes()]
    results = {m: ctx.store.load(cell, stored[m]) for m in modes if m in stored}
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
        tags = {"bayeslora.threads": used} if worker else {}
        for row, probs in ctx.store.record(result, task.info, data, tags):
            results[row.mode] = (row, probs)
            print(format_table([row], header=False), file=sys.stderr)
    if not ctx.cfg.keep_checkpoints:  # every result is in the store now
        shutil.rmtree(ctx.checkpoint_dir(cell), ignore_errors=True)
    ordered = [results[m] for m in modes]
    with open(ctx.run_dir / "results.jsonl", "a") as f:
        for row, _ in ordered:
            f.write(json.dumps(asdict(row)) + "\n")
    return ordered


def _report(ctx, tasks, cells, results, failures, method_classes) -> list[ResultRow]:
    """Per task: differences to the baseline (the first method's first mode), and over
    seeds; then the whole table, failed cells included."""
    rows = []
    first = ctx.cfg.methods[0]
    for task in tasks.values():
        task_results = [r for c in cells if c.task == task.name for r in results.get(c.key, [])]
        rows += [row for row, _ in task_results]
        baseline = method_classes[first](method_classes[first].make_config(task.name)).modes()[0]
        comparisons = compare_to_baseline(task_results, task.eval_data.labels, baseline.name)
        if comparisons:
            _publish(ctx, "comparison", task.name, format_comparisons(comparisons), comparisons)
        if len(ctx.cfg.seeds) > 1 and task_results:
            # mean ± std over seeds of each metric and difference: what training noise leaves
            summary = {
                "metrics": metrics_over_seeds(row for row, _ in task_results),
                "differences": differences_over_seeds(comparisons),
            }
            text = format_seed_summary(summary["metrics"], summary["differences"])
            _publish(ctx, "seeds", task.name, text, summary)
    table = format_table(rows, failures=failures)
    ctx.tracker.log_text(table, "results.txt")
    ctx.tracker.log_dict(
        {"rows": [asdict(r) for r in rows], "failures": [asdict(f) for f in failures]},
        "results.json",
    )
    (ctx.run_dir / "results.txt").write_text(table + "\n")
    return rows


def _publish(ctx, kind: str, task_name: str, text: str, payload) -> None:
    """A per-task report: printed, appended to ``<kind>.txt``, logged as ``<kind>_<task>.json``."""
    print(text, file=sys.stderr)
    ctx.tracker.log_dict(payload, f"{kind}_{task_name}.json")
    with open(ctx.run_dir / f"{kind}.txt", "a") as f:
        f.write(text + "\n")
