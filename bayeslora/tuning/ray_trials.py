"""The trials of one study as parallel Ray tasks (``--tune --executor ray``).

Each task is what an extra ``--tune-only`` worker is: it loads the study from the shared
optuna storage and runs :func:`~bayeslora.tuning.study.run_trials` until the study has
its ``n_trials`` and none runs anywhere. So the guarantees are the study's own (README
in this folder): the target is met exactly (a trial past it is failed at once, never
trained), pruning is optuna's pruner reading the storage, and a trial whose worker died
is failed by its stale heartbeat and retried with the same parameters, never counted.
Ray adds the spreading: as many tasks as the cluster has cell slots (up to the trials
left), each with the cell's resources, a task whose worker died rerun by Ray
(``--max-retries``), and the base model loaded once per worker process. Why Ray tasks
and not ``ray.tune``: README in this folder, "Several workers on Ray".
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bayeslora.tuning.study import Census


@dataclass
class TrialJob:
    """What every trial task of one study shares."""

    cfg: Any  # the BenchConfig, output_dir absolute
    study_name: str
    sampler_seed: int  # the driver's; task i uses sampler_seed + 1000 * (i + 1)
    train: Any  # TrainSettings of the trials (for the pruner)
    objective: Any  # the Objective, without its tracker and base model (set in the worker)
    tracking_uri: str
    artifact_dir: str
    study_run_id: str  # the trials' runs nest under the driver's study run
    label: str
    objective_names: list[str]


def run_trials_on_ray(cluster, job: TrialJob, study) -> None:
    """Run the study's missing trials on ``cluster``; returns when none is left or running.
    A task's error is raised (the method's tuning fails); Ctrl-C cancels the tasks."""
    census = Census.of(study.get_trials(deepcopy=False))
    left = max(0, job.cfg.n_trials - census.done - census.running) + census.waiting
    if not left and not census.running:
        return
    parallel = max(1, min(cluster.slots(), left))
    print(
        f"tune {job.label}: {left} trial(s) to run as {parallel} parallel Ray task(s)",
        file=sys.stderr,
        flush=True,
    )
    refs = [cluster.submit(_trials_task, job, i) for i in range(parallel)]
    pending = list(refs)
    try:
        while pending:
            ready, pending = cluster.ray.wait(pending, num_returns=1)
            for ref in ready:
                cluster.result(ref)
    finally:
        cluster.cancel(pending)


def _trials_task(job: TrialJob, index: int) -> None:
    """One worker of the study, in a Ray worker process."""
    import optuna

    from bayeslora.cluster import gpu_ids, require_ray
    from bayeslora.threads import worker_threads
    from bayeslora.tracking.mlflow_tracker import MlflowTracker
    from bayeslora.tuning.progress import TrialProgress
    from bayeslora.tuning.storage import open_storage, quiet
    from bayeslora.tuning.study import run_tuning_trials
    from bayeslora.tuning.tuner import make_pruner

    ray = require_ray()
    cfg = job.cfg
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with worker_threads(cfg.cpus_per_cell):
        storage = open_storage(cfg.storage, cfg.output_dir, cfg.heartbeat_interval)
        sampler = quiet(
            optuna.samplers.TPESampler,
            seed=job.sampler_seed + 1000 * (index + 1),
            constant_liar=True,
        )
        pruner = make_pruner(cfg.pruner, job.train, multi_objective=len(job.objective_names) > 1)
        study = optuna.load_study(
            study_name=job.study_name, storage=storage, sampler=sampler, pruner=pruner
        )
        tracker = MlflowTracker(
            job.tracking_uri,
            cfg.experiment,
            artifact_dir=job.artifact_dir,
            parent_run_id=job.study_run_id,
        )
        tracker.fail_orphans()  # what a killed trial task on this node left RUNNING
        model_key = (repr(cfg.model_settings()), gpu_ids(ray))
        objective = dataclasses.replace(
            job.objective,
            tracker=tracker,
            base_model=functools.partial(_base_model, cfg, model_key),
        )
        progress = TrialProgress(job.label, cfg.n_trials, job.objective_names)
        run_tuning_trials(study, objective, cfg.n_trials, progress)


def _base_model(cfg, key):
    """The base model, loaded on the first trial that trains and kept in the worker."""
    from bayeslora.cluster import cached_model, keep_model
    from bayeslora.models.loading import check_loaded_as, load_causal_lm, loaded_as

    model = cached_model(key)
    if model is None:
        settings = cfg.model_settings()
        model = load_causal_lm(settings)
        check_loaded_as(settings, loaded_as(model))
        keep_model(key, model)
    return model


def trial_job(ctx, cfg, **fields) -> TrialJob:
    """A TrialJob for the driver's current (study) run, with paths made absolute."""
    cfg = dataclasses.replace(cfg, output_dir=str(Path(cfg.output_dir).resolve()))
    if cfg.storage and "://" not in cfg.storage:  # a journal file
        cfg = dataclasses.replace(cfg, storage=str(Path(cfg.storage).resolve()))
    return TrialJob(
        cfg=cfg,
        tracking_uri=ctx.tracker.tracking_uri,
        artifact_dir=str(Path(cfg.output_dir) / "mlartifacts"),
        study_run_id=ctx.tracker.mlflow.active_run().info.run_id,
        **fields,
    )
