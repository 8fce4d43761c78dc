"""Two bench invocations into one store, then ``python -m bayeslora.report`` on it.

Real subprocesses on the tiny model: two tasks, two methods, two seeds; the second
invocation reruns seed 0 (``--force``), so every seed-0 cell is in the store twice and must
count once. The report needs no retraining and sees both invocations.
"""

from __future__ import annotations

import csv
import io
import json
import os

from tests.cli_helpers import bench_subprocess, module_subprocess

ARGS = [
    "--model", "tiny-random-llama", "--quick", "--steps", "3", "--limit-train", "16",
    "--limit-eval", "16", "--no-progress", "--no-save-adapters", "--methods", "adamw,ivon",
    "--tasks", "arc_easy,arc_challenge", "--hp", "ivon.test_samples=2",
]  # fmt: skip
PYTHONPATH = os.environ.get("PYTHONPATH")  # a checkout under test rather than the installed copy


def test_report_combines_two_invocations(tmp_path):
    runs = tmp_path / "runs"
    first = bench_subprocess(
        [*ARGS, "--seeds", "0", "--output-dir", str(runs)], tmp_path, pythonpath=PYTHONPATH
    )
    assert first.returncode == 0, first.stderr[-3000:]
    second = bench_subprocess(
        [*ARGS, "--seeds", "0,1", "--force", "--output-dir", str(runs)],
        tmp_path,
        pythonpath=PYTHONPATH,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    # the bench reports with the same code: its table and plots are in its run directory
    newest = sorted(runs.glob("bench-*"))[-1]
    assert {"table.md", "table.csv", "results.txt", "seeds.txt"} <= {
        p.name for p in newest.iterdir()
    }
    assert (newest / "plots" / "reliability_arc_easy.png").is_file()
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("bayeslora")
    parents = client.search_runs(
        [experiment.experiment_id],
        "tags.`bayeslora.kind` = 'bench'",
        order_by=["attributes.start_time DESC"],
    )
    logged = {f.path for f in client.list_artifacts(parents[0].info.run_id, "plots")}
    assert {"plots/reliability_arc_easy.png", "plots/reliability_arc_challenge.png"} <= logged
    assert {"table.md", "table.csv"} <= {
        f.path for f in client.list_artifacts(parents[0].info.run_id)
    }

    out = tmp_path / "report"
    done = module_subprocess(
        "bayeslora.report",
        ["--tracking-uri", f"sqlite:///{runs / 'mlflow.db'}", "--output-dir", str(out)],
        tmp_path,
        pythonpath=PYTHONPATH,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "reading 12 result(s)" in done.stderr  # 18 stored: seed 0's six twice
    rows = list(csv.DictReader(io.StringIO((out / "table.csv").read_text())))
    assert {r["group"] for r in rows} == {"arc_easy", "arc_challenge"}
    assert {r["mode"] for r in rows} == {"adamw", "ivon", "ivon@mean"}
    assert {r["n"] for r in rows} == {"2"}
    assert all(float(r["std"]) >= 0 for r in rows)
    header = done.stdout.splitlines()[0]
    assert "arc_easy acc" in header and "arc_challenge acc" in header
    assert "± " in done.stdout and "(2)" in done.stdout
    assert (out / "plots" / "reliability_arc_easy.png").is_file()
    assert (out / "plots" / "reliability_arc_challenge.png").is_file()
    # the newest invocation's results are the ones reported (its --force rerun of seed 0
    # computes the same numbers, so compare run ids, not metrics)
    newest_runs = {json.loads(line)["mlflow_run_id"] for line in open(newest / "results.jsonl")}
    report_run = client.search_runs([experiment.experiment_id], "tags.`bayeslora.kind` = 'report'")[
        0
    ]
    selected = mlflow.artifacts.load_dict(report_run.info.artifact_uri + "/selection.json")
    assert set(selected["run_ids"]) == newest_runs and len(newest_runs) == 12
