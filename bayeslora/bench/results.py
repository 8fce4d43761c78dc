"""A result row (one prediction mode of one finished cell) and the results table."""

from __future__ import annotations

from dataclasses import dataclass

from bayeslora.metrics.registry import table_metrics


@dataclass
class ResultRow:
    mode: str  # the prediction mode, e.g. "ivon@mean"
    method: str  # the method that produced it, e.g. "ivon"
    task: str
    seed: int
    cell: str  # the cell's key
    metrics: dict[str, float]  # every registered metric, by name
    train_time_s: float
    eval_time_s: float
    mlflow_run_id: str
    reused: bool = False  # found finished in the tracking store, not run by this invocation
    # wall-clock start and end of the training (unix seconds), if run by this invocation
    trained: tuple[float, float] | None = None


@dataclass
class CellFailure:
    """A cell (or a method's tuning on a task) that ended with an error instead of results."""

    method: str
    task: str
    seed: int | None  # None: the tuning before the seeds, so no seed ran
    error: str  # "DivergedError: training loss became nan at step 3"

    @property
    def label(self) -> str:
        return f"{self.method}/{self.task}/" + (
            f"seed{self.seed}" if self.seed is not None else "tuning"
        )

    def __str__(self) -> str:
        return f"{self.label}: {self.error}"


def format_table(
    rows: list[ResultRow], header: bool = True, failures: list[CellFailure] = ()
) -> str:
    """One line per result row, then one per failed cell with its reason."""
    columns = table_metrics()
    width = {m.name: max(7, len(format(0.5, m.fmt)), len(m.header)) for m in columns}
    lines = []
    if header:
        cells = " ".join(f"{m.header:>{width[m.name]}}" for m in columns)
        lines.append(f"{'mode':<18} {'task':<14} {'seed':>4} {cells} {'train_s':>8} {'eval_s':>7}")
    for r in rows:
        cells = " ".join(f"{r.metrics[m.name]:>{width[m.name]}{m.fmt}}" for m in columns)
        lines.append(
            f"{r.mode:<18} {r.task:<14} {r.seed:>4} {cells} "
            f"{r.train_time_s:>8.1f} {r.eval_time_s:>7.1f}"
        )
    for f in failures:
        seed = "-" if f.seed is None else f.seed
        lines.append(f"{f.method:<18} {f.task:<14} {seed:>4} FAILED {f.error}")
    return "\n".join(lines)
