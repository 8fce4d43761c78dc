"""Run a benchmark: every (task, method, seed), every prediction mode, logged to MLflow.

Read top to bottom: load the base model once; per task load and tokenize the data;
per method and seed attach fresh LoRA adapters, fit, predict in each mode, score, log.
A finished result is written to ``results.jsonl`` and MLflow at once, so a failure or
Ctrl-C later in the run loses nothing that had finished.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from bayeslora.bench.comparison import compare_to_baseline, format_comparisons
from bayeslora.bench.config import BenchConfig
from bayeslora.bench.seed_summary import (
    differences_over_seeds,
    format_seed_summary,
    metrics_over_seeds,
)
from bayeslora.methods.registry import get_method
from bayeslora.metrics import calibration_metrics
from bayeslora.models.classifier import LoraSettings, lora_classifier
from bayeslora.models.loading import load_causal_lm, load_tokenizer
from bayeslora.tasks import answer_token_ids, load_task
from bayeslora.tasks.encoding import TokenizedDataset
from bayeslora.tasks.holdout import split_holdout
from bayeslora.tracking.mlflow_tracker import MlflowTracker, default_tracking_uri

LIBRARIES = (
    "bayeslora",
    "torch",
    "transformers",
    "peft",
    "torchmetrics",
    "mlflow",
    "optuna",
    "bitsandbytes",
    "laplace-torch",
)


@dataclass
class ResultRow:
    method: str  # the prediction mode, e.g. "ivon@mean"
    task: str
    seed: int
    accuracy: float
    ece: float
    nll: float
    brier: float
    mce: float
    train_time_s: float
    eval_time_s: float
    mlflow_run_id: str


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@dataclass
class PreparedTask:
    """One task's data, tokenized once and shared by every method and seed."""

    name: str
    train_examples: list
    eval_data: TokenizedDataset
    answer_ids: list[int]
    info: dict


@dataclass
class BenchContext:
    """What stays fixed across one bench invocation."""

    cfg: BenchConfig
    tracker: MlflowTracker
    run_dir: Path
    tokenizer: object
    base_model: object
    common_params: dict


def prepare_task(cfg: BenchConfig, tokenizer, task_name: str) -> PreparedTask:
    splits = load_task(
        task_name, source=cfg.source, jsonl_train=cfg.jsonl_train, jsonl_eval=cfg.jsonl_eval
    )
    answer_ids = answer_token_ids(tokenizer, splits.task.answer_labels)
    train_examples = splits.train[: cfg.limit_train]
    eval_data = TokenizedDataset(
        splits.eval[: cfg.limit_eval], tokenizer, cfg.max_length, cfg.truncation_side
    )
    info = {
        **splits.info,
        "train_used": len(train_examples),
        "eval_used": len(eval_data),
        "answer_token_ids": answer_ids,
        "max_length": cfg.max_length,
        "truncation_side": cfg.truncation_side,
        "eval_truncated": eval_data.num_truncated,
    }
    return PreparedTask(task_name, train_examples, eval_data, answer_ids, info)


def check_methods(cfg: BenchConfig) -> dict[str, type]:
    """Resolve every method and its hyperparameters before anything slow happens."""
    method_classes = {name: get_method(name) for name in cfg.methods}
    for name, cls in method_classes.items():
        cls.make_config(None, cfg.hparams.get(name))
    unknown = set(cfg.hparams) - set(method_classes)
    if unknown:
        raise ValueError(
            f"hyperparameters given for method(s) {sorted(unknown)} that are not in --methods {cfg.methods}"
        )
    return method_classes


