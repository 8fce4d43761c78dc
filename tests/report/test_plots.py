"""The figures are drawn and written; without matplotlib they are skipped with a warning."""

from __future__ import annotations

import numpy as np
import pytest

from bayeslora._optional import OptionalDependencyError
from bayeslora.report import build, plots
from bayeslora.report.curves import Curve
from bayeslora.report.result import ResultRecord
from tests.report.helpers import LABELS, probs_for

pytest.importorskip("matplotlib")
PNG = b"\x89PNG\r\n\x1a\n"

RECORDS = [
    ResultRecord("result", m, m, t, s, {}, probs=probs_for(s, 2.0), labels=LABELS)
    for t in ("arc_easy", "a/b")
    for m in ("adamw", "ivon", "ivon@mean", "swag", "mcdropout")
    for s in (0, 1)
]


def _curve(mode, seed, n):
    return Curve(
        "arc_easy",
        mode,
        seed,
        list(np.linspace(0, 1, n)),
        {m: list(np.random.default_rng(seed).random(n)) for m in ("accuracy", "ece", "nll")},
    )


def test_every_plot_is_a_png(tmp_path):
    curves = {
        "tau": [_curve("ivon", s, 5) for s in (0, 1)],
        "samples": [_curve(m, s, 8) for m in ("ivon", "swag") for s in (0, 1)],
    }
    written = build.draw_plots(RECORDS, curves, tmp_path)
    names = sorted(p.name for p in written)
    assert names == [
        "reliability_a_b.png",
        "reliability_arc_easy.png",
        "samples_arc_easy.png",
        "tau_arc_easy.png",
    ]
    assert all(p.read_bytes().startswith(PNG) for p in written)


def test_a_reliability_panel_per_mode():
    figure = plots.reliability_figure("arc_easy", [r for r in RECORDS if r.task == "arc_easy"])
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert [t.split("\n")[0] for t in titles] == ["adamw", "ivon", "ivon@mean", "swag", "mcdropout"]
    assert all("2 seed(s)" in t for t in titles)
    assert all(ax.get_xlabel() or ax.get_ylabel() for ax in figure.axes)


def test_without_matplotlib_plots_are_skipped(tmp_path, monkeypatch):
    def missing():
        raise OptionalDependencyError("no matplotlib; pip install 'bayeslora[plots]'")

    monkeypatch.setattr(plots, "require_matplotlib", missing)
    with pytest.warns(UserWarning, match=r"plots skipped.*bayeslora\[plots\]"):
        assert build.draw_plots(RECORDS, {}, tmp_path) == []
