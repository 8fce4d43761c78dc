"""Tests for bayeslora.metrics.registry: every entry against numpy, and the registry's rules.

The references below are vectorised numpy, written from the definitions and independent
of both the implementation and the loop references in test_functional.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bayeslora.metrics import calibration_metrics
from bayeslora.metrics.bootstrap import paired_bootstrap
from bayeslora.metrics.registry import (
    METRICS,
    Direction,
    Metric,
    bootstrap_metrics,
    compute_metrics,
    get_metric,
    register_metric,
    table_metrics,
    unregister_metric,
)
from bayeslora.report.comparison import format_comparisons
from bayeslora.report.seed_summary import (
    differences_over_seeds,
    format_seed_summary,
    metrics_over_seeds,
)

# --------------------------------------------------------------------------- references


def np_accuracy(p: np.ndarray, y: np.ndarray) -> float:
    return float((p.argmax(axis=1) == y).mean())


def np_nll(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.maximum(p[np.arange(len(y)), y], 1e-12)).mean())


def np_brier(p: np.ndarray, y: np.ndarray) -> float:
    return float(((p - np.eye(p.shape[1])[y]) ** 2).sum(axis=1).mean())


def np_bin_gaps(p: np.ndarray, y: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(weight, |acc - conf|) of each non-empty bin; bins (lo, hi], the first one closed
    (the papers' convention, the registry's default)."""
    conf, correct = p.max(axis=1), (p.argmax(axis=1) == y)
    # digitize against the interior edges: edges[b] < c <= edges[b+1] gives b; c = 0 gives 0
    b = np.digitize(conf, np.arange(1, n_bins) / n_bins, right=True)
    count = np.bincount(b, minlength=n_bins)
    keep = count > 0
    acc = np.bincount(b, weights=correct, minlength=n_bins)[keep] / count[keep]
    mean_conf = np.bincount(b, weights=conf, minlength=n_bins)[keep] / count[keep]
    return count[keep] / len(y), np.abs(acc - mean_conf)


def np_ece(p, y, n_bins=10) -> float:
    weight, gap = np_bin_gaps(p, y, n_bins)
    return float((weight * gap).sum())


def np_mce(p, y, n_bins=10) -> float:
    return float(np_bin_gaps(p, y, n_bins)[1].max())


def np_adaptive_ece(p, y, n_bins=15) -> float:
    """Equal-mass bins: sorted by confidence (stable), split as np.array_split does."""
    conf, correct = p.max(axis=1), (p.argmax(axis=1) == y)
    chunks = np.array_split(np.argsort(conf, kind="stable"), min(n_bins, len(y)))
    return float(sum(abs(correct[c].sum() - conf[c].sum()) for c in chunks) / len(y))


def np_most_confident_first(p, y) -> np.ndarray:
    """Correctness, most confident first; ties keep the lower index first."""
    order = np.argsort(-p.max(axis=1), kind="stable")
    return (p.argmax(axis=1) == y)[order].astype(np.float64)


def np_accuracy_at_coverage(p, y, percent: int) -> float:
    kept = -(-percent * len(y) // 100)  # ceil in integers
    return float(np_most_confident_first(p, y)[:kept].mean())


def np_aurc(p, y) -> float:
    errors = 1.0 - np_most_confident_first(p, y)
    return float(np.mean(np.cumsum(errors) / np.arange(1, len(errors) + 1)))


REFERENCES = {
    "accuracy": np_accuracy,
    "ece": np_ece,
    "nll": np_nll,
    "brier": np_brier,
    "mce": np_mce,
    "ece_15": lambda p, y: np_ece(p, y, 15),
    "ece_20": lambda p, y: np_ece(p, y, 20),
    "ece_adaptive": np_adaptive_ece,
    "acc_at_cov50": lambda p, y: np_accuracy_at_coverage(p, y, 50),
    "acc_at_cov80": lambda p, y: np_accuracy_at_coverage(p, y, 80),
    "aurc": np_aurc,
}
BUILTINS = list(REFERENCES)


def random_case(seed: int, n: int = 200, k: int = 4):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(k, 0.5), size=n)
    # a confidence of exactly 1.0 (last bin, closed) and one exactly on an interior edge
    p[0] = np.eye(k)[0]
    p[1] = np.array([0.5] + [0.5 / (k - 1)] * (k - 1))
    y = np.where(rng.random(n) < 0.6, p.argmax(axis=1), rng.integers(k, size=n))
    return torch.tensor(p), torch.tensor(y)


