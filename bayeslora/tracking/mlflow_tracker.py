"""The small layer between the harness and MLflow.

Default store: SQLite in the output directory (``runs/mlflow.db``), because MLflow 3.13+
refuses the plain file store; ``--tracking-uri`` or ``MLFLOW_TRACKING_URI`` (an
``mlflow server`` URL included) override it. Artifacts of a new experiment go next to
the database (``runs/mlartifacts``) unless the server decides otherwise; so do those of the
store's Default experiment, which MLflow would otherwise put in the working directory.

What the MLflow UI shows comes from here: the experiment is marked as model training
(:data:`EXPERIMENT_KIND_TAG`), runs carry descriptions (:data:`NOTE_TAG`), dataset inputs
(:meth:`MlflowTracker.log_dataset`) and, where the caller knows them, the real start and end
of the work they record (``run(start_time=..., end_time=...)``).
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
from bayeslora.tracking.schema import ERROR_TAG, PARENT_TAG

MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
# A dataset's digest as the UI shows it (MLflow's limit is 36 characters; its own are 8)
DIGEST_LENGTH = 12
# The experiment's kind: MLflow's UI opens an experiment of this kind in its model-training
# layout (runs, metrics, charts) rather than the GenAI one (traces, judges, prompts). MLflow
# 3.17's UI takes the layout from a per-browser switch instead (the ``workflowType=
# machine_learning`` URL parameter, see :func:`ui_path`); the tag still says what this is.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
NOTE_TAG = "mlflow.note.content"  # a run's or an experiment's description (Markdown) in the UI
# + a key: a view of the runs table kept in the experiment, as the UI's "share" button keeps
# one; the URL parameter ``viewStateShareKey=<key>`` opens it (:func:`ui_path`).
SHARED_VIEW_TAG = "mlflow.sharedViewState."
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


def ui_path(experiment_id: str, view: str | None = None) -> str:
    """The MLflow UI's page of an experiment's runs, in the model-training layout, in the
    shared ``view`` if given (:meth:`MlflowTracker.share_view`); append it to the server's
    address."""
    path = f"/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    return path + (f"&viewStateShareKey={view}" if view else "")


def _millis(unix_seconds: float | None) -> int | None:
    return None if unix_seconds is None else int(unix_seconds * 1000)


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


def _create_sqlite_store(tracking_uri: str, artifact_dir: str | Path | None) -> None:
    """Create a new SQLite store with ``artifact_dir`` as its artifact root. MLflow creates
    the store's Default experiment (id 0) the first time it opens a database, with its
    artifacts under the root it was given: through the tracking API, ``./mlruns`` in whatever
    directory the process runs in. An existing database is left as it is."""
    if not (artifact_dir and tracking_uri.startswith("sqlite:///")):
        return
    if Path(tracking_uri.removeprefix("sqlite:///")).exists():
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    SqlAlchemyStore(tracking_uri, Path(artifact_dir).resolve().as_uri())


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
        description: str | None = None,
        parent_run_id: str | None = None,
    ):
        """``artifact_dir``: where a new experiment of a SQLite store keeps its artifacts;
        ``description``: the experiment's, shown on its page, if it has none yet."""
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
            _create_sqlite_store(tracking_uri, artifact_dir)
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
        client = mlflow.MlflowClient(tracking_uri)
        tags = client.get_experiment(self.experiment_id).tags
        if tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING_KIND:
            client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
        if description and not tags.get(NOTE_TAG):  # one a user wrote in the UI stays
            client.set_experiment_tag(self.experiment_id, NOTE_TAG, description)

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
        description: str | None = None,
        start_time: float | None = None,
        end_time: float | None = None,
    ) -> Iterator[Any]:
        """A run that ends FINISHED, FAILED (exception) or KILLED (Ctrl-C, SIGTERM) — never
        left RUNNING by this process; tagged with the process, so that a later one can mark
        it FAILED if this process is killed outright (:meth:`fail_orphans`).

        ``description``: shown on the run's page; ``start_time``, ``end_time`` (unix
        seconds): when the work it records began and ended, if not now (a result recorded
        after its computation), so that the UI's times and durations are the work's."""
        tags = {**process_tags(), **(tags or {})}
        if description:
            tags[NOTE_TAG] = description
        if start_time is None:
            run = self.mlflow.start_run(
                run_name=name, nested=nested, tags=tags, parent_run_id=self._parent(nested)
            )
        else:
            run = self._start_at(name, nested, tags, start_time)
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
            if end_time is not None:
                self.mlflow.MlflowClient(self.tracking_uri).set_terminated(
                    run.info.run_id, "FINISHED", end_time=_millis(end_time)
                )

    def _start_at(self, name: str, nested: bool, tags: dict, start_time: float):
        """``mlflow.start_run`` for a run that began at ``start_time``, which it cannot set:
        the run is created with MLflow's default tags (source, user, parent), then made
        the active run."""
        from mlflow.tracking.context.registry import resolve_tags

        mlflow = self.mlflow
        parent = mlflow.active_run()
        if parent is not None and not nested:
            raise RuntimeError(f"run {parent.info.run_id} is already active; pass nested=True")
        tags = {**tags, "mlflow.runName": name}
        parent_id = parent.info.run_id if parent is not None else self._parent(nested)
        if parent_id is not None:
            tags[PARENT_TAG] = parent_id
        created = mlflow.MlflowClient(self.tracking_uri).create_run(
            self.experiment_id,
            start_time=_millis(start_time),
            tags=resolve_tags(tags),
            run_name=name,
        )
        return mlflow.start_run(run_id=created.info.run_id, nested=nested)

    def _parent(self, nested: bool) -> str | None:
        """The other process's run to nest under, when this one has none active."""
        if nested and self.parent_run_id and self.mlflow.active_run() is None:
            return self.parent_run_id
        return None

    def _end(self, run, status: str, reason: str) -> None:
        """End ``run`` with ``status`` while an exception propagates: a store that fails
        now must not replace that exception with its own."""
        try:
            self.mlflow.set_tag(ERROR_TAG, reason[:5000])
            self.mlflow.end_run(status=status)
        except Exception:
            _forget_active_runs(run.info.run_id)  # only this one: its parent goes on

    def share_view(self, key: str, metrics: list[str]) -> None:
        """Keep in the experiment a view of its runs table with the Dataset column and
        ``metrics`` as columns (MLflow shows no metric column by default), for
        :func:`ui_path` ``(experiment_id, key)``."""
        columns = ["attributes.`Dataset`", *(f"metrics.`{m}`" for m in metrics)]
        self.mlflow.MlflowClient(self.tracking_uri).set_experiment_tag(
            self.experiment_id, SHARED_VIEW_TAG + key, json.dumps({"selectedColumns": columns})
        )

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
                ERROR_TAG,
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
                ERROR_TAG: describe_error(error)[:5000],
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

    def log_params(self, params: Mapping[str, Any]) -> None:
        flat = flatten(params)
        items = list(flat.items())
        for i in range(0, len(items), 100):  # MLflow's batch limit
            self.mlflow.log_params(dict(items[i : i + 100]))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_dataset(
        self, name: str, digest: str, context: str, source: Mapping[str, Any], rows: int
    ) -> None:
        """Record that the active run used a dataset (``context``: what for, e.g. "eval"):
        its ``name``, ``digest`` (a hex hash of its contents, cut to :data:`DIGEST_LENGTH`),
        where it came from (``source``, shown as JSON) and its size. The UI's Dataset column
        shows "name (digest)"."""
        from mlflow.data.code_dataset_source import CodeDatasetSource
        from mlflow.data.meta_dataset import MetaDataset

        class Examples(MetaDataset):  # a MetaDataset (no data, only what identifies it), sized
            @property
            def profile(self) -> dict[str, int]:
                return {"num_rows": rows}

            def to_dict(self) -> dict[str, str]:
                return {**super().to_dict(), "profile": json.dumps(self.profile)}

        source_info = {k: str(v) for k, v in source.items()}
        dataset = Examples(CodeDatasetSource(source_info), name, digest[:DIGEST_LENGTH])
        self.mlflow.log_input(dataset, context=context)

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
