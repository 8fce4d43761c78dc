"""--executor ray on a local Ray instance (2 CPUs, 127.0.0.1): the same results as a local
run, a worker killed mid-cell, Ctrl-C on the driver."""

from __future__ import annotations

import _thread
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from bayeslora.bench.cli import main
from bayeslora.bench.ray_executor import NAMESPACE, PROGRESS_ACTOR
from tests.bench.test_cli import TINY

GRID = [*TINY, "--methods", "adamw,ivon", "--seeds", "0,1", "--no-save-adapters"]


@pytest.fixture
def new_dir(tmp_path, mlflow_template, monkeypatch):
    """``new_dir(name)``: an output directory with a ready (empty) MLflow store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    def make(name: str) -> Path:
        out = tmp_path / name
        out.mkdir()
        shutil.copy(mlflow_template, out / "mlflow.db")
        return out

    return make


def _runs(out: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("bayeslora")
    return client.search_runs([experiment.experiment_id], max_results=1000)


def _result_runs(out: Path) -> list:
    return [r for r in _runs(out) if r.data.tags.get("bayeslora.kind") == "result"]


def _metrics(out: Path) -> dict:
    """(mode, seed) -> metrics, from the results.jsonl files of every invocation."""
    rows = {}
    for path in sorted(out.glob("bench-*/results.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            rows[(row["mode"], row["seed"])] = row["metrics"]
    return rows


def test_a_grid_on_ray_gives_the_local_metrics_once_per_cell_and_mode(
    ray_instance, new_dir, capsys
):
    local_dir, ray_dir = new_dir("local"), new_dir("ray")
    # One torch thread in both, so that float32 rounding is the same too.
    assert main([*GRID, "--output-dir", str(local_dir), "--threads", "1"]) == 0
    capsys.readouterr()
    assert main([*GRID, "--output-dir", str(ray_dir), "--executor", "ray"]) == 0
    err = capsys.readouterr().err
    assert "cells: 4 done, 0 running, 0 pending, 0 failed (of 4 to run on Ray)" in err

    local, on_ray = _metrics(local_dir), _metrics(ray_dir)
    assert len(local) == 6  # adamw: 1 mode, ivon: 2 modes; 2 seeds
    assert on_ray == local

    runs = _runs(ray_dir)
    (bench,) = [r for r in runs if r.data.tags.get("bayeslora.kind") == "bench"]
    results = _result_runs(ray_dir)
    assert len(results) == 6 and all(r.info.status == "FINISHED" for r in results)
    assert (
        len({(r.data.tags["bayeslora.cell"], r.data.tags["bayeslora.mode"]) for r in results}) == 6
    )
    # nested under the driver's run, recorded by Ray worker processes
    assert {r.data.tags["mlflow.parentRunId"] for r in results} == {bench.info.run_id}
    assert str(os.getpid()) not in {r.data.tags["bayeslora.pid"] for r in results}
    assert {r.data.tags["bayeslora.threads"] for r in results} == {"1"}  # --cpus-per-cell

    # Again with one more seed: the 4 finished cells are reused, only the new ones run,
    # and nothing is recorded twice.
    more = [*GRID, "--seeds", "0,1,2", "--output-dir", str(ray_dir), "--executor", "ray"]
    assert main(more) == 0
    assert "6 cell(s): 4 finished earlier (reused from the store), 2 to run" in (
        capsys.readouterr().err
    )
    results = _result_runs(ray_dir)
    assert len(results) == 9 and all(r.info.status == "FINISHED" for r in results)
    assert (
        len({(r.data.tags["bayeslora.cell"], r.data.tags["bayeslora.mode"]) for r in results}) == 9
    )


def test_a_cell_missing_one_mode_runs_that_mode_on_ray_and_reuses_the_stored_one(
    ray_instance, new_dir, capsys
):
    """What a worker killed between recording two modes leaves: the Ray task runs only the
    missing mode, the driver collects both, and the stored one is reused, not recorded again."""
    from mlflow.tracking import MlflowClient

    out = new_dir("partial")
    args = [*TINY, "--methods", "ivon", "--no-save-adapters", "--output-dir", str(out)]
    assert main([*args, "--threads", "1"]) == 0  # one thread: Ray's cell reruns it exactly
    before = _metrics(out)
    stored = {r.data.tags["bayeslora.mode"]: r for r in _result_runs(out)}
    MlflowClient(f"sqlite:///{out / 'mlflow.db'}").set_terminated(
        stored["ivon@mean"].info.run_id, status="FAILED"
    )
    capsys.readouterr()

    assert main([*args, "--executor", "ray"]) == 0
    assert "cells: 1 done, 0 running, 0 pending, 0 failed (of 1 to run on Ray)" in (
        capsys.readouterr().err
    )
    finished = [r for r in _result_runs(out) if r.info.status == "FINISHED"]
    modes = {r.data.tags["bayeslora.mode"]: r for r in finished}
    assert len(finished) == 2 and set(modes) == {"ivon", "ivon@mean"}
    assert modes["ivon"].info.run_id == stored["ivon"].info.run_id  # reused, not recorded again
    assert modes["ivon@mean"].info.run_id != stored["ivon@mean"].info.run_id
    newest = max(out.glob("bench-*/results.jsonl"), key=lambda p: p.stat().st_mtime)
    rows = {row["mode"]: row for row in map(json.loads, newest.read_text().splitlines())}
    assert rows["ivon"]["reused"] is True and rows["ivon@mean"]["reused"] is False
    assert rows["ivon@mean"]["metrics"] == before[("ivon@mean", 0)]


def _running_cells(ray, timeout: float = 60.0) -> dict:
    """The progress actor's running cells, as soon as one runs: key -> (pid, host)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        names = [
            a["name"]
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith(PROGRESS_ACTOR)
        ]
        for name in names:  # an earlier test's actor may still be listed while it ends
            try:
                running = ray.get(ray.get_actor(name, namespace=NAMESPACE).running.remote())
            except Exception:
                continue
            if running:
                return running
        time.sleep(0.2)
    raise AssertionError("no cell started running on Ray")


