"""Resume: a bench killed at a random point and run again ends as if it had never stopped.

Real subprocesses on the tiny model: the reference run goes through uninterrupted; the
other is killed with SIGKILL at a random moment (after a random number of finished
results, plus a random delay), then the same command runs again. Its results must equal
the reference's, and the store must hold exactly one FINISHED run per (cell, mode).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.cli_helpers import bench_subprocess

ARGS = [
    "--model",
    "tiny-random-llama",
    "--quick",
    "--methods",
    "adamw,ivon",
    "--seeds",
    "0,1",
    "--steps",
    "6",
    "--limit-train",
    "32",
    "--limit-eval",
    "16",
    "--hp",
    "ivon.test_samples=2",
    "--checkpoint-every",
    "2",
    "--no-progress",
    "--no-save-adapters",
]
MODES = 6  # adamw x 2 seeds, ivon and ivon@mean x 2 seeds


def _rows(out_dir, newest=True) -> list[dict]:
    files = sorted(out_dir.glob("bench-*/results.jsonl"))
    return [json.loads(line) for line in files[-1 if newest else 0].read_text().splitlines()]


def _finished_runs(out_dir) -> list:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{out_dir / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["bayeslora"], output_format="list")
    return [
        r
        for r in runs
        if r.data.tags.get("bayeslora.kind") == "result" and r.info.status == "FINISHED"
    ]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    done = bench_subprocess([*ARGS, "--output-dir", str(out)], cwd=out)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def _start(out, stderr, extra=()) -> subprocess.Popen:
    """The bench with ARGS (and ``extra``) on ``out``, in a new process, offline."""
    env = {k: os.environ[k] for k in ("PATH", "HOME", "BAYESLORA_CACHE") if k in os.environ}
    env["HF_HUB_OFFLINE"] = "1"
    return subprocess.Popen(
        [sys.executable, "-m", "bayeslora.bench", *ARGS, *extra, "--output-dir", str(out)],
        cwd=out,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
    )


def _kill_at_random_point(out, seed: int) -> None:
    rng = random.Random(seed)
    results_before_kill, delay = rng.randrange(MODES - 1), rng.uniform(0.0, 2.0)
    process = _start(out, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        files = list(out.glob("bench-*/results.jsonl"))
        finished = len(files[0].read_text().splitlines()) if files else 0
        if finished >= results_before_kill:
            time.sleep(delay)
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    print(f"killed after {results_before_kill} result(s) + {delay:.2f} s (seed {seed})")


def test_a_killed_bench_run_again_equals_an_uninterrupted_one(reference, tmp_path):
    seed = random.randrange(10**6)  # printed: rerun with it to reproduce a failure
    _kill_at_random_point(tmp_path, seed)
    files = list(tmp_path.glob("bench-*/results.jsonl"))
    finished_cells = {r["cell"] for r in _rows(tmp_path)} if files else set()
    again = bench_subprocess([*ARGS, "--output-dir", str(tmp_path)], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    reused = int(re.search(r"4 cell\(s\): (\d) finished earlier", again.stderr).group(1))
    assert reused >= len(finished_cells), f"seed {seed}"  # what had finished did not run again

    expected = {(r["mode"], r["seed"]): r for r in _rows(reference)}
    got = {(r["mode"], r["seed"]): r for r in _rows(tmp_path)}
    assert got.keys() == expected.keys(), f"seed {seed}"
    for key, row in expected.items():
        assert got[key]["cell"] == row["cell"]
        for name, value in row["metrics"].items():
            assert got[key]["metrics"][name] == pytest.approx(value, abs=1e-9), (key, name, seed)

    runs = _finished_runs(tmp_path)
    per_cell_mode = [(r.data.tags["bayeslora.cell"], r.data.tags["bayeslora.mode"]) for r in runs]
    assert sorted(per_cell_mode) == sorted(set(per_cell_mode)), f"a result twice (seed {seed})"
    assert len(per_cell_mode) == MODES
    # the comparisons are rebuilt from the stored predictions exactly
    comparisons = {(c["mode"], c["seed"]): c["nll"]["diff"] for c in _comparisons(tmp_path)}
    assert comparisons == pytest.approx(
        {(c["mode"], c["seed"]): c["nll"]["diff"] for c in _comparisons(reference)}, abs=1e-9
    )
    assert not list((tmp_path / "checkpoints").glob("*/step-*"))  # finished cells: removed


def _comparisons(out_dir) -> list[dict]:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{out_dir / 'mlflow.db'}")
    runs = mlflow.search_runs(
        experiment_names=["bayeslora"],
        filter_string="tags.`bayeslora.kind` = 'bench' AND attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        output_format="list",
    )
    return mlflow.artifacts.load_dict(f"{runs[0].info.artifact_uri}/comparison_arc_easy.json")


def test_a_finished_run_again_reuses_everything_and_force_reruns(tmp_path):
    first = bench_subprocess([*ARGS, "--output-dir", str(tmp_path)], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    again = bench_subprocess([*ARGS, "--output-dir", str(tmp_path)], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "4 cell(s): 4 finished earlier (reused from the store), 0 to run" in again.stderr
    rows = _rows(tmp_path)
    assert len(rows) == MODES and all(r["reused"] for r in rows)
    assert len(_finished_runs(tmp_path)) == MODES  # nothing logged twice

    forced = bench_subprocess([*ARGS, "--output-dir", str(tmp_path), "--force"], cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert "0 finished earlier (reused from the store), 4 to run" in forced.stderr
    assert not any(r["reused"] for r in _rows(tmp_path))
    assert len(_finished_runs(tmp_path)) == 2 * MODES


def test_sigterm_ends_the_runs_in_flight_as_killed(tmp_path):
    process = _start(tmp_path, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob("bench-*/results.jsonl")) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-3000:]
    assert "run the same command again to continue" in err

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["bayeslora"], output_format="list")
    (parent,) = [r for r in runs if r.data.tags["bayeslora.kind"] == "bench"]
    assert parent.info.status == "KILLED"
    assert not [r for r in runs if r.info.status == "RUNNING"]


def _all_runs(out_dir) -> list:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{out_dir / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=["bayeslora"], output_format="list")


def test_runs_of_a_process_killed_outright_are_marked_failed_by_the_next(tmp_path):
    process = _start(tmp_path, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob("bench-*/results.jsonl")) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # no handler runs: its open runs stay RUNNING
    process.wait()
    left_running = [r for r in _all_runs(tmp_path) if r.info.status == "RUNNING"]
    assert any(r.data.tags["bayeslora.kind"] == "bench" for r in left_running)

    again = bench_subprocess([*ARGS, "--output-dir", str(tmp_path)], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"marked {len(left_running)} run(s) FAILED whose process on this host died" in (
        again.stderr
    )
    runs = {r.info.run_id: r for r in _all_runs(tmp_path)}
    assert not [r for r in runs.values() if r.info.status == "RUNNING"]
    for run in left_running:
        after = runs[run.info.run_id]
        assert after.info.status == "FAILED"
        assert after.data.tags["bayeslora.error"].startswith(f"process died: pid {process.pid}")


@pytest.mark.parametrize("extra", [(), ("--tune", "--n-trials", "3")], ids=["cells", "tuning"])
def test_two_benches_started_together_share_the_cells_without_doing_one_twice(extra, tmp_path):
    first, second = (_start(tmp_path, subprocess.PIPE, extra) for _ in range(2))
    errs = [p.communicate(timeout=600)[1] for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], [e[-3000:] for e in errs]

    runs = _finished_runs(tmp_path)
    per_cell_mode = [(r.data.tags["bayeslora.cell"], r.data.tags["bayeslora.mode"]) for r in runs]
    assert len(per_cell_mode) == len(set(per_cell_mode)) == MODES  # no cell done twice
    run_dirs = sorted(tmp_path.glob("bench-*"))
    assert len(run_dirs) == 2  # one each, even when started in the same second
    tables = [{(r["mode"], r["seed"]): r["metrics"] for r in _rows_of(d)} for d in run_dirs]
    assert tables[0] == tables[1] and len(tables[0]) == MODES  # both report every cell
    # they did overlap: each ran some cells itself (claimed ones were left to the other) or
    # waited for a claimed one
    ran = [any(not r["reused"] for r in _rows_of(d)) for d in run_dirs]
    assert all(ran) or any("waiting for" in e for e in errs), (ran, [e[-2000:] for e in errs])
    if extra:  # one optuna storage: each study has exactly its trials, and both used its best
        import optuna

        studies = optuna.get_all_study_summaries(f"sqlite:///{tmp_path / 'optuna.db'}")
        assert len(studies) == 2 and all(s.n_trials == 3 for s in studies)


def _rows_of(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
