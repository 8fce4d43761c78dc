"""Reading results back from a store: selection, de-duplication, recomputed metrics, errors."""

from __future__ import annotations

import pytest
import torch

from bayeslora.metrics import compute_metrics
from bayeslora.report.collect import ResultSource, Selection, SelectionError, load_results
from tests.report.helpers import LABELS, bench_parent, probs_for, store, write_result


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """Two bench invocations; the second ran adamw/arc_easy/seed0 again (same cell key)."""
    tmp = tmp_path_factory.mktemp("store")
    uri, tracker = store(tmp)
    ids = {}
    with bench_parent(tracker) as first:
        for seed in (0, 1):
            ids["adamw", seed, "old"] = write_result(
                tracker,
                task="arc_easy",
                method="adamw",
                mode="adamw",
                seed=seed,
                probs=probs_for(seed, 1.0),
            )
        write_result(
            tracker,
            task="boolq",
            method="ivon",
            mode="ivon",
            seed=0,
            probs=probs_for(5, 2.0),
            model="other-model",
        )
    with bench_parent(tracker) as second:
        ids["adamw", 0, "new"] = write_result(
            tracker,
            task="arc_easy",
            method="adamw",
            mode="adamw",
            seed=0,
            probs=probs_for(9, 3.0),
        )
        # a metric logged wrong: the report recomputes it from the predictions
        ids["ivon", 0] = write_result(
            tracker,
            task="arc_easy",
            method="ivon",
            mode="ivon",
            seed=0,
            probs=probs_for(7, 2.0),
            logged={"accuracy": 0.123},
        )
        # an OOD result without predictions: its logged metrics count
        ids["ood"] = write_result(
            tracker,
            task="arc_easy",
            method="ivon",
            mode="ivon",
            seed=0,
            kind="ood",
            eval_task="boolq",
            probs=probs_for(8, 0.0),
            logged={"ood_auroc_maxprob": 0.61},
            predictions=False,
        )
        # neither FINISHED run counts
        try:
            with tracker.run(
                "broken",
                nested=True,
                tags={
                    "bayeslora.kind": "result",
                    "bayeslora.mode": "adamw",
                    "bayeslora.task": "arc_easy",
                    "bayeslora.seed": "3",
                    "bayeslora.method": "adamw",
                    "bayeslora.cell": "x",
                },
            ):
                raise RuntimeError("boom")
        except RuntimeError:
            pass
    return uri, ids, first.info.run_id, second.info.run_id


def _find(uri, **selection):
    source = ResultSource(uri)
    return source, source.find(Selection(**selection))


def test_a_cell_stored_twice_counts_once_the_newest(stored):
    uri, ids, _, _ = stored
    _, runs = _find(uri, tasks=("arc_easy",), methods=("adamw",))
    assert sorted(r.info.run_id for r in runs) == sorted(
        [ids["adamw", 0, "new"], ids["adamw", 1, "old"]]
    )
    assert [r.info.start_time for r in runs] == sorted(r.info.start_time for r in runs)


def test_failed_runs_are_never_results(stored):
    uri, *_ = stored
    _, runs = _find(uri)
    assert all(r.info.status == "FINISHED" for r in runs)
    assert "3" not in {r.data.tags["bayeslora.seed"] for r in runs}


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        (
            {"modes": ("ivon",)},
            {
                ("ivon", "boolq", "result"),
                ("ivon", "arc_easy", "result"),
                ("ivon", "arc_easy", "ood"),
            },
        ),
        ({"models": ("other-model",)}, {("ivon", "boolq", "result")}),
        ({"tasks": ("boolq",)}, {("ivon", "boolq", "result")}),
    ],
)
def test_filters_select_by_tags_and_model(stored, selection, expected):
    uri, *_ = stored
    _, runs = _find(uri, **selection)
    tags = [r.data.tags for r in runs]
    assert {
        (t["bayeslora.mode"], t["bayeslora.task"], t["bayeslora.kind"]) for t in tags
    } == expected


def test_parent_run_ids_select_invocations(stored):
    uri, ids, first, second = stored
    _, runs = _find(uri, parent_run_ids=(first,))
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {first}
    assert ids["adamw", 0, "old"] in {r.info.run_id for r in runs}  # newest of this selection
    _, both = _find(uri, parent_run_ids=(first, second))
    assert len(both) == len(_find(uri)[1])


def test_load_recomputes_metrics_from_predictions(stored):
    uri, ids, *_ = stored
    source, runs = _find(uri, modes=("ivon",), tasks=("arc_easy",))
    records = {r.kind: r for r in load_results(source, runs)}
    result = records["result"]
    assert result.run_id == ids["ivon", 0]
    assert result.metrics["accuracy"] == pytest.approx(
        compute_metrics(probs_for(7, 2.0), LABELS)["accuracy"]
    )
    assert result.metrics["accuracy"] != pytest.approx(0.123)
    assert torch.equal(result.labels, LABELS)
    assert result.group == "arc_easy" and result.in_distribution
    ood = records["ood"]
    assert ood.probs is None and ood.metrics["ood_auroc_maxprob"] == pytest.approx(0.61)
    assert ood.group == "arc_easy→boolq" and not ood.in_distribution


def test_bad_selections_name_the_fix(stored, tmp_path):
    uri, *_ = stored
    with pytest.raises(SelectionError, match=r"no experiment 'nope'.*--experiment"):
        _find(uri, experiment="nope")
    with pytest.raises(
        SelectionError,
        match=r"matches the selection tasks=piqa; the experiment has tasks arc_easy,boolq",
    ):
        _find(uri, tasks=("piqa",))
    with pytest.raises(SelectionError, match="--parent-run-id 0123abc: no such run"):
        _find(uri, parent_run_ids=("0123abc",))
    with pytest.raises(SelectionError, match="no MLflow store at .*run the bench first"):
        ResultSource(f"sqlite:///{tmp_path / 'absent.db'}")
    with pytest.raises(SelectionError, match="not reachable.*start the server"):
        ResultSource("http://127.0.0.1:9")
    assert not (tmp_path / "absent.db").exists()  # no empty store left behind
