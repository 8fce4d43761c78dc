"""``--explain RUN_ID``: what produced one stored result, read back from the tracking store.

Everything printed is what the run logged: its status and reason, the cell (key, method,
mode, task, seed), the metrics, and what a reproduction needs: library versions, the
harness (version, sources digest, git commit), device, dtype, attention and quantization as
read from the loaded model, the threads, the model's weights (hash or revision), the data
(digests of the exact train and eval examples), the prompt protocol and the settings.
"""

from __future__ import annotations

from pathlib import Path

from bayeslora.tracking.schema import ERROR_TAG, NOTES_TAG, THREADS_TAG

# (heading, params): a name ending in "." takes every param under it; in the order printed
SECTIONS = (
    ("cell", ("cell.key", "method", "mode", "cell.task", "seed")),
    ("harness", ("harness.",)),
    ("libraries", ("versions.", "cell.code.libraries.")),
    ("model as loaded", ("model_used.",)),
    ("threads", ("threads.",)),
    ("model weights", ("cell.model.",)),
    ("data", ("cell.data.", "task.train_used", "task.eval_used", "train_size", "val_size")),
    ("protocol", ("cell.protocol.",)),
    ("hyperparameters", ("hparams.", "lora.", "train.")),
)


def explain(run_id: str, tracking_uri: str) -> str:
    """A readable account of the run ``run_id`` in the store at ``tracking_uri``; a
    ValueError when the store or the run is not there."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from bayeslora.tracking.urls import mask_url

    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[10:]).is_file():
        raise ValueError(
            f"no MLflow store at {tracking_uri}; give --output-dir or --tracking-uri of the "
            "run to explain"
        )
    try:
        run = MlflowClient(tracking_uri).get_run(run_id)
    except MlflowException as err:
        raise ValueError(
            f"run {run_id!r} is not in the MLflow store {mask_url(tracking_uri)} ({err.message})"
        ) from None
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    lines = [
        f"run {run.info.run_id} ({run.info.run_name}): {run.info.status}",
    ]
    for tag, label in (
        (ERROR_TAG, "error"),
        (NOTES_TAG, "notes"),
        (THREADS_TAG, "threads during the run"),
    ):
        if tag in tags:
            lines.append(f"  {label}: {tags[tag]}")
    scores = {k: v for k, v in sorted(metrics.items()) if not k.startswith(("val_", "lr"))}
    if scores:
        lines.append("metrics")
        lines += [f"  {k:<32} {v:.6g}" for k, v in scores.items()]
    for heading, prefixes in SECTIONS:
        chosen = {k: v for k, v in sorted(params.items()) if _wanted(k, prefixes)}
        if chosen:
            lines.append(heading)
            lines += [f"  {k:<32} {v}" for k, v in chosen.items()]
    return "\n".join(lines)


def _wanted(name: str, chosen: tuple[str, ...]) -> bool:
    return any(name.startswith(c) if c.endswith(".") else name == c for c in chosen)
