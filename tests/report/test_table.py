"""The paper-style table on hand-made records, against numpy."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from bayeslora.metrics.registry import UnknownMetricError, table_metrics
from bayeslora.report.result import ResultRecord
from bayeslora.report.table import column, paper_table


def _record(mode, task, seed, kind="result", eval_task="", cell=None, **metrics):
    base = {"accuracy": 0.5, "ece": 0.1, "nll": 1.0, "brier": 0.6}
    return ResultRecord(
        kind=kind,
        method=mode.split("@")[0],
        mode=mode,
        task=task,
        seed=seed,
        metrics={**base, **metrics},
        cell=cell or f"{mode}-{task}-{seed}",
        eval_task=eval_task,
    )


RECORDS = [
    _record("adamw", "arc_easy", 0, accuracy=0.60, ece=0.20, nll=1.10),
    _record("adamw", "arc_easy", 1, accuracy=0.64, ece=0.24, nll=1.30),
    _record("ivon", "arc_easy", 0, accuracy=0.62, ece=0.08, nll=0.90),
    _record("ivon", "arc_easy", 1, accuracy=0.61, ece=0.06, nll=0.95),
    _record("adamw", "boolq", 0, accuracy=0.70),
    _record("ivon", "boolq", 0, accuracy=0.70),
    _record(
        "ivon",
        "arc_easy",
        0,
        kind="ood",
        eval_task="boolq",
        ood_auroc_maxprob=0.7,
        ood_fpr95_entropy=0.5,
    ),
    _record(
        "adamw",
        "arc_easy",
        0,
        kind="ood",
        eval_task="boolq",
        ood_auroc_maxprob=0.6,
        ood_fpr95_entropy=0.4,
    ),
]


def test_mean_std_and_seed_count_match_numpy():
    table = paper_table(RECORDS)
    for mode in ("adamw", "ivon"):
        for name in ("accuracy", "ece", "nll"):
            values = [r.metrics[name] for r in RECORDS[:4] if r.mode == mode]
            entry = table.entries[(mode, "arc_easy", name)]
            assert entry.mean == pytest.approx(np.mean(values))
            assert entry.std == pytest.approx(np.std(values, ddof=1))
            assert entry.n == 2
    assert table.entries[("ivon", "boolq", "accuracy")].std == 0.0  # one seed
    assert table.entries[("ivon", "boolq", "accuracy")].n == 1


def test_best_per_column_follows_the_direction_and_marks_ties():
    table = paper_table(RECORDS)

    def best(group, name):
        return {m for (m, g, n), e in table.entries.items() if g == group and n == name and e.best}

    assert best("arc_easy", "accuracy") == {"adamw"}  # higher is better: 0.62 > 0.615
    assert best("arc_easy", "ece") == {"ivon"}  # lower is better
    assert best("boolq", "accuracy") == {"adamw", "ivon"}  # a tie marks both
    assert best("arc_easy→boolq", "ood_auroc_maxprob") == {"ivon"}
    assert best("arc_easy→boolq", "ood_fpr95_entropy") == {"adamw"}


def test_markdown_has_groups_rows_and_bold_best():
    text = paper_table(RECORDS).markdown()
    lines = text.splitlines()
    header = lines[0]
    for group in ("arc_easy", "boolq", "arc_easy→boolq"):
        assert f" {group} acc " in header
    assert header.index("boolq acc") < header.index("arc_easy→boolq acc")  # OOD groups last
    assert "auroc(maxprob)" in header and "fpr95(entropy)" in header
    adamw = next(line for line in lines if line.startswith("| adamw "))
    assert "**0.6200 ± 0.0283** (2)" in adamw  # best accuracy on arc_easy
    assert len({line.count("|") for line in lines[:4]}) == 1  # every row has every column


def test_csv_is_one_line_per_group_mode_metric():
    rows = list(csv.DictReader(io.StringIO(paper_table(RECORDS).csv())))
    row = next(
        r for r in rows if (r["group"], r["mode"], r["metric"]) == ("arc_easy", "ivon", "ece")
    )
    assert float(row["mean"]) == pytest.approx(0.07) and row["n"] == "2" and row["best"] == "1"
    ood = next(
        r
        for r in rows
        if r["group"] == "arc_easy→boolq"
        and r["metric"] == "ood_auroc_maxprob"
        and r["mode"] == "ivon"
    )
    assert (ood["task"], ood["eval_task"]) == ("arc_easy", "boolq")
    names = [m.name for m in table_metrics()]
    assert {r["metric"] for r in rows if r["group"] == "arc_easy"} == set(names)


def test_metrics_choose_the_columns():
    table = paper_table(RECORDS, metrics=["nll", "ood_auroc_maxprob"])
    assert [c.name for c in table.columns["arc_easy"]] == ["nll"]  # no OOD score there
    assert [c.name for c in table.columns["arc_easy→boolq"]] == ["nll", "ood_auroc_maxprob"]
    with pytest.raises(UnknownMetricError, match="unknown metric 'ecee'"):
        column("ecee")


def test_a_seed_from_two_cells_is_reported(capsys):
    records = [_record("adamw", "t", 0, cell="a"), _record("adamw", "t", 0, cell="b")]
    table = paper_table(records)
    assert table.entries[("adamw", "t", "accuracy")].n == 2
    assert "seed 0 has 2 results from different cells" in table.warnings[0]
    assert "narrow the selection" in capsys.readouterr().err
