"""The paper-style table: prediction modes as rows, tasks as column groups, each metric as
mean ± std over seeds with the number of seeds, the best value of each column marked.

A column group is a task ("arc_easy"), or for an out-of-distribution result the task
trained on and the task scored on ("arc_easy→arc_challenge"). The standard deviation is the
sample one (n - 1; 0 for one seed), as in :mod:`~bayeslora.report.seed_summary`. The best
mean of a column (by the metric's direction; ties all) is bold in Markdown and ``best`` = 1
in the CSV; a column with a single row marks nothing.

Markdown (``table.md``) for reading; CSV (``table.csv``) one line per (group, mode, metric)
with ``group, task, eval_task, mode, method, metric, mean, std, n, best``, for pandas.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bayeslora.metrics.ood import OOD_METRICS
from bayeslora.metrics.registry import METRICS, Direction, UnknownMetricError, table_metrics
from bayeslora.report.result import ResultRecord

# Out-of-distribution detection scores (OOD_METRICS) are logged by the OOD runs; they are
# not functions of (probs, labels), so not in the metric registry.


@dataclass(frozen=True)
class Column:
    """How a metric shows in the table."""

    name: str
    header: str
    fmt: str
    direction: Direction


def column(name: str) -> Column:
    """A registered metric, or an OOD detection score; anything else is an
    :class:`~bayeslora.metrics.registry.UnknownMetricError` naming the choices."""
    if name in METRICS:
        m = METRICS[name]
        return Column(m.name, m.header, m.fmt, m.direction)
    if name in OOD_METRICS:
        ood = OOD_METRICS[name]
        direction = Direction.HIGHER if ood.higher_is_better else Direction.LOWER
        return Column(name, ood.header, ".4f", direction)
    raise UnknownMetricError(
        f"unknown metric {name!r}; the table can show: {', '.join(METRICS)} and the OOD "
        "scores ood_{auroc,fpr95}_{maxprob,entropy,mi}"
    )


def default_columns() -> list[str]:
    """The registry's table metrics; OOD groups add the OOD scores their runs logged."""
    return [m.name for m in table_metrics()]


@dataclass
class Entry:
    """One cell of the table: a metric of a mode on a group, over seeds."""

    mean: float
    std: float
    n: int
    best: bool = False


@dataclass
class PaperTable:
    rows: list[tuple[str, str]]  # (mode, method), in first-seen order
    groups: list[str]  # column groups, in-distribution tasks first
    columns: dict[str, list[Column]]  # group -> its metric columns
    entries: dict[tuple[str, str, str], Entry]  # (mode, group, metric) -> entry
    warnings: list[str]
    tasks: dict[str, tuple[str, str]]  # group -> (task trained on, task scored on)

    def markdown(self) -> str:
        header = ["mode"]
        for group in self.groups:
            header += [f"{group} {c.header}" for c in self.columns[group]]
        lines = [header]
        for mode, _ in self.rows:
            line = [mode]
            for group in self.groups:
                for c in self.columns[group]:
                    line.append(self._text(self.entries.get((mode, group, c.name)), c))
            lines.append(line)
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        out = []
        for i, line in enumerate(lines):
            cells = [
                f"{text:<{w}}" if j == 0 else f"{text:>{w}}"
                for j, (text, w) in enumerate(zip(line, widths, strict=True))
            ]
            out.append("| " + " | ".join(cells) + " |")
            if i == 0:  # the first column left-aligned, the numbers right-aligned
                rule = ["-" * w if j == 0 else "-" * (w - 1) + ":" for j, w in enumerate(widths)]
                out.append("| " + " | ".join(rule) + " |")
        note = "mean ± std over seeds (n = seeds); **bold**: best in its column; " + ", ".join(
            f"{c.header} {'↑' if c.direction is Direction.HIGHER else '↓'}"
            for c in self._all_columns()
        )
        return "\n".join(out) + "\n\n" + note + "\n"

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(
            ["group", "task", "eval_task", "mode", "method", "metric", "mean", "std", "n", "best"]
        )
        for group in self.groups:
            task, eval_task = self.tasks[group]
            for mode, method in self.rows:
                for c in self.columns[group]:
                    e = self.entries.get((mode, group, c.name))
                    if e is not None:
                        writer.writerow(
                            [
                                group,
                                task,
                                eval_task,
                                mode,
                                method,
                                c.name,
                                repr(e.mean),
                                repr(e.std),
                                e.n,
                                int(e.best),
                            ]
                        )
        return out.getvalue()

    def _all_columns(self) -> list[Column]:
        seen: dict[str, Column] = {}
        for group in self.groups:
            for c in self.columns[group]:
                seen.setdefault(c.name, c)
        return list(seen.values())

    @staticmethod
    def _text(entry: Entry | None, c: Column) -> str:
        if entry is None:
            return "–"
        text = f"{entry.mean:{c.fmt}} ± {entry.std:{c.fmt}}"
        return (f"**{text}**" if entry.best else text) + f" ({entry.n})"


