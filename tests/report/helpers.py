"""Small MLflow stores for report tests: result runs written as the bench writes them
(tags, metrics, ``predictions.json``), with synthetic probabilities instead of training."""

from __future__ import annotations

import io

import numpy as np
import torch

from bayeslora.metrics import compute_metrics
from bayeslora.tracking.mlflow_tracker import MlflowTracker

N, K = 40, 4
LABELS = torch.arange(N) % K


def probs_for(seed: int, sharpness: float, n: int = N) -> torch.Tensor:
    """Predictions that are right more often as ``sharpness`` grows (seeded)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, K, generator=g)
    logits[torch.arange(n), LABELS[:n]] += sharpness
    return torch.softmax(logits, dim=1)


def store(tmp_path, experiment: str = "bayeslora") -> tuple[str, MlflowTracker]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return uri, MlflowTracker(uri, experiment, artifact_dir=tmp_path / "mlartifacts")


def write_result(
    tracker: MlflowTracker,
    *,
    task: str,
    method: str,
    mode: str,
    seed: int,
    probs: torch.Tensor,
    cell: str | None = None,
    kind: str = "result",
    eval_task: str | None = None,
    logged: dict | None = None,
    arrays: dict[str, dict[str, np.ndarray]] | None = None,
    model: str = "tiny-random-llama",
    predictions: bool = True,
) -> str:
    """One FINISHED nested run (inside the tracker's active parent run); its run id.
    ``logged``: metrics logged instead of, or beside, those of the predictions."""
    labels = LABELS[: probs.shape[0]]
    tags = {
        "bayeslora.kind": kind,
        "bayeslora.method": method,
        "bayeslora.mode": mode,
        "bayeslora.task": task,
        "bayeslora.seed": str(seed),
        "bayeslora.cell": cell or f"{method}-{task}-{seed}",
    }
    if eval_task:
        tags["bayeslora.eval_task"] = eval_task
    with tracker.run(
        f"{mode}/{task}/seed{seed}", nested=True, tags=tags, params={"config": {"model": model}}
    ) as run:
        tracker.log_metrics({**compute_metrics(probs, labels), **(logged or {})})
        if predictions:
            tracker.log_dict(
                {
                    "ids": [f"q{i}" for i in range(len(labels))],
                    "labels": labels.tolist(),
                    "dtype": "float32",
                    "probs": probs.tolist(),
                },
                "predictions.json",
            )
        for name, values in (arrays or {}).items():
            buffer = io.BytesIO()
            np.savez(buffer, **values)
            tracker.log_directory(
                lambda d, b=buffer, n=name: open(f"{d}/{n}", "wb").write(b.getvalue()), None
            )
    return run.info.run_id


def bench_parent(tracker: MlflowTracker, name: str = "bench"):
    return tracker.run(name, tags={"bayeslora.kind": "bench"})