def run_bench(cfg: BenchConfig, tune=None) -> tuple[list[ResultRow], list[str]]:
    """Returns the finished rows and a description of each run that failed.

    ``tune(ctx, task, method_cls) -> (hparams, lora_settings)``, if given, is called once
    per (method, task) before the seeds run with what it returns (the Optuna tuner).
    """
    method_classes = check_methods(cfg)
    output_dir = Path(cfg.output_dir)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_dir = output_dir / f"bench-{stamp}"
    if run_dir.exists():  # another worker started in the same second
        run_dir = output_dir / f"bench-{stamp}-{os.getpid()}"
    run_dir.mkdir(parents=True, exist_ok=True)
    tracker = MlflowTracker(
        cfg.tracking_uri or default_tracking_uri(output_dir),
        cfg.experiment,
        artifact_dir=output_dir / "mlartifacts",
    )
    print(
        f"bayeslora: preset {cfg.preset}, {cfg.steps} steps; results in {run_dir}, "
        f"MLflow store {tracker.tracking_uri}",
        file=sys.stderr,
    )

    model_settings = cfg.model_settings()
    tokenizer = load_tokenizer(model_settings)
    ctx = BenchContext(
        cfg,
        tracker,
        run_dir,
        tokenizer,
        load_causal_lm(model_settings),
        {"config": cfg.to_dict(), "versions": library_versions()},
    )
    rows: list[ResultRow] = []
    failures: list[str] = []

    with tracker.run(f"bench-{stamp}", params=ctx.common_params, tags={"bayeslora.kind": "bench"}):
        for task_name in cfg.tasks:
            task = prepare_task(cfg, tokenizer, task_name)
            task_results: list[tuple[ResultRow, torch.Tensor]] = []
            for method_name, method_cls in method_classes.items():
                hparams, lora = cfg.hparams.get(method_name, {}), cfg.lora_settings()
                for seed in (["tune"] if tune else []) + list(cfg.seeds):
                    label = f"{method_name}/{task_name}/" + (
                        "tuning" if seed == "tune" else f"seed{seed}"
                    )
                    try:
                        if seed == "tune":
                            hparams, lora = tune(ctx, task, method_cls)
                        else:
                            results = _run_one(ctx, task, method_cls, seed, hparams, lora)
                            task_results += results
                            rows += [row for row, _ in results]
                    except KeyboardInterrupt:
                        print(
                            f"\nbayeslora: interrupted during {label}; {len(rows)} finished result(s) "
                            f"are in {run_dir / 'results.jsonl'} and MLflow.",
                            file=sys.stderr,
                        )
                        raise
                    except Exception as err:  # one broken method must not cost the others
                        failures.append(f"{label}: {type(err).__name__}: {err}")
                        traceback.print_exc()
                        tracker.record_failure(
                            label,
                            err,
                            params={**ctx.common_params, "task": task.info},
                            tags={"bayeslora.kind": "result"},
                        )
                        if seed == "tune":
                            break  # no tuned parameters: the seeds of this method would mean nothing
            comparisons = compare_to_baseline(task_results, task.eval_data.labels)
            if comparisons:
                text = format_comparisons(comparisons)
                _publish(tracker, run_dir, "comparison", task_name, text, comparisons)
            if len(cfg.seeds) > 1 and task_results:
                # mean ± std over seeds of each metric and difference: what training noise leaves
                summary = {
                    "metrics": metrics_over_seeds(row for row, _ in task_results),
                    "differences": differences_over_seeds(comparisons),
                }
                text = format_seed_summary(summary["metrics"], summary["differences"])
                _publish(tracker, run_dir, "seeds", task_name, text, summary)
        tracker.log_text(format_table(rows), "results.txt")
        tracker.log_dict({"rows": [asdict(r) for r in rows], "failures": failures}, "results.json")
    (run_dir / "results.txt").write_text(format_table(rows) + "\n")
    return rows, failures


def _publish(tracker, run_dir: Path, kind: str, task_name: str, text: str, payload) -> None:
    """A per-task report: printed, appended to ``<kind>.txt``, logged as ``<kind>_<task>.json``."""
    print(text, file=sys.stderr)
    tracker.log_dict(payload, f"{kind}_{task_name}.json")
    with open(run_dir / f"{kind}.txt", "a") as f:
        f.write(text + "\n")