@pytest.fixture
def top2():
    """A metric registered for one test, then removed whatever happens."""

    def top2_accuracy(probs, labels):
        hits = (probs.topk(2, dim=1).indices == labels[:, None]).any(dim=1)
        return hits.to(torch.float64).mean()

    metric = register_metric(
        Metric("top2", top2_accuracy, Direction.HIGHER, bootstrap=True, header="top2", fmt=".3f")
    )
    try:
        yield metric
    finally:
        unregister_metric("top2")


# --------------------------------------------------------------------------- entries


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", list(REFERENCES))
def test_every_builtin_matches_numpy(name, seed):
    probs, labels = random_case(seed)
    value = get_metric(name)(probs, labels)
    assert value.shape == ()
    # accuracy comes back from torchmetrics in float32; the rest is float64 throughout
    tolerance = 1e-7 if name == "accuracy" else 1e-12
    if name == "ece_adaptive":  # a different path to the same bins: the sums' rounding
        tolerance = 1e-12
    assert value.item() == pytest.approx(
        REFERENCES[name](probs.numpy(), labels.numpy()), abs=tolerance
    )


def test_builtins_and_their_roles():
    assert list(METRICS) == BUILTINS  # each with a numpy reference above
    assert [m.name for m in table_metrics()] == ["accuracy", "ece", "nll", "brier"]
    assert [m.name for m in bootstrap_metrics()] == ["accuracy", "ece", "nll", "brier"]
    assert [m.header for m in table_metrics()] == ["acc", "ece", "nll", "brier"]
    assert {m.name for m in METRICS.values() if m.binned} == {"ece", "mce"}
    assert get_metric("accuracy").direction is Direction.HIGHER
    assert get_metric("accuracy").optuna_direction == "maximize"
    assert all(get_metric(n).optuna_direction == "minimize" for n in ("ece", "nll", "brier", "mce"))


def test_binned_metrics_get_n_bins():
    probs, labels = random_case(3)
    p, y = probs.numpy(), labels.numpy()
    assert get_metric("ece")(probs, labels, n_bins=15).item() == pytest.approx(np_ece(p, y, 15))
    assert get_metric("mce")(probs, labels, n_bins=3).item() == pytest.approx(np_mce(p, y, 3))
    # an unbinned metric ignores n_bins
    assert get_metric("nll")(probs, labels, n_bins=3).item() == pytest.approx(np_nll(p, y))


# --------------------------------------------------------------------------- registry rules


def test_a_name_can_be_registered_once():
    with pytest.raises(ValueError, match="metric 'nll' is already registered"):
        register_metric(Metric("nll", lambda p, y: p.sum(), Direction.LOWER, False, "nll"))
    assert METRICS["nll"].fn.__name__ == "nll"  # the original is kept


def test_unknown_name_suggests_the_closest():
    with pytest.raises(KeyError, match="Did you mean 'accuracy'"):
        get_metric("acuracy")
    with pytest.raises(ValueError, match="unknown metric 'bier'.*Did you mean 'brier'"):
        get_metric("bier")
    with pytest.raises(KeyError, match="unknown metric 'zzz'; registered: accuracy") as err:
        get_metric("zzz")
    assert "Did you mean" not in str(err.value)


