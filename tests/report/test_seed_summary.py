"""Over-seed summaries against numpy, on hand-made rows and comparisons."""

from types import SimpleNamespace

import numpy as np
import pytest

from bayeslora.report.seed_summary import (
    differences_over_seeds,
    format_seed_summary,
    metrics_over_seeds,
)


def _row(mode, task, seed, accuracy, ece, nll, brier):
    metrics = {"accuracy": accuracy, "ece": ece, "nll": nll, "brier": brier, "mce": 0.0}
    return SimpleNamespace(mode=mode, task=task, seed=seed, metrics=metrics)


ROWS = [
    _row("adamw", "arc_easy", 0, 0.25, 0.50, 3.2, 1.20),
    _row("ivon", "arc_easy", 0, 0.27, 0.40, 2.5, 1.02),
    _row("adamw", "arc_easy", 1, 0.26, 0.52, 3.3, 1.25),
    _row("ivon", "arc_easy", 1, 0.26, 0.38, 2.2, 0.98),
    _row("adamw", "arc_easy", 2, 0.22, 0.45, 2.9, 1.10),
    _row("ivon", "arc_easy", 2, 0.24, 0.41, 2.6, 1.05),
]


def _comparison(seed, low, diff, high):
    interval = {"diff": diff, "low": low, "high": high}
    return {
        "mode": "ivon",
        "baseline": "adamw",
        "task": "arc_easy",
        "seed": seed,
        "accuracy": {"diff": 0.01, "low": -0.03, "high": 0.05},
        "nll": interval,
        "ece": interval,
        "brier": interval,
    }


def test_metrics_over_seeds_match_numpy():
    summary = {s["mode"]: s for s in metrics_over_seeds(ROWS)}
    assert summary["ivon"]["seeds"] == [0, 1, 2]
    for mode in ("adamw", "ivon"):
        assert "mce" not in summary[mode]  # not a table metric
        for name in ("accuracy", "ece", "nll", "brier"):
            values = np.array([r.metrics[name] for r in ROWS if r.mode == mode])
            assert summary[mode][name]["mean"] == pytest.approx(values.mean())
            assert summary[mode][name]["std"] == pytest.approx(values.std(ddof=1))


def test_one_seed_has_zero_spread():
    (summary,) = metrics_over_seeds(ROWS[:1])
    assert summary["nll"] == {"mean": 3.2, "std": 0.0}


def test_differences_count_seeds_on_each_side_of_zero():
    comparisons = [
        _comparison(0, -0.9, -0.7, -0.5),
        _comparison(1, -1.4, -1.1, -0.8),
        _comparison(2, -0.1, +0.1, +0.3),  # contains 0: counted on neither side
    ]
    (summary,) = differences_over_seeds(comparisons)
    assert list(summary)[4:] == ["accuracy", "ece", "nll", "brier"]  # the registry's order
    assert (summary["mode"], summary["baseline"], summary["seeds"]) == (
        "ivon",
        "adamw",
        [0, 1, 2],
    )
    nll = summary["nll"]
    assert nll["mean"] == pytest.approx(np.mean([-0.7, -1.1, 0.1]))
    assert nll["std"] == pytest.approx(np.std([-0.7, -1.1, 0.1], ddof=1))
    assert (nll["seeds_below_0"], nll["seeds_above_0"]) == (2, 0)
    comparisons[2]["nll"] = {"diff": 0.3, "low": 0.1, "high": 0.5}
    (summary,) = differences_over_seeds(comparisons)
    assert (summary["nll"]["seeds_below_0"], summary["nll"]["seeds_above_0"]) == (2, 1)
    assert (summary["accuracy"]["seeds_below_0"], summary["accuracy"]["seeds_above_0"]) == (0, 0)


def test_format_names_every_mode_and_the_counts():
    text = format_seed_summary(
        metrics_over_seeds(ROWS),
        differences_over_seeds([_comparison(s, -0.9, -0.7, -0.5) for s in (0, 1, 2)]),
    )
    lines = text.splitlines()
    assert lines[0] == "over seeds on arc_easy (mean ± std):"
    assert [line.split()[0] for line in lines[1:3]] == ["adamw", "ivon"]
    assert lines[3].startswith("difference to adamw over seeds")
    assert "accuracy 0.2433 ± 0.0208  ece 0.4900 ± 0.0361" in lines[1]
    assert "dnll -0.7000 ± 0.0000 (3/0)" in lines[4]
    assert format_seed_summary([], []) == ""
