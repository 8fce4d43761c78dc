"""Prediction modes as data: what a method's result row is, without parsing its name.

A method reports one result row per prediction mode ("ivon" averages 10 posterior
samples, "ivon@mean" predicts at the posterior mean). Each mode is a
:class:`PredictionMode` value that says what kind of prediction it is; code that needs
to know (the method itself, reports, a composite) reads ``mode.kind`` and
``mode.samples``, never the spelling of ``mode.name``.

A post-hoc step such as temperature scaling turns a mode into a new one with
:meth:`PredictionMode.then`; the result remembers the mode it was built on
(``mode.inner``) and the steps applied (``mode.posthoc``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ModeKind(StrEnum):
    """What a prediction mode computes."""

    POINT = "point"  # one set of trained weights (the MAP estimate, or a method's last iterate)
    MEAN = "mean"  # one set of weights at a posterior mean or weight average (ivon@mean, swa)
    SAMPLED = "sampled"  # the average of ``samples`` stochastic predictions (posterior
    # samples, dropout masks or ensemble members)
    POSTERIOR = "posterior"  # an approximate predictive of a posterior (Laplace's GLM)


@dataclass(frozen=True)
class PredictionMode:
    """One way a fitted method predicts; ``name`` is what result rows and MLflow show."""

    name: str
    kind: ModeKind = ModeKind.POINT
    samples: int | None = None  # predictions averaged, for SAMPLED modes
    posthoc: tuple[str, ...] = ()  # post-hoc steps applied, in order ("temperature",)
    inner: PredictionMode | None = None  # the mode the last post-hoc step was applied to

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", ModeKind(self.kind))
        if self.kind is ModeKind.SAMPLED and (self.samples is None or self.samples < 1):
            raise ValueError(f"sampled mode {self.name!r} needs samples >= 1, got {self.samples}")

    def then(self, step: str) -> PredictionMode:
        """This mode followed by the post-hoc ``step``: "ivon" -> "ivon+temperature"."""
        return PredictionMode(
            f"{self.name}+{step}", self.kind, self.samples, (*self.posthoc, step), inner=self
        )

    def describe(self) -> dict:
        """What is logged with a result (no nesting: the inner mode by name)."""
        return {
            "name": self.name,
            "kind": self.kind.value,
            "samples": self.samples,
            "posthoc": list(self.posthoc),
            "inner": self.inner.name if self.inner else None,
        }

    def __str__(self) -> str:
        return self.name


def as_mode(mode: PredictionMode | str) -> PredictionMode:
    """A plugin may declare its modes as plain names: each is then a POINT mode."""
    return mode if isinstance(mode, PredictionMode) else PredictionMode(str(mode))