def paper_table(
    results: Iterable[ResultRecord], metrics: Sequence[str] | None = None
) -> PaperTable:
    """The table of ``results`` (each (kind, cell, mode, eval task) once); ``metrics``:
    the column names (default: :func:`default_columns`, plus the OOD scores on OOD groups)."""
    results = list(results)
    chosen = [column(name) for name in (metrics or default_columns())]
    rows: dict[str, str] = {}
    groups: dict[str, list[ResultRecord]] = {}
    for r in results:
        rows.setdefault(r.mode, r.method)
        groups.setdefault(r.group, []).append(r)
    order = sorted(groups, key=lambda g: (not groups[g][0].in_distribution, list(groups).index(g)))
    columns, entries, warnings = {}, {}, []
    for group in order:
        members = groups[group]
        group_columns = list(chosen)
        if metrics is None and not members[0].in_distribution:  # the OOD scores it logged
            logged = {name for r in members for name in r.metrics}
            group_columns += [column(n) for n in OOD_METRICS if n in logged]
        group_columns = [
            c for c in group_columns if any(_value(r, c.name) is not None for r in members)
        ]
        columns[group] = group_columns
        by_mode: dict[str, list[ResultRecord]] = {}
        for r in members:
            by_mode.setdefault(r.mode, []).append(r)
        for mode, runs in by_mode.items():
            warnings += _duplicate_seeds(group, mode, runs)
            for c in group_columns:
                values = [v for v in (_value(r, c.name) for r in runs) if v is not None]
                if values:
                    std = statistics.stdev(values) if len(values) > 1 else 0.0
                    entries[(mode, group, c.name)] = Entry(
                        statistics.fmean(values), std, len(values)
                    )
        for c in group_columns:
            _mark_best([e for (m, g, n), e in entries.items() if g == group and n == c.name], c)
    for w in warnings:
        print(f"bayeslora.report: warning: {w}", file=sys.stderr)
    tasks = {g: (groups[g][0].task, groups[g][0].eval_task) for g in order}
    return PaperTable(list(rows.items()), order, columns, entries, warnings, tasks)


def _value(record: ResultRecord, name: str) -> float | None:
    value = record.metrics.get(name)
    return None if value is None or math.isnan(value) else float(value)


def _mark_best(entries: list[Entry], c: Column) -> None:
    if len(entries) < 2:
        return
    pick = max if c.direction is Direction.HIGHER else min
    best = format(pick(e.mean for e in entries), c.fmt)
    for e in entries:  # ties as shown: a difference below the last digit is none to a reader
        e.best = format(e.mean, c.fmt) == best


def _duplicate_seeds(group: str, mode: str, runs: list[ResultRecord]) -> list[str]:
    """Two results of one seed from different cells (other settings) are both averaged."""
    seeds: dict[int, list[str]] = {}
    for r in runs:
        seeds.setdefault(r.seed, []).append(r.cell)
    return [
        f"{mode} on {group}: seed {seed} has {len(cells)} results from different cells "
        f"({', '.join(cells)}: other settings) and all are averaged; narrow the selection "
        "(--parent-run-id, --model) to report one setting"
        for seed, cells in seeds.items()
        if len(cells) > 1
    ]
