import os

import pytest

from bayeslora.tracking.mlflow_tracker import MlflowTracker, default_tracking_uri, flatten


def test_flatten_nests_and_cuts():
    flat = flatten({"lora": {"r": 8, "targets": ["q_proj"]}, "name": "x", "long": "y" * 7000})
    assert flat["lora.r"] == "8" and flat["lora.targets"] == '["q_proj"]' and flat["name"] == "x"
    assert len(flat["long"]) == 6000
    assert flatten({"hparams": {"adamw+temperature": {"lr": 1}}}) == {
        "hparams.adamw_temperature.lr": "1"
    }


def test_default_uri_is_sqlite_in_the_output_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_tracking_uri(tmp_path) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert default_tracking_uri(tmp_path) == "http://127.0.0.1:5000"


def test_runs_end_finished_failed_or_killed(tmp_path):
    tracker = MlflowTracker(
        f"sqlite:///{tmp_path / 'db.sqlite'}", "t", artifact_dir=tmp_path / "art"
    )
    with tracker.run("ok", params={"a": {"b": 1}}) as ok:
        tracker.log_metrics({"m": 1.0})
    with pytest.raises(RuntimeError):
        with tracker.run("bad") as bad:
            raise RuntimeError("boom")
    with pytest.raises(KeyboardInterrupt):
        with tracker.run("stopped") as stopped:
            raise KeyboardInterrupt
    client = tracker.mlflow.MlflowClient()
    assert client.get_run(ok.info.run_id).info.status == "FINISHED"
    assert client.get_run(ok.info.run_id).data.params == {"a.b": "1"}
    assert client.get_run(bad.info.run_id).info.status == "FAILED"
    assert client.get_run(bad.info.run_id).data.tags["bayeslora.error"] == "RuntimeError: boom"
    assert client.get_run(stopped.info.run_id).info.status == "KILLED"


def test_a_tracker_leaves_the_users_tracking_uri_as_it_was(tmp_path, monkeypatch):
    # mlflow.set_tracking_uri writes MLFLOW_TRACKING_URI; a second bench in the same process
    # must still get the store of its own --output-dir.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    MlflowTracker(default_tracking_uri(tmp_path / "a"), "x", tmp_path / "a" / "art")
    assert default_tracking_uri(tmp_path / "b") == f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'user.db'}")
    MlflowTracker(default_tracking_uri(tmp_path / "c"), "x", tmp_path / "c" / "art")
    assert default_tracking_uri(tmp_path / "d") == f"sqlite:///{tmp_path / 'user.db'}"


def test_the_private_mlflow_run_stack_we_rely_on_is_there():
    # _forget_active_runs drops runs without a request to a dead server through it
    from mlflow.tracking import fluent

    assert isinstance(fluent._active_run_stack.get(), list)


def test_a_nested_run_that_cannot_be_ended_leaves_its_parent_active(tmp_path, monkeypatch):
    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'db.sqlite'}", "t", tmp_path / "art")
    with tracker.run("parent") as parent:
        real_end = tracker.mlflow.end_run

        def end_run_that_fails(status="FINISHED"):
            raise ConnectionError("store gone for a moment")

        monkeypatch.setattr(tracker.mlflow, "end_run", end_run_that_fails)
        with pytest.raises(RuntimeError, match="boom"):  # the cause, not the store's error
            with tracker.run("child", nested=True):
                raise RuntimeError("boom")
        monkeypatch.setattr(tracker.mlflow, "end_run", real_end)
        assert tracker.mlflow.active_run().info.run_id == parent.info.run_id


def test_process_tags_tell_live_dead_and_unknown_processes_apart(monkeypatch):
    import subprocess
    import sys

    from bayeslora.tracking import process

    here = process.process_tags()
    assert not process.is_gone(here)  # this process
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        alive = {**here, process.PID_TAG: str(child.pid)}
        alive[process.START_TAG] = process._start_time(child.pid) or ""
        assert not process.is_gone(alive)
        # the pid's start time differs from the tagged one: the pid was reused
        assert process.is_gone({**alive, process.START_TAG: "1"})
    finally:
        child.kill()
        child.wait()
    assert process.is_gone(alive)  # ended
    assert not process.is_gone({**alive, process.HOST_TAG: "another-host"})
    assert not process.is_gone({**alive, process.PID_NAMESPACE_TAG: "pid:[1]"})  # a container
    assert process.is_gone({**alive, process.PID_TAG: str(os.getpid()), process.BOOT_TAG: "x"})
    # /proc hiding the pid (hidepid): a process that exists is alive
    monkeypatch.setattr(process, "_start_time", lambda pid: None)
    assert not process.is_gone({**here, process.PID_TAG: "1"})  # init exists
    assert not process.is_gone({})
