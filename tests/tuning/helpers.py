"""Helpers of the tuning tests: the tiny-model arguments, MLflow queries, subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys

# What every tuning run in these tests shares: the tiny random model, a few steps.
TINY = [
    "--model",
    "tiny-random-llama",
    "--steps",
    "3",
    "--limit-train",
    "32",
    "--limit-eval",
    "16",
    "--no-progress",
    "--no-save-adapters",
    "--heartbeat-interval",
    "1",
]


def runs(output_dir, kind: str | None = None) -> list:
    """The MLflow runs of the output directory's store, optionally of one bayeslora.kind."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{output_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("bayeslora")
    query = f"tags.`bayeslora.kind` = '{kind}'" if kind else ""
    return client.search_runs([experiment.experiment_id], query, max_results=1000)


def artifacts(output_dir, run) -> set[str]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{output_dir / 'mlflow.db'}")
    found, folders = set(), [None]
    while folders:
        for entry in client.list_artifacts(run.info.run_id, folders.pop()):
            (folders.append(entry.path) if entry.is_dir else found.add(entry.path))
    return found


def bench_process(args, cwd, script=None) -> subprocess.Popen:
    """``python -m bayeslora.bench ARGS`` (or ``python SCRIPT ARGS``) in a new process."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    command = [sys.executable, *([str(script)] if script else ["-m", "bayeslora.bench"]), *args]
    return subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