def test_a_worker_killed_mid_cell_is_retried_and_its_cell_recorded_once(ray_instance, new_dir):
    out = new_dir("out")
    args = [*TINY, "--methods", "adamw", "--seeds", "0,1", "--steps", "120", "--no-save-adapters"]
    args += ["--executor", "ray", "--max-retries", "1", "--output-dir", str(out)]
    outcome = {}
    driver = threading.Thread(target=lambda: outcome.setdefault("code", main(args)))
    driver.start()
    try:
        key, (pid, _) = next(iter(_running_cells(ray_instance).items()))
        # the pid is a Ray worker's, not anything else on this machine
        assert "ray" in Path(f"/proc/{pid}/cmdline").read_text()
        os.kill(pid, signal.SIGKILL)
    finally:
        driver.join(timeout=240)
    assert outcome.get("code") == 0  # retried: every cell finished

    results = _result_runs(out)
    finished = [r for r in results if r.info.status == "FINISHED"]
    assert sorted(r.data.tags["bayeslora.seed"] for r in finished) == ["0", "1"]  # once each
    killed_cell = [r for r in finished if r.data.tags["bayeslora.cell"] == key]
    assert len(killed_cell) == 1
    assert killed_cell[0].data.tags["bayeslora.pid"] != str(pid)  # the retry recorded it
    # whatever the killed attempt had opened is not FINISHED, nor left RUNNING
    assert not [
        r
        for r in _runs(out)
        if r.data.tags.get("bayeslora.pid") == str(pid) and r.info.status in ("FINISHED", "RUNNING")
    ]