def _run_one(
    ctx: BenchContext, task: PreparedTask, method_cls, seed: int, hparams: dict, lora: LoraSettings
) -> list[tuple[ResultRow, torch.Tensor]]:
    """Fit one method with one seed, then score and log each of its prediction modes."""
    cfg, tracker = ctx.cfg, ctx.tracker
    method_config = method_cls.make_config(task.name, hparams)
    train_settings = cfg.train_settings(seed)
    train_examples, val_data = task.train_examples, None
    if method_cls.needs_validation or cfg.eval_every:
        train_examples, val_examples = split_holdout(train_examples, cfg.val_fraction, seed)
        val_data = TokenizedDataset(
            val_examples, ctx.tokenizer, cfg.max_length, cfg.truncation_side
        )
    train_data = TokenizedDataset(
        train_examples, ctx.tokenizer, cfg.max_length, cfg.truncation_side
    )

    logged: list[tuple[int, dict[str, float]]] = []
    with lora_classifier(ctx.base_model, task.answer_ids, lora, seed=seed) as classifier:
        method = method_cls(
            method_config, train=train_settings, on_log=lambda step, m: logged.append((step, m))
        )
        start = time.perf_counter()
        method.fit(classifier, train_data, val_data)
        train_time = time.perf_counter() - start

        results = []
        for mode in method.prediction_modes():
            start = time.perf_counter()
            probs = method.predict_proba(task.eval_data, mode)
            eval_time = time.perf_counter() - start
            metrics = calibration_metrics(probs, task.eval_data.labels)
            params = {
                **ctx.common_params,
                "method": method_cls.name,
                "mode": mode,
                "task": task.info,
                "seed": seed,
                "hparams": method_config.to_dict(),
                "lora": asdict(lora),
                "train": asdict(train_settings),
                "val_size": len(val_data) if val_data is not None else 0,
                "train_size": len(train_data),
            }
            tags = {
                "bayeslora.kind": "result",
                "bayeslora.method": method_cls.name,
                "bayeslora.mode": mode,
                "bayeslora.task": task.name,
                "bayeslora.seed": str(seed),
            }
            with tracker.run(
                f"{mode}/{task.name}/seed{seed}", nested=True, params=params, tags=tags
            ) as run:
                for step, values in logged:
                    tracker.log_metrics(values, step=step)
                tracker.log_metrics(
                    {
                        **metrics,
                        "train_time_s": train_time,
                        "eval_time_s": eval_time,
                        **method.extra_metrics(),
                    }
                )
                tracker.log_dict(params, "config.json")
                tracker.log_dict(_predictions(task.eval_data, probs), "predictions.json")
                if cfg.save_adapters:
                    tracker.log_directory(classifier.save_adapter, "adapter")
                row = ResultRow(
                    mode,
                    task.name,
                    seed,
                    metrics["accuracy"],
                    metrics["ece"],
                    metrics["nll"],
                    metrics["brier"],
                    metrics["mce"],
                    train_time,
                    eval_time,
                    run.info.run_id,
                )
            with open(ctx.run_dir / "results.jsonl", "a") as f:
                f.write(json.dumps(asdict(row)) + "\n")
            print(format_table([row], header=False), file=sys.stderr)
            results.append((row, probs))
    return results


def _predictions(data, probs) -> dict:
    return {
        "ids": [e.id for e in data.examples],
        "labels": data.labels.tolist(),
        "probs": probs.tolist(),
    }


def format_table(rows: list[ResultRow], header: bool = True) -> str:
    lines = []
    if header:
        lines.append(
            f"{'method':<18} {'task':<14} {'seed':>4} {'acc':>7} {'ece':>7} {'nll':>7} {'brier':>7} "
            f"{'train_s':>8} {'eval_s':>7}"
        )
    for r in rows:
        lines.append(
            f"{r.method:<18} {r.task:<14} {r.seed:>4} {r.accuracy:>7.4f} {r.ece:>7.4f} {r.nll:>7.4f} "
            f"{r.brier:>7.4f} {r.train_time_s:>8.1f} {r.eval_time_s:>7.1f}"
        )
    return "\n".join(lines)
