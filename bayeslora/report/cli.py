"""``python -m bayeslora.report``: the table and plots of stored results, without retraining.

Reads the FINISHED result (and OOD) runs of an MLflow experiment, selected by parent run
(bench invocation), task, method, mode and model; writes the report to ``--output-dir``,
prints the table, and logs the files to a new run of kind ``report`` in the same experiment.
Bad input (no store, unknown experiment or parent run, nothing selected, unknown metric or
baseline, no matplotlib for the plots) exits 2 before any prediction is read.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

from bayeslora.tracking.schema import KIND_TAG, MODE_TAG, REPORT

DEFAULT_OUTPUT_DIR = "runs"  # the bench's default --output-dir, whose store is the default
DEFAULT_EXPERIMENT = "bayeslora"  # the bench's default --experiment


def _items(text: str) -> list[str]:
    """Each value of a repeatable option may itself be comma-separated."""
    return [item.strip() for item in text.split(",") if item.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bayeslora.report",
        description="Build the paper-style table (mean ± std over seeds, best per column), the "
        "paired differences to a baseline, the over-seed summaries and the plots from the "
        "results in an MLflow store, whichever bench invocations or machines wrote them.",
    )
    g = p.add_argument_group("where the results are")
    g.add_argument(
        "--tracking-uri",
        help="the MLflow store (sqlite:///..., http://host:port of an mlflow server); default: "
        f"$MLFLOW_TRACKING_URI, else the bench's default {DEFAULT_OUTPUT_DIR}/mlflow.db",
    )
    g.add_argument(
        "--experiment", default=DEFAULT_EXPERIMENT, help="MLflow experiment (default %(default)s)"
    )
    g = p.add_argument_group(
        "which results (each option repeatable or comma-separated; default: all)"
    )
    g.add_argument(
        "--parent-run-id",
        dest="parent_run_ids",
        nargs="+",
        action="extend",
        type=_items,
        default=[],
        metavar="ID",
        help="results run by these bench invocations (their parent runs)",
    )
    g.add_argument(
        "--task",
        dest="tasks",
        nargs="+",
        action="extend",
        type=_items,
        default=[],
        metavar="T",
        help="tasks trained on",
    )
    g.add_argument(
        "--method",
        dest="methods",
        nargs="+",
        action="extend",
        type=_items,
        default=[],
        metavar="M",
        help="methods, e.g. adamw ivon",
    )
    g.add_argument(
        "--mode",
        dest="modes",
        nargs="+",
        action="extend",
        type=_items,
        default=[],
        metavar="MODE",
        help="prediction modes, e.g. ivon ivon@mean",
    )
    g.add_argument(
        "--model",
        dest="models",
        nargs="+",
        action="extend",
        type=_items,
        default=[],
        metavar="MODEL",
        help="the bench's --model",
    )
    g = p.add_argument_group("what to report")
    g.add_argument(
        "--baseline",
        help="the mode the paired differences are to (default: adamw if "
        "selected, else the mode of the oldest result)",
    )
    g.add_argument(
        "--metrics",
        nargs="+",
        action="extend",
        type=_items,
        default=[],
        metavar="NAME",
        help="the table's metric columns (default: the registry's table metrics; e.g. "
        "accuracy ece ece_15 nll aurc ood_auroc_maxprob)",
    )
    g.add_argument(
        "--output-dir",
        type=Path,
        help=f"where the files go (default {DEFAULT_OUTPUT_DIR}/report-<UTC time>)",
    )
    g.add_argument("--no-plots", action="store_true", help="no figures (no matplotlib needed)")
    g.add_argument(
        "--no-log", action="store_true", help="do not log the report to a new MLflow run"
    )
    return p


def _flat(values: list) -> tuple[str, ...]:
    return tuple(item for group in values for item in group)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from bayeslora._optional import OptionalDependencyError
    from bayeslora.metrics.registry import UnknownMetricError
    from bayeslora.report.collect import ResultSource, Selection, SelectionError
    from bayeslora.report.table import column
    from bayeslora.tracking.mlflow_tracker import default_tracking_uri

    metrics = list(_flat(args.metrics)) or None
    selection = Selection(
        experiment=args.experiment,
        parent_run_ids=_flat(args.parent_run_ids),
        tasks=_flat(args.tasks),
        methods=_flat(args.methods),
        modes=_flat(args.modes),
        models=_flat(args.models),
    )
    uri = args.tracking_uri or default_tracking_uri(DEFAULT_OUTPUT_DIR)
    # 1. Everything that can be wrong, before any prediction is downloaded.
    try:
        for name in metrics or ():
            column(name)
        if not args.no_plots:
            from bayeslora.report.plots import require_matplotlib

            require_matplotlib()
        source = ResultSource(uri)
        runs = source.find(selection)
        modes = sorted({run.data.tags.get(MODE_TAG, "") for run in runs})
        if args.baseline and args.baseline not in modes:
            raise SelectionError(
                f"--baseline {args.baseline}: no selected result has that mode; choose one of "
                f"{', '.join(modes)}"
            )
    except OptionalDependencyError as err:
        print(f"error: {err}; or pass --no-plots", file=sys.stderr)
        return 2
    except (SelectionError, UnknownMetricError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # 2. Read, write, print, log.
    from bayeslora.report.build import build_report, print_report
    from bayeslora.report.collect import load_results

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out_dir = args.output_dir or Path(DEFAULT_OUTPUT_DIR) / f"report-{stamp}"
    print(f"bayeslora.report: reading {len(runs)} result(s)", file=sys.stderr)
    records = load_results(source, runs)
    report = build_report(
        records,
        out_dir,
        baseline=args.baseline,
        metrics=metrics,
        arrays=source.arrays,
        plots=not args.no_plots,
    )
    print_report(report, out_dir)
    if not args.no_log:
        _log(uri, selection, args, records, out_dir, stamp)
    return 0


def _log(uri, selection, args, records, out_dir: Path, stamp: str) -> None:
    """A new run of kind ``report`` with the report's files and what it was made of."""
    from bayeslora.tracking.mlflow_tracker import MlflowTracker

    tracker = MlflowTracker(uri, selection.experiment)
    params = {
        "selection": selection.describe(),
        "baseline": args.baseline or "",
        "results": len(records),
    }
    with tracker.run(f"report-{stamp}", params=params, tags={KIND_TAG: REPORT}) as run:
        tracker.log_dict({"run_ids": [r.run_id for r in records]}, "selection.json")
        tracker.log_directory(lambda d: shutil.copytree(out_dir, d, dirs_exist_ok=True), None)
    print(f"bayeslora.report: logged to MLflow run {run.info.run_id}", file=sys.stderr)
