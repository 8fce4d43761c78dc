"""Every metric of the benchmark, described once: name, function, direction, display.

The harness reads this registry wherever a metric's name appears: the logged metrics
(:func:`compute_metrics`), the paired bootstrap (:func:`bootstrap_metrics`), the results
table and the over-seed summary (:func:`table_metrics`), and the tuning objectives
(:attr:`Metric.optuna_direction`). Adding a metric is one :func:`register_metric` call::

    register_metric(Metric("top2", top2_accuracy, Direction.HIGHER, bootstrap=True, header="top2"))

The order of registration is the display order.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from torch import Tensor

from bayeslora.metrics.functional import (
    DEFAULT_N_BINS,
    _check_inputs,
    _check_n_bins,
    accuracy,
    accuracy_at_coverage,
    adaptive_ece,
    aurc,
    brier,
    ece,
    mce,
    nll,
)


class Direction(StrEnum):
    """Which way a metric is better."""

    LOWER = "lower"
    HIGHER = "higher"


class UnknownMetricError(KeyError, ValueError):
    """A metric name that is not registered (catchable as KeyError or ValueError)."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Metric:
    """One registered metric.

    ``fn(probs [N, K], labels [N])`` returns a 0-dim tensor (with ``n_bins=`` as well when
    ``binned``). ``fmt`` is a format spec without sign or width (``".4f"``, ``".2%"``): the
    difference tables prefix it with ``+``. ``header`` is the results table's column
    header. ``bootstrap``: the paired bootstrap reports this metric's difference.
    ``in_table``: the results table and the over-seed summary show it.
    """

    name: str
    fn: Callable[..., Tensor]
    direction: Direction
    bootstrap: bool
    header: str
    fmt: str = ".4f"
    binned: bool = False
    in_table: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a metric name must be a non-empty string, got {self.name!r}")
        if not callable(self.fn):
            raise TypeError(f"metric {self.name!r}: fn must be callable, got {self.fn!r}")
        # Accept "lower"/"higher" too, stored as the enum.
        object.__setattr__(self, "direction", Direction(self.direction))
        try:
            format(0.0, "+" + self.fmt)
        except ValueError as err:
            raise ValueError(
                f"metric {self.name!r}: fmt {self.fmt!r} is not a format spec for a float "
                f"(without sign or width, e.g. '.4f'): {err}"
            ) from None

    def __call__(self, probs: Tensor, labels: Tensor, n_bins: int = DEFAULT_N_BINS) -> Tensor:
        """The metric on ``(probs, labels)``; ``n_bins`` reaches binned metrics only."""
        if self.binned:
            return self.fn(probs, labels, n_bins=n_bins)
        return self.fn(probs, labels)

    @property
    def optuna_direction(self) -> str:
        """``"minimize"`` or ``"maximize"``, as ``optuna.create_study(directions=...)`` wants."""
        return "minimize" if self.direction is Direction.LOWER else "maximize"


METRICS: dict[str, Metric] = {}
"""Registered metrics by name; insertion order is display order. Add with register_metric."""


def register_metric(metric: Metric) -> Metric:
    """Add ``metric`` to :data:`METRICS` (last in display order); returns it."""
    if not isinstance(metric, Metric):
        raise TypeError(f"register_metric takes a Metric, got {type(metric).__name__}")
    if metric.name in METRICS:
        raise ValueError(f"metric {metric.name!r} is already registered")
    METRICS[metric.name] = metric
    return metric


def unregister_metric(name: str) -> Metric:
    """Remove a registered metric and return it (for tests that register their own)."""
    metric = get_metric(name)
    del METRICS[name]
    return metric


def get_metric(name: str) -> Metric:
    """The registered metric called ``name``; an unknown name suggests the closest ones."""
    try:
        return METRICS[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), METRICS, n=3)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownMetricError(
            f"unknown metric {name!r}; registered: {', '.join(METRICS)}.{hint}"
        ) from None


def table_metrics() -> list[Metric]:
    """The metrics of the results table and the over-seed summary, in display order."""
    return [m for m in METRICS.values() if m.in_table]


def bootstrap_metrics() -> list[Metric]:
    """The metrics whose differences the paired bootstrap reports, in display order."""
    return [m for m in METRICS.values() if m.bootstrap]


def compute_metrics(
    probs: Tensor,
    labels: Tensor,
    *,
    n_bins: int = DEFAULT_N_BINS,
    names: Iterable[str] | None = None,
) -> dict[str, float]:
    """Every registered metric (or those in ``names``, in registry order) as Python floats."""
    _check_inputs(probs, labels)  # once up front, so a bad input fails before any work
    _check_n_bins(n_bins)
    if names is None:
        selected = list(METRICS.values())
    else:
        wanted = {get_metric(name).name for name in names}
        selected = [m for m in METRICS.values() if m.name in wanted]
    return {m.name: float(m(probs, labels, n_bins=n_bins)) for m in selected}


def calibration_metrics(
    probs: Tensor, labels: Tensor, n_bins: int = DEFAULT_N_BINS
) -> dict[str, float]:
    """All registered metrics as Python floats (logged to MLflow): :func:`compute_metrics`."""
    return compute_metrics(probs, labels, n_bins=n_bins)


for _metric in (
    Metric("accuracy", accuracy, Direction.HIGHER, bootstrap=True, header="acc"),
    Metric("ece", ece, Direction.LOWER, bootstrap=True, header="ece", binned=True),
    Metric("nll", nll, Direction.LOWER, bootstrap=True, header="nll"),
    Metric("brier", brier, Direction.LOWER, bootstrap=True, header="brier"),
    Metric("mce", mce, Direction.LOWER, bootstrap=False, header="mce", binned=True, in_table=False),
    # ECE as other papers bin it (15: torchmetrics, BLoB, BAG; 20: SWAG-LoRA), and over
    # equal-mass bins; logged with every result, not in the table (docs/footguns.md)
    Metric(
        "ece_15", functools.partial(ece, n_bins=15), Direction.LOWER, False, "ece15", in_table=False
    ),
    Metric(
        "ece_20", functools.partial(ece, n_bins=20), Direction.LOWER, False, "ece20", in_table=False
    ),
    Metric("ece_adaptive", adaptive_ece, Direction.LOWER, False, "aece", in_table=False),
    # selective prediction: accuracy on the most confident 50 % / 80 % of the questions
    # (100 % is the accuracy), and the area under the risk-coverage curve
    Metric(
        "acc_at_cov50",
        functools.partial(accuracy_at_coverage, coverage=0.5),
        Direction.HIGHER,
        False,
        "acc50",
        in_table=False,
    ),
    Metric(
        "acc_at_cov80",
        functools.partial(accuracy_at_coverage, coverage=0.8),
        Direction.HIGHER,
        False,
        "acc80",
        in_table=False,
    ),
    Metric("aurc", aurc, Direction.LOWER, False, "aurc", in_table=False),
):
    register_metric(_metric)
del _metric
