"""ResultStore: result runs found again by id (what a Ray task returns)."""

import shutil

from bayeslora.bench.cli import main
from bayeslora.bench.store import ResultStore
from bayeslora.tracking.mlflow_tracker import MlflowTracker
from bayeslora.tracking.schema import BENCH, KIND_TAG, MODE_TAG, RESULT
from tests.bench.test_cli import TINY


def test_result_runs_by_id_are_the_finished_result_runs_by_mode(
    tmp_path, mlflow_template, monkeypatch
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copy(mlflow_template, tmp_path / "mlflow.db")
    args = [*TINY, "--methods", "ivon", "--no-save-adapters", "--output-dir", str(tmp_path)]
    assert main(args) == 0
    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "bayeslora")
    runs = tracker.search_runs("")
    results = [r for r in runs if r.data.tags.get(KIND_TAG) == RESULT]
    (bench,) = [r for r in runs if r.data.tags.get(KIND_TAG) == BENCH]
    assert len(results) == 2  # ivon and ivon@mean

    found = ResultStore(tracker, {}, save_adapters=False).result_runs(
        [bench.info.run_id, *(r.info.run_id for r in results)]
    )
    assert {mode: run.info.run_id for mode, run in found.items()} == {
        r.data.tags[MODE_TAG]: r.info.run_id for r in results
    }