def test_ctrl_c_on_the_driver_cancels_the_cells_in_flight_and_keeps_the_finished(
    ray_instance, new_dir
):
    out = new_dir("out")
    # 3 cells on 2 CPUs: the third starts when one of the first two has finished, and
    # trains long enough (a second or two) to be in flight when Ctrl-C comes.
    args = [*TINY, "--methods", "adamw", "--seeds", "0,1,2", "--steps", "200"]
    args += ["--no-save-adapters", "--executor", "ray", "--output-dir", str(out)]
    returned = threading.Event()

    def interrupt_after_the_first_result() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not returned.is_set():
            if any(p.read_text() for p in out.glob("bench-*/results.jsonl")):
                _thread.interrupt_main()  # Ctrl-C, as the terminal delivers it
                return
            time.sleep(0.05)

    # Python's own Ctrl-C handler, which a terminal's Ctrl-C reaches: with SIGINT ignored
    # (inherited by a process a non-interactive shell starts in the background)
    # interrupt_main() does nothing.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    watcher = threading.Thread(target=interrupt_after_the_first_result)
    watcher.start()
    try:
        code = main(args)
    finally:
        returned.set()
        watcher.join()
        signal.signal(signal.SIGINT, previous)
    assert code == 130

    runs = _runs(out)
    (bench,) = [r for r in runs if r.data.tags.get("bayeslora.kind") == "bench"]
    assert bench.info.status == "KILLED"
    finished = [r for r in _result_runs(out) if r.info.status == "FINISHED"]
    assert 1 <= len(finished) < 3  # the first cell is kept; not all had finished

    # The same command finishes the rest; nothing is recorded twice.
    assert main(args) == 0
    finished = [r for r in _result_runs(out) if r.info.status == "FINISHED"]
    assert sorted(r.data.tags["bayeslora.seed"] for r in finished) == ["0", "1", "2"]


def test_cells_the_cluster_cannot_place_or_stores_it_cannot_share_are_exit_2(
    ray_instance, tmp_path, monkeypatch, capsys
):
    args = [*TINY, "--executor", "ray", "--output-dir", str(tmp_path)]
    assert main([*args, "--gpus-per-cell", "1"]) == 2  # the test instance has no GPU
    assert "--gpus-per-cell 1: the Ray cluster has 0 GPU(s)" in capsys.readouterr().err

    two_nodes = [{"Alive": True}, {"Alive": True}]
    monkeypatch.setattr(ray_instance, "nodes", lambda: two_nodes)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert (
        "the Ray cluster has 2 nodes" in err and "then --tracking-uri http://127.0.0.1:5000" in err
    )
    assert not list(tmp_path.iterdir())  # refused before anything was written
    assert ray_instance.is_initialized()  # the connection it found is left as it was


def test_an_error_inside_a_cell_on_ray_is_that_cells_failure_as_in_a_local_run(
    ray_instance, new_dir, capsys
):
    out = new_dir("out")
    # AdamW at lr 1e30 overflows within a few steps: DivergedError inside the Ray worker
    args = [*TINY, "--methods", "adamw", "--hp", "adamw.lr=1e30", "--no-save-adapters"]
    assert main([*args, "--executor", "ray", "--output-dir", str(out)]) == 1
    captured = capsys.readouterr()
    assert "cells: 0 done, 0 running, 0 pending, 1 failed (of 1 to run on Ray)" in captured.err
    (line,) = [line for line in captured.out.splitlines() if line.startswith("adamw ")]
    assert "FAILED DivergedError: training loss became nan at step" in line  # as a local run
    (failed,) = [r for r in _runs(out) if r.data.tags.get("bayeslora.kind") == "result"]
    assert failed.info.status == "FAILED"
    assert failed.data.tags["bayeslora.error"].startswith("DivergedError: training loss")


@pytest.mark.parametrize("skew_s", [3600, -3600])
def test_under_force_cells_rerun_and_are_collected_whatever_the_driver_clock_says(
    ray_instance, new_dir, monkeypatch, skew_s
):
    """The driver's clock an hour ahead of (or behind) its workers' and the store's end
    times: under --force every cell still reruns (a task takes only runs nested under this
    invocation as finished), and the driver takes the runs its tasks recorded by their ids."""
    from bayeslora.bench import runner

    out = new_dir("out")
    args = [*TINY, "--methods", "adamw", "--no-save-adapters", "--output-dir", str(out)]
    assert main([*args, "--executor", "ray"]) == 0
    real = runner.BenchContext

    def an_hour_ahead(*args, **kwargs):
        ctx = real(*args, **kwargs)
        ctx.started += skew_s
        return ctx

    monkeypatch.setattr(runner, "BenchContext", an_hour_ahead)
    assert main([*args, "--executor", "ray", "--force"]) == 0
    finished = [r for r in _result_runs(out) if r.info.status == "FINISHED"]
    assert len(finished) == 2  # recomputed under --force, and taken by the driver
