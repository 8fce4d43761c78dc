import os

import pytest

from bayeslora.tracking.mlflow_tracker import (
    DIGEST_LENGTH,
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_KIND,
    NOTE_TAG,
    SHARED_VIEW_TAG,
    MlflowTracker,
    default_tracking_uri,
    flatten,
    ui_path,
)


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


def test_the_experiment_is_marked_model_training_and_described(tmp_path):
    tracker = MlflowTracker(
        f"sqlite:///{tmp_path / 'db.sqlite'}", "t", tmp_path / "art", description="what it is"
    )
    tags = tracker.mlflow.MlflowClient().get_experiment(tracker.experiment_id).tags
    assert tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND == "custom_model_development"
    assert tags[NOTE_TAG] == "what it is"
    # a description the user wrote in the UI stays; the kind is put back
    client = tracker.mlflow.MlflowClient()
    client.set_experiment_tag(tracker.experiment_id, NOTE_TAG, "the user's")
    client.delete_experiment_tag(tracker.experiment_id, EXPERIMENT_KIND_TAG)
    MlflowTracker(f"sqlite:///{tmp_path / 'db.sqlite'}", "t", tmp_path / "art", "ours")
    tags = client.get_experiment(tracker.experiment_id).tags
    assert tags[NOTE_TAG] == "the user's" and tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    assert ui_path(tracker.experiment_id) == (
        f"/#/experiments/{tracker.experiment_id}/runs?workflowType=machine_learning"
    )


def test_a_new_sqlite_stores_default_experiment_keeps_its_artifacts_with_ours(
    tmp_path, monkeypatch
):
    # MLflow would put them in ./mlruns/0 of whatever directory the bench runs in
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'db.sqlite'}", "t", tmp_path / "art")
    default = tracker.mlflow.MlflowClient().get_experiment("0")
    assert default.name == "Default"
    assert default.artifact_location == (tmp_path / "art" / "0").as_uri()
    assert not (workdir / "mlruns").exists()


def test_a_run_can_span_the_work_it_records_and_describe_it(tmp_path):
    import time

    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'db.sqlite'}", "t", tmp_path / "art")
    began, ended = time.time() - 120.0, time.time() - 30.0
    with tracker.run("parent") as parent:
        with tracker.run(
            "child",
            nested=True,
            tags={"k": "v"},
            description="**what** it is",
            start_time=began,
            end_time=ended,
        ) as child:
            tracker.log_metrics({"m": 1.0})
    run = tracker.mlflow.MlflowClient().get_run(child.info.run_id)
    assert run.info.status == "FINISHED"
    assert (run.info.start_time, run.info.end_time) == (int(began * 1000), int(ended * 1000))
    assert run.info.run_name == "child" and run.data.metrics == {"m": 1.0}
    tags = run.data.tags
    assert tags["mlflow.parentRunId"] == parent.info.run_id
    assert tags[NOTE_TAG] == "**what** it is" and tags["k"] == "v"
    assert "mlflow.user" in tags and "mlflow.source.name" in tags  # as start_run sets them
    assert tracker.mlflow.active_run() is None  # both ended


def test_a_spanning_run_that_fails_ends_failed(tmp_path):
    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'db.sqlite'}", "t", tmp_path / "art")
    with pytest.raises(RuntimeError):
        with tracker.run("bad", start_time=1.0e9, end_time=1.0e9 + 5) as bad:
            raise RuntimeError("boom")
    run = tracker.mlflow.MlflowClient().get_run(bad.info.run_id)
    assert run.info.status == "FAILED" and run.info.start_time == 1_000_000_000_000


def test_a_dataset_input_says_what_a_run_used(tmp_path):
    import json

    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'db.sqlite'}", "t", tmp_path / "art")
    digest = "0123456789abcdef" * 4
    with tracker.run("r") as r:
        tracker.log_dataset("arc_easy/validation", digest, "eval", {"split": "validation"}, 16)
    (used,) = tracker.mlflow.MlflowClient().get_run(r.info.run_id).inputs.dataset_inputs
    assert used.dataset.name == "arc_easy/validation"
    assert used.dataset.digest == digest[:DIGEST_LENGTH]
    assert json.loads(used.dataset.source) == {"tags": {"split": "validation"}}
    assert json.loads(used.dataset.profile) == {"num_rows": 16}
    assert {t.key: t.value for t in used.tags}["mlflow.data.context"] == "eval"


def test_a_shared_view_of_the_runs_table_shows_the_metrics_given(tmp_path):
    import json

    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'db.sqlite'}", "t", tmp_path / "art")
    tracker.share_view("v", ["accuracy", "ece"])
    tags = tracker.mlflow.MlflowClient().get_experiment(tracker.experiment_id).tags
    assert json.loads(tags[SHARED_VIEW_TAG + "v"]) == {
        "selectedColumns": ["attributes.`Dataset`", "metrics.`accuracy`", "metrics.`ece`"]
    }
    assert ui_path("3", "v") == (
        "/#/experiments/3/runs?workflowType=machine_learning&viewStateShareKey=v"
    )
