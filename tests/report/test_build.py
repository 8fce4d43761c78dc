"""Summaries and the written report on hand-made records."""

from __future__ import annotations

import json

import pytest

from bayeslora.metrics import compute_metrics
from bayeslora.report.build import build_report, default_baseline, summarise
from bayeslora.report.result import ResultRecord
from tests.report.helpers import LABELS, probs_for


def _record(mode, seed, sharpness, task="t", ids=None):
    probs = probs_for(seed, sharpness)
    return ResultRecord(
        "result",
        mode,
        mode,
        task,
        seed,
        compute_metrics(probs, LABELS),
        probs=probs,
        labels=LABELS,
        ids=ids or [f"q{i}" for i in range(len(LABELS))],
    )


def test_each_result_against_its_seeds_baseline():
    records = [_record("adamw", s, 1.0) for s in (0, 1)] + [_record("ivon", s, 3.0) for s in (0, 1)]
    (summary,) = summarise(records, "adamw", n_resamples=50)
    assert summary.baseline == "adamw"
    assert [(c["mode"], c["seed"]) for c in summary.comparisons] == [("ivon", 0), ("ivon", 1)]
    assert all(c["accuracy"]["diff"] > 0 for c in summary.comparisons)  # sharper: more right
    assert [m["mode"] for m in summary.seeds["metrics"]] == ["adamw", "ivon"]
    assert summary.seeds_text.startswith("over seeds on t (mean ± std):")
    assert summary.comparison_text.startswith("difference to adamw on t")


def test_results_on_other_examples_are_not_paired():
    other = [f"z{i}" for i in range(len(LABELS))]
    records = [_record("adamw", 0, 1.0), _record("ivon", 0, 3.0, ids=other)]
    (summary,) = summarise(records, {"t": "adamw"}, n_resamples=10)
    (c,) = summary.comparisons
    assert "other examples than adamw" in c["missing"]
    assert summary.seeds is None  # one seed


def test_default_baseline_prefers_adamw():
    assert default_baseline([_record("ivon", 0, 1.0), _record("adamw", 0, 1.0)]) == "adamw"
    assert default_baseline([_record("ivon", 0, 1.0), _record("swag", 0, 1.0)]) == "ivon"


def test_build_report_writes_the_files(tmp_path):
    records = [
        _record(m, s, 1.0 + s, task=t)
        for t in ("a", "b")
        for m in ("adamw", "ivon")
        for s in (0, 1)
    ]
    report = build_report(records, tmp_path, plots=False, n_resamples=10)
    names = {str(f) for f in report.files}
    assert names == {
        "table.md",
        "table.csv",
        "comparison.txt",
        "comparison.json",
        "seeds.txt",
        "seeds.json",
    }
    assert set(json.loads((tmp_path / "comparison.json").read_text())) == {"a", "b"}
    assert "| adamw " in (tmp_path / "table.md").read_text()
    with pytest.raises(KeyError):  # a baseline map must name every task
        summarise(records, {"a": "adamw"})