def test_bad_entries_are_refused():
    with pytest.raises(ValueError, match="sideways"):
        Metric("x", np_nll, "sideways", True, "x")
    with pytest.raises(ValueError, match="fmt"):
        Metric("x", np_nll, Direction.LOWER, True, "x", fmt="q")
    with pytest.raises(TypeError, match="takes a Metric"):
        register_metric("x")
    assert Metric("x", np_nll, "lower", True, "x").direction is Direction.LOWER


# --------------------------------------------------------------------------- compute_metrics


def test_compute_metrics_order_values_and_names():
    probs, labels = random_case(4)
    p, y = probs.numpy(), labels.numpy()
    result = compute_metrics(probs, labels, n_bins=15)
    assert list(result) == BUILTINS
    assert all(type(v) is float for v in result.values())
    assert result["ece"] == pytest.approx(np_ece(p, y, 15))
    assert result["mce"] == pytest.approx(np_mce(p, y, 15))
    # names= selects, in registry order whatever order they are given in
    assert list(compute_metrics(probs, labels, names=["brier", "accuracy"])) == [
        "accuracy",
        "brier",
    ]
    with pytest.raises(KeyError, match="Did you mean 'nll'"):
        compute_metrics(probs, labels, names=["nlll"])
    assert calibration_metrics(probs, labels, 15) == result


def test_compute_metrics_validates_once_up_front():
    probs, labels = random_case(5)
    with pytest.raises(ValueError, match="n_bins must be a positive integer"):
        compute_metrics(probs, labels, n_bins=0, names=["nll"])  # even if no metric is binned
    with pytest.raises(ValueError, match="do not sum to 1"):
        compute_metrics(probs * 2, labels, names=[])


# --------------------------------------------------------------------------- a new metric


def test_a_registered_metric_reaches_every_consumer(top2):
    probs, labels = random_case(6)
    assert list(compute_metrics(probs, labels))[-1] == "top2"
    assert calibration_metrics(probs, labels)["top2"] == top2(probs, labels).item()

    other, _ = random_case(7)
    diffs = paired_bootstrap(probs, other, labels, n_resamples=20)
    assert list(diffs) == ["accuracy", "ece", "nll", "brier", "top2"]
    assert diffs["top2"]["diff"] == pytest.approx(
        (top2(probs, labels) - top2(other, labels)).item()
    )
    comparisons = [{"mode": "b", "baseline": "a", "task": "t", "seed": 0, **diffs}]
    assert f"dtop2 {diffs['top2']['diff']:+.3f}" in format_comparisons(comparisons)

    rows = [
        SimpleNamespace(mode="a", task="t", seed=s, metrics={**compute_metrics(probs, labels)})
        for s in (0, 1)
    ]
    (summary,) = metrics_over_seeds(rows)
    assert summary["top2"] == {"mean": top2(probs, labels).item(), "std": 0.0}
    (difference,) = differences_over_seeds(comparisons)
    assert difference["top2"]["mean"] == diffs["top2"]["diff"]
    text = format_seed_summary([summary], [difference])
    assert f"top2 {summary['top2']['mean']:.3f} ± 0.000" in text
    assert "dtop2 " in text


def test_the_fixture_left_the_registry_as_it_was():
    assert "top2" not in METRICS
    assert list(METRICS) == BUILTINS


def test_the_readme_example_adds_a_metric_everywhere():
    """The README's "adding a metric" snippet, run as written."""
    import re
    from pathlib import Path

    from bayeslora.metrics.registry import unregister_metric

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    (snippet,) = [
        block
        for block in re.findall(r"```python\n(.*?)```", readme, re.S)
        if "register_metric" in block
    ]
    exec(compile(snippet, "README.md", "exec"), {})
    try:
        probs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]])
        labels = torch.tensor([1, 0])
        assert compute_metrics(probs, labels)["top2"] == 0.5
        assert "top2" in [m.name for m in bootstrap_metrics()]
    finally:
        unregister_metric("top2")
