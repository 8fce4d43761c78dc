"""Everything a report holds, from a list of results: the table, the differences to a
baseline, the over-seed summaries, the curves and the plots, written to one directory.

Used by ``python -m bayeslora.report`` (results read from a store) and by the bench at the
end of a run (this invocation's results), so both report with the same code.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bayeslora._optional import OptionalDependencyError
from bayeslora.report import plots as plotting
from bayeslora.report.comparison import compare_to_baseline, format_comparisons
from bayeslora.report.curves import Arrays, Curve, result_curves
from bayeslora.report.result import ResultRecord
from bayeslora.report.seed_summary import (
    differences_over_seeds,
    format_seed_summary,
    metrics_over_seeds,
)
from bayeslora.report.table import PaperTable, paper_table


@dataclass
class GroupSummary:
    """The paired differences to the baseline and the over-seed summary of one task."""

    task: str
    baseline: str
    comparisons: list[dict]
    seeds: dict | None  # {"metrics": [...], "differences": [...]}; None: one seed only

    @property
    def comparison_text(self) -> str:
        return format_comparisons(self.comparisons)

    @property
    def seeds_text(self) -> str:
        return (
            format_seed_summary(self.seeds["metrics"], self.seeds["differences"])
            if self.seeds
            else ""
        )


@dataclass
class Report:
    table: PaperTable
    summaries: list[GroupSummary]
    curves: dict[str, list[Curve]] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)  # written, relative to the output dir


def default_baseline(records: Sequence[ResultRecord]) -> str:
    """``adamw`` where there is one, else the mode of the oldest result."""
    modes = [r.mode for r in records]
    return "adamw" if "adamw" in modes else modes[0]


def summarise(
    records: Sequence[ResultRecord],
    baseline: str | Mapping[str, str],
    over_seeds: bool | None = None,
    n_resamples: int = 1000,
) -> list[GroupSummary]:
    """Per in-distribution task of ``records`` (with predictions): each result against the
    baseline's result of the same seed (a paired bootstrap over the evaluation examples),
    and, with several seeds (``over_seeds`` None: where a mode has more than one), the
    metrics and differences as mean ± std over seeds. ``baseline``: a mode, or one per task.

    A result scored on other examples than its baseline (another ``--limit-eval``) gets an
    entry with ``missing`` saying so, as a seed whose baseline failed does."""
    tasks: dict[str, list[ResultRecord]] = {}
    for r in records:
        if r.in_distribution and r.probs is not None:
            tasks.setdefault(r.task, []).append(r)
    summaries = []
    for task, members in tasks.items():
        base_mode = baseline if isinstance(baseline, str) else baseline[task]
        bases = {r.seed: r for r in members if r.mode == base_mode}
        comparisons = []
        for r in members:  # one at a time: each pair has its own examples
            base = bases.get(r.seed)
            if r.mode == base_mode:
                continue
            if base is not None and not _same_examples(r, base):
                comparisons.append(
                    {
                        "mode": r.mode,
                        "baseline": base_mode,
                        "task": task,
                        "seed": r.seed,
                        "missing": f"scored on other examples than {base_mode} for seed {r.seed}",
                    }
                )
                continue
            pair = [(r, r.probs)] + ([(base, base.probs)] if base is not None else [])
            labels = (base or r).labels
            comparisons += compare_to_baseline(pair, labels, base_mode, n_resamples)
        several = over_seeds
        if several is None:
            seeds_per_mode: dict[str, set[int]] = {}
            for r in members:
                seeds_per_mode.setdefault(r.mode, set()).add(r.seed)
            several = any(len(s) > 1 for s in seeds_per_mode.values())
        seeds = None
        if several:
            seeds = {
                "metrics": metrics_over_seeds(members),
                "differences": differences_over_seeds(comparisons),
            }
        summaries.append(GroupSummary(task, base_mode, comparisons, seeds))
    return summaries


def draw_plots(
    records: Sequence[ResultRecord], curves: Mapping[str, list[Curve]], directory: Path
) -> list[Path]:
    """Every plot the results allow, as PNG files in ``directory``; a plot that cannot be
    drawn is skipped with a warning (the table must not depend on a figure)."""
    try:
        plotting.require_matplotlib()
    except OptionalDependencyError as err:
        warnings.warn(f"plots skipped: {err}", stacklevel=2)
        return []
    figures: list[tuple[str, Callable]] = []
    tasks: dict[str, list[ResultRecord]] = {}
    for r in records:
        if r.in_distribution and r.probs is not None:
            tasks.setdefault(r.task, []).append(r)
    for task, members in tasks.items():
        figures.append(
            (
                plotting.file_name("reliability", task),
                lambda t=task, m=members: plotting.reliability_figure(t, m),
            )
        )
    for kind, draw in (("tau", plotting.tau_figure), ("samples", plotting.samples_figure)):
        by_task: dict[str, list[Curve]] = {}
        for c in curves.get(kind, []):
            by_task.setdefault(c.task, []).append(c)
        for task, group in by_task.items():
            figures.append(
                (plotting.file_name(kind, task), lambda t=task, g=group, d=draw: d(t, g))
            )
    written = []
    for name, make in figures:
        try:
            written.append(plotting.save(make(), directory / name))
        except Exception as err:  # one figure must not cost the others, nor the table
            warnings.warn(f"plot {name} skipped: {type(err).__name__}: {err}", stacklevel=2)
    return written


def build_report(
    records: Sequence[ResultRecord],
    out_dir: Path,
    *,
    baseline: str | None = None,
    metrics: Sequence[str] | None = None,
    arrays: Arrays | None = None,
    plots: bool = True,
    n_resamples: int = 1000,
) -> Report:
    """Write the report of ``records`` to ``out_dir``: ``table.md``, ``table.csv``,
    ``comparison.txt``/``.json``, ``seeds.txt``/``.json`` (with several seeds),
    ``curves.json`` and ``plots/*.png``. ``arrays(run_id, artifact)`` reads the curves'
    artifacts of a run (None: no curves)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = Report(paper_table(records, metrics), summaries=[])
    report.summaries = summarise(records, baseline or default_baseline(records), None, n_resamples)
    report.curves = result_curves(records, arrays) if arrays else {"samples": [], "tau": []}
    texts = {
        "table.md": report.table.markdown(),
        "table.csv": report.table.csv(),
        "comparison.txt": _joined(s.comparison_text for s in report.summaries),
        "seeds.txt": _joined(s.seeds_text for s in report.summaries),
    }
    payloads = {
        "comparison.json": {s.task: s.comparisons for s in report.summaries},
        "seeds.json": {s.task: s.seeds for s in report.summaries if s.seeds},
        "curves.json": {k: [c.to_dict() for c in v] for k, v in report.curves.items()},
    }
    for name, text in texts.items():
        if text:
            (out_dir / name).write_text(text)
            report.files.append(Path(name))
    for name, payload in payloads.items():
        if any(payload.values()):
            (out_dir / name).write_text(json.dumps(payload, indent=1))
            report.files.append(Path(name))
    if plots:
        report.files += [
            p.relative_to(out_dir) for p in draw_plots(records, report.curves, out_dir / "plots")
        ]
    return report


def _joined(texts) -> str:
    texts = [t for t in texts if t]
    return "\n\n".join(texts) + "\n" if texts else ""


def _same_examples(a: ResultRecord, b: ResultRecord) -> bool:
    if a.ids is not None and b.ids is not None:
        return list(a.ids) == list(b.ids)
    return a.labels is not None and b.labels is not None and a.labels.equal(b.labels)


def print_report(report: Report, out_dir: Path, file=None) -> None:
    """The table on ``file``; the differences and summaries on stderr, as the bench prints them."""
    for s in report.summaries:
        for text in (s.comparison_text, s.seeds_text):
            if text:
                print(text, file=sys.stderr)
    print(report.table.markdown(), file=file or sys.stdout)
    print(
        f"bayeslora.report: wrote {', '.join(str(f) for f in report.files)} to {out_dir}",
        file=sys.stderr,
    )
