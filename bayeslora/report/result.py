"""One scored result as the report sees it: whoever produced it, its predictions and metrics.

The report reads these from any MLflow store (:mod:`~bayeslora.report.collect`); the bench
hands over the results of its own invocation the same way, so both report with one code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from bayeslora.tracking.schema import OOD, RESULT


@dataclass
class ResultRecord:
    """One prediction mode of one cell (one seed) on one evaluation task."""

    kind: str  # RESULT or OOD (the run's ``bayeslora.kind`` tag)
    method: str  # e.g. "ivon"
    mode: str  # the prediction mode, e.g. "ivon@mean": a row of the table
    task: str  # the task trained on
    seed: int
    metrics: dict[str, float]  # by name: recomputed from the predictions where there are any
    cell: str = ""  # the cell's key
    eval_task: str = ""  # the task scored on ("" = ``task``)
    model: str | None = None  # the model asked for (the bench's ``--model``)
    run_id: str = ""  # the MLflow run that holds it ("" = not stored)
    start_time: int = 0  # the run's start, ms since the epoch (newest wins among duplicates)
    probs: Tensor | None = field(default=None, repr=False)  # [N, K], None: no predictions
    labels: Tensor | None = field(default=None, repr=False)  # [N]
    ids: list | None = field(default=None, repr=False)  # the N examples' ids, in order

    def __post_init__(self) -> None:
        if not self.eval_task:
            self.eval_task = self.task

    @property
    def group(self) -> str:
        """The table's column group: "A" in distribution, "A→B" trained on A, scored on B."""
        if self.kind == OOD or self.eval_task != self.task:
            return f"{self.task}→{self.eval_task}"
        return self.task

    @property
    def in_distribution(self) -> bool:
        return self.kind == RESULT and self.eval_task == self.task
