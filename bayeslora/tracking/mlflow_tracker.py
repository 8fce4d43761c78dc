"""The small layer between the harness and MLflow.

Default store: SQLite in the output directory (``runs/mlflow.db``), because MLflow 3.13+
refuses the plain file store; ``--tracking-uri`` or ``MLFLOW_TRACKING_URI`` (an
``mlflow server`` URL included) override it. Artifacts of a new experiment go next to
the database (``runs/mlartifacts``) unless the server decides otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bayeslora.tracking.process import HOST_TAG, PID_TAG, is_gone, process_tags

MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
# MLflow's HTTP client retries a failed request 7 times with a backoff factor of 2: about
# 4 minutes before a stopped server is reported, for every request. Ours unless the user
# set them: 4 retries, factor 1 (about 15 s), enough for a server restart or a network blip.
HTTP_RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}


def apply_http_retry_defaults() -> None:
    """Set :data:`HTTP_RETRY_DEFAULTS` in the environment, where the user set nothing."""
    for name, value in HTTP_RETRY_DEFAULTS.items():
        os.environ.setdefault(name, value)


class TrackingStoreError(RuntimeError):
    """The tracking store stopped answering while results were being recorded."""


def describe_error(err: BaseException) -> str:
    """How an error is reported everywhere (tags, tables, messages): "Type: message"."""
    return f"{type(err).__name__}: {err}"


def default_tracking_uri(output_dir: str | Path) -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path(output_dir).resolve() / 'mlflow.db'}"


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{"lora": {"r": 8}} → {"lora.r": "8"}; long values are cut to MLflow's limit."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        # MLflow keys allow letters, digits and _-. /: "adamw+temperature" becomes "adamw_temperature".
        name = re.sub(r"[^\w\-. /]", "_", f"{prefix}{key}")
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            flat[name] = text[:MAX_PARAM_LENGTH]
    return flat


def _first_open_lock(tracking_uri: str):
    """For a local SQLite store, a file lock beside it, held while the store is opened
    (and, the first time, created and migrated): processes started together then create it
    one after the other. Other stores: no lock."""
    if not tracking_uri.startswith("sqlite:///"):
        return contextlib.nullcontext()
    import filelock

    path = Path(tracking_uri.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    return filelock.FileLock(f"{path}.open.lock")


def _forget_active_runs(run_id: str | None = None) -> None:
    """Drop this thread's active MLflow run ``run_id`` (None: all of them) without a request
    to the store. MLflow has no public call for it: ``end_run`` asks the (dead) server, and
    so would MLflow's exit hook, retrying for every run. tests/tracking pins the attribute."""
    from mlflow.tracking import fluent

    try:
        stack = fluent._active_run_stack.get()
    except AttributeError:  # a future MLflow: then its exit hook may retry, nothing worse
        return
    stack[:] = [r for r in stack if run_id is not None and r.info.run_id != run_id]


