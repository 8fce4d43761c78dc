"""The Ray cluster that a bench spreads its cells and tuning trials over (``--executor ray``).

Ray schedules; this module only connects, says what each task needs, and cleans up:

- :func:`connect` starts a local Ray instance (``--ray-address`` left out: a laptop, a
  test) or joins a running cluster (``auto``, or ``HOST:PORT``), and refuses at once a
  tracking store or optuna storage that the other nodes cannot reach (a local SQLite
  file on a cluster of several nodes). A Ray connection that this process already has
  (a notebook, the tests) is used as it is, and left open at the end.
- :meth:`RayCluster.submit` runs a function as a Ray task with the cell's resources
  (``--gpus-per-cell``, ``--cpus-per-cell``) and ``--max-retries``: Ray packs the tasks
  onto the cluster's GPUs and CPUs, and reruns a task whose worker process died; an
  exception raised by the task itself is not retried (it is the cell's result).
- :meth:`RayCluster.cancel` stops tasks in flight (Ctrl-C, a fatal error) by killing
  their worker processes; what they had left RUNNING in the store is marked FAILED.
- :func:`cached_model` and :func:`keep_model` hold the base model of a worker process
  between the tasks it runs, so it is loaded once per worker, not once per cell.

Ray is an optional dependency (``pip install 'bayeslora[ray]'``); nothing here imports
it before :func:`connect`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

CANCEL_GRACE_S = 10.0  # how long the driver waits for cancelled tasks to stop


def require_ray():
    from bayeslora._optional import require

    return require("ray", extra="ray", purpose="--executor ray")


@dataclass
class RayCluster:
    """A connection to a Ray cluster and the resources of one cell (or trial) task."""

    ray: Any  # the ray module
    address: str  # as reported by Ray
    nodes: int  # alive nodes when connected
    gpus_per_cell: float
    cpus_per_cell: int
    max_retries: int
    started_here: bool  # a local instance this process started (and shuts down)
    _remote: dict = field(default_factory=dict, repr=False)

    def describe(self) -> str:
        resources = self.ray.cluster_resources()
        where = "a local Ray instance" if self.started_here else f"Ray cluster {self.address}"
        return (
            f"{where}: {self.nodes} node(s), {resources.get('CPU', 0):g} CPU(s), "
            f"{resources.get('GPU', 0):g} GPU(s); each task asks for {self.cpus_per_cell} "
            f"CPU(s) and {self.gpus_per_cell:g} GPU(s), retried {self.max_retries} time(s) "
            "if its worker dies"
        )

    def slots(self) -> int:
        """How many cell tasks fit on the cluster at once."""
        resources = self.ray.cluster_resources()
        fits = [resources.get("CPU", 0) // self.cpus_per_cell]
        if self.gpus_per_cell:
            fits.append(resources.get("GPU", 0) // self.gpus_per_cell)
        return max(1, int(min(fits)))

    def submit(self, fn: Callable, *args) -> Any:
        """``fn(*args)`` as a Ray task with the cell's resources; its ObjectRef."""
        if fn not in self._remote:
            self._remote[fn] = self.ray.remote(fn)
        return (
            self._remote[fn]
            .options(
                num_cpus=self.cpus_per_cell,
                num_gpus=self.gpus_per_cell,
                max_retries=self.max_retries,
                retry_exceptions=False,
            )
            .remote(*args)
        )

    def result(self, ref) -> Any:
        """The task's return value; an exception the task raised is raised as itself (the
        remote traceback chained to it), a dead worker as Ray's error."""
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as err:
            cause = getattr(err, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from err
            raise

    def cancel(self, refs: Iterable) -> None:
        """Stop ``refs`` and wait (up to :data:`CANCEL_GRACE_S`) until they have stopped.
        Running tasks are stopped by killing their worker process, not by a Ctrl-C inside
        them: an interrupt that lands in the middle of an import leaves a half-imported
        module behind, and Ray would hand that worker the next task. A run the killed task
        had open stays RUNNING until ``MlflowTracker.fail_orphans`` marks it FAILED (called
        by the caller, by a later task on that node, or by the next bench)."""
        refs = list(refs)
        if not refs:
            return
        # Only what has not finished: Ray 2.60's core worker can abort the whole driver
        # process when a force-cancel races with the task's completion (seen once here:
        # "Check failed: it != submissible_tasks_.end() Tried to complete task that was not
        # pending"; ray-project/ray#54798 fixed a sibling of it). This narrows the window.
        _, running = self.ray.wait(refs, num_returns=len(refs), timeout=0)
        if not running:
            return
        for ref in running:
            _quietly(self.ray.cancel, ref, force=True)
        self.ray.wait(running, num_returns=len(running), timeout=CANCEL_GRACE_S)

    def close(self) -> None:
        if self.started_here:
            self.ray.shutdown()


def connect(cfg) -> RayCluster:
    """Connect as ``cfg`` says (see the module docstring); a ValueError naming the fix if
    the cluster cannot be reached or the stores are not shared."""
    ray = require_ray()
    started_here = False
    if not ray.is_initialized():
        started_here = cfg.ray_address is None
        kwargs: dict[str, Any] = {"log_to_driver": True, "configure_logging": False}
        if started_here:
            kwargs["include_dashboard"] = cfg.ray_dashboard
        try:
            ray.init(address=cfg.ray_address, **kwargs)
        except Exception as err:  # Ray raises plain Exceptions too
            if started_here:
                hint = (
                    "; --ray-dashboard needs Ray's dashboard: pip install 'ray[default]'"
                    if cfg.ray_dashboard
                    else ""
                )
                raise ValueError(
                    f"--executor ray: a local Ray instance did not start ({err}){hint}"
                ) from None
            raise ValueError(
                f"--ray-address {cfg.ray_address}: could not join the Ray cluster ({err}); "
                "start it with `ray start --head` (then --ray-address auto on that machine, "
                "or HOST:6379 elsewhere), or leave --ray-address out for a local instance"
            ) from None
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    gpus = cfg.gpus_per_cell
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    cluster = RayCluster(
        ray,
        ray.get_runtime_context().gcs_address,
        nodes,
        gpus,
        cfg.cpus_per_cell,
        cfg.max_retries,
        started_here,
    )
    try:
        _check_fits(cluster, ray.cluster_resources())
        if nodes > 1:
            check_shared_stores(cfg, nodes)
    except ValueError:
        cluster.close()
        raise
    return cluster


def _check_fits(cluster: RayCluster, resources: dict) -> None:
    for name, need in (("CPU", cluster.cpus_per_cell), ("GPU", cluster.gpus_per_cell)):
        if need > resources.get(name, 0):
            flag = f"--{name.lower()}s-per-cell"
            raise ValueError(
                f"{flag} {need:g}: the Ray cluster has {resources.get(name, 0):g} {name}(s) in "
                f"all, so no cell could ever be scheduled; lower {flag} or add nodes"
            )


def check_shared_stores(cfg, nodes: int) -> None:
    """On several nodes, every worker writes to the tracking store (and the optuna storage
    when tuning): a local SQLite file or a server on localhost is this machine's only."""
    from bayeslora.tracking.mlflow_tracker import default_tracking_uri
    from bayeslora.tracking.urls import mask_url

    uri = cfg.tracking_uri or default_tracking_uri(cfg.output_dir)
    where = f"the Ray cluster has {nodes} nodes, and each writes results"
    if _local_only(uri):
        raise ValueError(
            f"--tracking-uri {mask_url(uri)}: {where}, but that store is on this machine only. "
            "Run an MLflow server on one machine and give its URL, reachable from every node "
            "(README, 'Scale out on Ray': `mlflow server --host 127.0.0.1 --port 5000` there, "
            "an SSH tunnel to it on each node, then --tracking-uri http://127.0.0.1:5000)"
        )
    if cfg.tune or cfg.tune_only:
        from bayeslora.tuning.storage import default_storage

        storage = cfg.storage or default_storage(cfg.output_dir)
        if _local_only(storage):
            raise ValueError(
                f"--storage {mask_url(storage)}: {where} and runs trials, but that optuna "
                "storage is on this machine only. Give a database every node can reach "
                "(--storage postgresql://USER@HOST/DB), or a journal file on a disk all "
                "nodes mount (--storage /shared/tune.journal)"
            )


def _local_only(url: str) -> bool:
    """A SQLite file or a path (a journal file excepted: it may be on a shared disk). A
    server URL may name localhost: an SSH tunnel on each node makes that every node's."""
    if "://" not in url:
        return not url.endswith((".log", ".journal"))
    return url.startswith(("sqlite:", "file:"))


class StartedTasks:
    """A Ray actor (``ray.remote(num_cpus=0)(StartedTasks)``) that tasks tell when they
    start, so that the driver can tell running tasks from pending ones. Defined here, in
    a module that imports nothing heavy: its process starts in a fraction of a second."""

    def __init__(self) -> None:
        self._running: dict[str, tuple[int, str]] = {}

    def started(self, key: str, pid: int, host: str) -> None:
        self._running[key] = (pid, host)

    def running(self) -> dict[str, tuple[int, str]]:
        return dict(self._running)


# The base model of this worker process, kept between the tasks it runs: [key, model].
_worker_model: list = []


def cached_model(key: Any) -> Any | None:
    """The base model this worker process loaded for ``key`` (the model settings and the
    GPUs Ray gave the task), or None; a model kept for another key is dropped now, before
    the caller loads the one it needs."""
    if _worker_model and _worker_model[0] == key:
        return _worker_model[1]
    _worker_model.clear()
    return None


def keep_model(key: Any, model: Any) -> None:
    """Keep ``model`` for the next task of this worker process (one model at a time)."""
    _worker_model[:] = [key, model] if model is not None else []


def gpu_ids(ray) -> tuple:
    """The GPUs Ray assigned to the task running now (empty outside a GPU task)."""
    try:
        return tuple(ray.get_gpu_ids())
    except Exception:  # outside a worker
        return ()


def say(text: str) -> None:
    print(f"bayeslora: {text}", file=sys.stderr, flush=True)


def _quietly(fn, *args, **kwargs) -> None:
    try:
        fn(*args, **kwargs)
    except Exception:  # already finished, or its worker already gone
        pass
