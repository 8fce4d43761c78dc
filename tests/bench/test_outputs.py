"""--eval-tasks and --tau-grid through the real CLI: what lands in the store, and a rerun
that finds it all finished."""

from __future__ import annotations

import numpy as np
import pytest

from tests.cli_helpers import bench_subprocess

ARGS = [
    "--model",
    "tiny-random-llama",
    "--quick",
    "--methods",
    "adamw,ivon",
    "--tasks",
    "arc_easy",
    "--eval-tasks",
    "arc_challenge",
    "--tau-grid",
    "0,0.5,1",
    "--steps",
    "3",
    "--limit-train",
    "16",
    "--limit-eval",
    "12",
    "--hp",
    "ivon.test_samples=2",
    "--no-progress",
    "--no-save-adapters",
]


def _runs(out_dir) -> list:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{out_dir / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=["bayeslora"], output_format="list")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp("outputs")
    proc = bench_subprocess([*ARGS, "--output-dir", str(out)], cwd=out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_ood_runs_one_per_mode_with_detection_metrics(store):
    out, _ = store
    ood = [r for r in _runs(out) if r.data.tags.get("bayeslora.kind") == "ood"]
    assert sorted(r.data.tags["bayeslora.mode"] for r in ood) == ["adamw", "ivon", "ivon@mean"]
    for run in ood:
        assert run.info.status == "FINISHED"
        assert run.data.tags["bayeslora.task"] == "arc_easy"
        assert run.data.tags["bayeslora.eval_task"] == "arc_challenge"
        assert (
            run.info.run_name == f"{run.data.tags['bayeslora.mode']}/arc_easy->arc_challenge/seed0"
        )
        metrics = run.data.metrics
        assert 0 <= metrics["ood_auroc_maxprob"] <= 1 and 0 <= metrics["ood_fpr95_entropy"] <= 1
        assert ("ood_auroc_mi" in metrics) == (run.data.tags["bayeslora.mode"] == "ivon")


def test_samples_and_tau_curve_are_artifacts_of_the_sampled_mode(store):
    import mlflow

    out, _ = store
    results = {
        r.data.tags["bayeslora.mode"]: r
        for r in _runs(out)
        if r.data.tags.get("bayeslora.kind") == "result"
    }
    ivon = results["ivon"]
    path = mlflow.artifacts.download_artifacts(run_id=ivon.info.run_id, dst_path=str(out / "dl"))
    samples = dict(np.load(f"{path}/sample_probs.npz", allow_pickle=False))
    tau = dict(np.load(f"{path}/tau_probs.npz", allow_pickle=False))
    assert samples["probs"].shape == (2, 12, 4) and samples["labels"].shape == (12,)
    assert tau["tau"].tolist() == [0.0, 0.5, 1.0] and tau["probs"].shape == (3, 12, 4)
    # tau 1 is the posterior the mode itself samples
    np.testing.assert_allclose(tau["probs"][2], samples["probs"].mean(0), atol=1e-6)
    for mode in ("adamw", "ivon@mean"):
        names = {a.path for a in mlflow.MlflowClient().list_artifacts(results[mode].info.run_id)}
        assert "sample_probs.npz" not in names and "tau_probs.npz" not in names


def test_the_bench_draws_both_curves_from_what_it_stored(store):
    out, _ = store
    (run_dir,) = sorted(out.glob("bench-*"))[:1]
    plots = {p.name for p in (run_dir / "plots").glob("*.png")}
    assert {"tau_arc_easy.png", "samples_arc_easy.png"} <= plots


def test_a_rerun_finds_the_cells_finished_with_their_ood_runs(store):
    out, _ = store
    proc = bench_subprocess([*ARGS, "--output-dir", str(out)], cwd=out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 finished earlier (reused from the store), 0 to run" in proc.stderr
    newest = max(out.glob("bench-*"), key=lambda d: d.stat().st_mtime)
    assert "arc_easy→arc_challenge auroc(maxprob)" in _ood_columns(newest)


def _ood_columns(run_dir) -> list[str]:
    header = (run_dir / "table.md").read_text().splitlines()[0]
    return [c.strip() for c in header.split("|") if "arc_easy→arc_challenge" in c]


def test_the_end_of_run_table_has_the_out_of_distribution_group(store):
    out, proc = store
    (run_dir,) = sorted(out.glob("bench-*"))[:1]
    columns = _ood_columns(run_dir)
    assert "arc_easy→arc_challenge acc" in columns
    assert "arc_easy→arc_challenge auroc(maxprob)" in columns
    assert "arc_easy→arc_challenge auroc(mi)" in columns  # ivon's sampled mode logs it
    assert "arc_easy→arc_challenge auroc(maxprob)" in proc.stderr  # printed at the end too
