"""The report's figures as PNG files (needs the ``plots`` extra: matplotlib).

- ``reliability_<task>.png``: a reliability diagram per prediction mode, side by side, each
  over the confidence histogram (share of examples per bin); the examples of all seeds pooled.
- ``tau_<task>.png``: IVON's accuracy, ECE and NLL as the test-time posterior variance is
  scaled by tau from 0 (the mean) to 1 (the trained posterior); a thin line per seed, the
  mean over seeds bold.
- ``samples_<task>.png``: accuracy, ECE and NLL of the running average of the first k test
  samples, per sampling mode: the mean over seeds, the band from the lowest to the highest seed.

matplotlib is imported when a figure is drawn (:func:`require_matplotlib`), never by
``import bayeslora.report``; figures are drawn without pyplot, so no GUI backend is touched.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bayeslora._optional import require
from bayeslora.metrics.functional import DEFAULT_N_BINS, reliability_bins
from bayeslora.metrics.registry import METRICS
from bayeslora.report.curves import CURVE_METRICS, Curve
from bayeslora.report.result import ResultRecord

AXIS_LABEL = {"accuracy": "accuracy", "ece": f"ECE ({DEFAULT_N_BINS} bins)", "nll": "NLL (nats)"}
PANEL_COLUMNS = 4  # reliability diagrams per figure row


def require_matplotlib():
    """matplotlib, or an OptionalDependencyError naming the ``plots`` extra."""
    require("matplotlib", extra="plots", purpose="the report's plots")
    from matplotlib.figure import Figure

    return Figure


def file_name(kind: str, task: str) -> str:
    """``kind_task.png`` with anything but letters, digits, ``-_.`` made ``_``."""
    safe = re.sub(r"[^\w.-]", "_", task)
    return f"{kind}_{safe}.png"


def reliability_figure(task: str, records: Sequence[ResultRecord], n_bins: int = DEFAULT_N_BINS):
    """One panel per mode of ``records`` (in-distribution results of ``task`` with
    predictions), their seeds pooled."""
    Figure = require_matplotlib()
    modes: dict[str, list[ResultRecord]] = {}
    for r in records:
        if r.probs is not None:
            modes.setdefault(r.mode, []).append(r)
    if not modes:
        raise ValueError(f"no predictions of {task} to draw")
    ncols = min(len(modes), PANEL_COLUMNS)
    nrows = math.ceil(len(modes) / ncols)
    figure = Figure(figsize=(3.7 * ncols, 4.9 * nrows), layout="constrained")
    grid = figure.add_gridspec(2 * nrows, ncols, height_ratios=[3, 1] * nrows)
    width = 1 / n_bins
    centers = (np.arange(n_bins) + 0.5) * width
    for i, (mode, runs) in enumerate(modes.items()):
        row, col = divmod(i, ncols)
        top = figure.add_subplot(grid[2 * row, col])
        bottom = figure.add_subplot(grid[2 * row + 1, col], sharex=top)
        import torch

        probs = torch.cat([r.probs for r in runs])
        labels = torch.cat([r.labels for r in runs])
        bins = reliability_bins(probs, labels, n_bins)
        accuracy = bins.accuracy.numpy()
        confidence = bins.confidence.numpy()
        filled = bins.count.numpy() > 0
        top.bar(
            centers[filled],
            accuracy[filled],
            width,
            color="tab:blue",
            edgecolor="black",
            linewidth=0.6,
            label="accuracy",
        )
        # the gap as a red segment from the bar's top to the bin's mean confidence: a
        # stacked "gap" bar would hide under the blue one where accuracy exceeds confidence
        top.vlines(
            centers[filled],
            accuracy[filled],
            confidence[filled],
            color="tab:red",
            linewidth=2.5,
            label="gap",
        )
        top.scatter(
            centers[filled],
            confidence[filled],
            color="tab:red",
            marker="D",
            s=18,
            zorder=3,
            label="mean confidence",
        )
        top.plot([0, 1], [0, 1], "--", color="gray", linewidth=1, label="perfect calibration")
        ece = float(METRICS["ece"](probs, labels, n_bins=n_bins))
        seeds = sorted({r.seed for r in runs})
        top.set_title(
            f"{mode}\npooled ECE {ece:.3f} · {len(labels)} answers, {len(seeds)} seed(s)",
            fontsize=10,
        )
        top.set(xlim=(0, 1), ylim=(0, 1))
        top.set_ylabel("accuracy in bin")
        top.tick_params(labelbottom=False)
        if i == 0:
            handles, names = top.get_legend_handles_labels()
        share = bins.count.numpy() / max(int(bins.count.sum()), 1) * 100
        bottom.bar(centers, share, width, color="tab:gray", edgecolor="black", linewidth=0.6)
        bottom.set_xlabel("confidence (top-class probability)")
        bottom.set_ylabel("% of answers")
        bottom.set_ylim(0, 100)
    # below the panels: inside one it would hide bars
    figure.legend(handles, names, loc="outside lower center", ncols=4, fontsize=9)
    figure.suptitle(f"Reliability on {task} ({n_bins} equal-width bins; seeds pooled)", fontsize=12)
    return figure


def tau_figure(task: str, curves: Sequence[Curve]):
    """Accuracy, ECE and NLL against tau, per mode: each seed thin, their mean bold."""
    return _curve_figure(
        task,
        curves,
        x_label="tau (scale of the posterior variance)",
        title=f"IVON on {task}: metrics as the test-time posterior variance is scaled by tau "
        "(0 = the mean, 1 = the trained posterior)",
        band=False,
    )


def samples_figure(task: str, curves: Sequence[Curve]):
    """Accuracy, ECE and NLL against the number of test samples averaged, per mode."""
    return _curve_figure(
        task,
        curves,
        x_label="test samples averaged (k)",
        title=f"Sampling modes on {task}: metrics of the average over the first k samples",
        band=True,
    )


def _curve_figure(task: str, curves: Sequence[Curve], x_label: str, title: str, band: bool):
    Figure = require_matplotlib()
    if not curves:
        raise ValueError(f"no curves of {task} to draw")
    figure = Figure(figsize=(14, 4.2), layout="constrained")
    axes = figure.subplots(1, len(CURVE_METRICS))
    modes: dict[str, list[Curve]] = {}
    for c in curves:
        modes.setdefault(c.mode, []).append(c)
    colors = {mode: f"C{i}" for i, mode in enumerate(modes)}
    for ax, metric in zip(axes, CURVE_METRICS, strict=True):
        for mode, group in modes.items():
            x = np.asarray(group[0].x)
            same = [c for c in group if np.array_equal(c.x, x)]  # seeds on the same grid
            values = np.array([c.values[metric] for c in same])
            label = f"{mode} (mean of {len(same)} seed(s))"
            if band and len(same) > 1:
                ax.fill_between(
                    x, values.min(0), values.max(0), color=colors[mode], alpha=0.2, linewidth=0
                )
            elif not band:
                for v in values:
                    ax.plot(x, v, color=colors[mode], alpha=0.35, linewidth=0.8)
            ax.plot(
                x,
                values.mean(0),
                color=colors[mode],
                linewidth=2,
                marker="o",
                markersize=3,
                label=label,
            )
        ax.set_xlabel(x_label, fontsize=9)
        ax.set_ylabel(AXIS_LABEL.get(metric, metric))
        ax.set_title(
            f"{AXIS_LABEL.get(metric, metric)} ({'↑' if metric == 'accuracy' else '↓'} better)",
            fontsize=10,
        )
        ax.grid(alpha=0.3)
        if band:
            ax.xaxis.get_major_locator().set_params(integer=True)
    note = "band: lowest to highest seed" if band else "thin: each seed; bold: mean over seeds"
    axes[0].legend(fontsize=8, title=note, title_fontsize=8)
    figure.suptitle(title, fontsize=12)
    return figure


def save(figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path