class MlflowTracker:
    """Parent run per bench invocation, child runs nested under it.

    ``parent_run_id``: a run opened by another process (a Ray worker's driver) that this
    process's nested runs go under when it has no active run of its own."""

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        artifact_dir: str | Path | None = None,
        parent_run_id: str | None = None,
    ):
        self.parent_run_id = parent_run_id
        # Reading a stored result back (resume) would draw a progress bar per artifact.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        apply_http_retry_defaults()
        import mlflow

        self.mlflow = mlflow
        self.tracking_uri = tracking_uri
        # mlflow.set_tracking_uri also writes MLFLOW_TRACKING_URI into the environment; a
        # second bench in this process (a notebook, the tests) would then take this store
        # for the user's choice. Keep the environment as the user left it.
        user_uri = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(tracking_uri)
        if user_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = user_uri
        with _first_open_lock(tracking_uri):
            for attempt in range(3):
                try:
                    self._ensure_experiment(experiment, artifact_dir)
                    break
                except Exception:
                    # Two workers opening a new database store at once race in MLflow's
                    # schema migrations; the loser succeeds once the winner has created the
                    # tables. (A local SQLite file is opened under a lock instead.)
                    if attempt == 2:
                        raise
                    time.sleep(2.0)
            self.experiment_id = mlflow.set_experiment(experiment).experiment_id

    def _ensure_experiment(self, experiment: str, artifact_dir: str | Path | None) -> None:
        mlflow = self.mlflow
        if mlflow.get_experiment_by_name(experiment) is None:
            location = (
                Path(artifact_dir).resolve().as_uri()
                if artifact_dir and self.tracking_uri.startswith("sqlite")
                else None
            )
            try:
                mlflow.create_experiment(experiment, artifact_location=location)
            except mlflow.exceptions.MlflowException:
                if mlflow.get_experiment_by_name(experiment) is None:  # not a creation race
                    raise

    @contextmanager
    def run(
        self,
        name: str,
        *,
        nested: bool = False,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Iterator[Any]:
        """A run that ends FINISHED, FAILED (exception) or KILLED (Ctrl-C, SIGTERM) — never
        left RUNNING by this process; tagged with the process, so that a later one can mark
        it FAILED if this process is killed outright (:meth:`fail_orphans`)."""
        tags = {**process_tags(), **(tags or {})}
        run = self.mlflow.start_run(
            run_name=name, nested=nested, tags=tags, parent_run_id=self._parent(nested)
        )
        try:
            if params:
                self.log_params(params)
            yield run
        except KeyboardInterrupt:
            self._end(run, "KILLED", "interrupted (KeyboardInterrupt)")
            raise
        except TrackingStoreError:
            _forget_active_runs()  # there is no store to end them in
            raise
        except BaseException as err:
            self._end(run, "FAILED", describe_error(err))
            raise
        else:
            self.mlflow.end_run(status="FINISHED")

    def _parent(self, nested: bool) -> str | None:
        """The other process's run to nest under, when this one has none active."""
        if nested and self.parent_run_id and self.mlflow.active_run() is None:
            return self.parent_run_id
        return None

    def _end(self, run, status: str, reason: str) -> None:
        """End ``run`` with ``status`` while an exception propagates: a store that fails
        now must not replace that exception with its own."""
        try:
            self.mlflow.set_tag("bayeslora.error", reason[:5000])
            self.mlflow.end_run(status=status)
        except Exception:
            _forget_active_runs(run.info.run_id)  # only this one: its parent goes on

    def answers(self) -> bool:
        """Whether the store can be reached now (a server URL: a TCP connection in seconds)."""
        from bayeslora.tracking.urls import check_reachable

        try:
            check_reachable(self.tracking_uri, "tracking store")
        except ValueError:
            return False
        return True

    def fail_orphans(self) -> list[str]:
        """Mark FAILED the RUNNING runs of this experiment whose process, on this host, has
        ended without closing them (killed with SIGKILL, out of memory); their names."""
        from socket import gethostname

        client = self.mlflow.tracking.MlflowClient(self.tracking_uri)
        orphans = [
            run
            for run in self.search_runs(
                f"attributes.status = 'RUNNING' AND tags.`{HOST_TAG}` = '{gethostname()}'"
            )
            if is_gone(run.data.tags)
        ]
        for run in orphans:
            pid = run.data.tags.get(PID_TAG)
            client.set_tag(
                run.info.run_id,
                "bayeslora.error",
                f"process died: pid {pid} on this host ended without closing the run",
            )
            client.set_terminated(run.info.run_id, status="FAILED")
        return [run.info.run_name for run in orphans]

    def record_failure(
        self,
        name: str,
        error: BaseException,
        *,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """A nested run with status FAILED that says what went wrong."""
        self.mlflow.start_run(
            run_name=name,
            nested=True,
            parent_run_id=self._parent(True),
            tags={
                **process_tags(),  # it is RUNNING for a moment too
                **(tags or {}),
                "bayeslora.error": describe_error(error)[:5000],
            },
        )
        if params:
            self.log_params(params)
        self.mlflow.end_run(status="FAILED")

    def search_runs(self, filter_string: str, order_by: list[str] | None = None) -> list[Any]:
        """Runs of this experiment matching an MLflow filter, as ``mlflow.entities.Run``."""
        return self.mlflow.search_runs(
            experiment_ids=[self.experiment_id],
            filter_string=filter_string,
            order_by=order_by,
            output_format="list",
        )

    def load_dict(self, run, artifact_file: str) -> Any:
        """A JSON artifact of a run of the store (an ``mlflow.entities.Run``)."""
        return self.mlflow.artifacts.load_dict(
            run.info.artifact_uri.rstrip("/") + "/" + artifact_file
        )

    def load_arrays(self, run, artifact_file: str) -> dict[str, Any]:
        """A numpy ``.npz`` artifact of a run (see :meth:`log_arrays`), as numpy arrays."""
        import numpy as np

        with tempfile.TemporaryDirectory() as tmp:
            path = self.mlflow.artifacts.download_artifacts(
                run.info.artifact_uri.rstrip("/") + "/" + artifact_file, dst_path=tmp
            )
            with np.load(path, allow_pickle=False) as archive:  # data only, never objects
                return {name: archive[name] for name in archive.files}

    def log_params(self, params: Mapping[str, Any]) -> None:
        flat = flatten(params)
        items = list(flat.items())
        for i in range(0, len(items), 100):  # MLflow's batch limit
            self.mlflow.log_params(dict(items[i : i + 100]))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_dict(self, data: Any, artifact_file: str) -> None:
        self.mlflow.log_dict(data, artifact_file)

    def log_arrays(self, arrays: Mapping[str, Any], artifact_file: str) -> None:
        """Numpy arrays as one compressed ``.npz`` artifact (``artifact_file`` ends in .npz)."""
        import numpy as np

        target = Path(artifact_file)
        with tempfile.TemporaryDirectory() as tmp:
            np.savez_compressed(Path(tmp) / target.name, **arrays)
            parent = str(target.parent)
            self.mlflow.log_artifact(
                str(Path(tmp) / target.name), None if parent == "." else parent
            )

    def log_text(self, text: str, artifact_file: str) -> None:
        self.mlflow.log_text(text, artifact_file)

    def log_directory(self, write: Any, artifact_path: str) -> None:
        """Call ``write(directory)`` on a temporary directory and log what it wrote."""
        with tempfile.TemporaryDirectory() as tmp:
            write(tmp)
            self.mlflow.log_artifacts(tmp, artifact_path)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        self.mlflow.log_figure(figure, artifact_file)
