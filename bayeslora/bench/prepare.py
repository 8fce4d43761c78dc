"""Everything a bench checks and reads before it opens a tracking store or loads a model.

:func:`prepare_bench` resolves the methods and their hyperparameters, checks the servers,
files and drivers it will need, loads the tokenizer, checks the LoRA targets against the
model's module names, and reads and tokenizes every task. Whatever is wrong with the input
fails here, within seconds, as a ValueError (or a subclass) naming the problem: the CLI
turns those into exit code 2. Nothing here writes a file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from bayeslora.bench.config import BenchConfig
from bayeslora.bench.plan import PreparedTask, prepare_task
from bayeslora.methods.registry import get_method
from bayeslora.models.loading import check_lora_targets, load_tokenizer


@dataclass
class PreparedBench:
    """A checked config with what it reads before anything is written."""

    cfg: BenchConfig
    method_classes: dict[str, type]
    tokenizer: object
    tasks: dict[str, PreparedTask]
    cluster: object | None = None  # the Ray cluster under --executor ray (bayeslora/cluster.py)


def prepare_bench(cfg: BenchConfig) -> PreparedBench:
    method_classes = check_methods(cfg)
    preflight(cfg)
    tokenizer = _tokenizer(cfg)
    check_lora_targets(cfg.lora_settings().target_modules, cfg.model_settings())
    tasks = {name: prepare_task(cfg, tokenizer, name) for name in cfg.tasks}
    others = {
        name: tasks.get(name) or prepare_task(cfg, tokenizer, name) for name in cfg.eval_tasks
    }
    for task in tasks.values():  # each task's adapters are scored on the others
        task.ood = {name: other for name, other in others.items() if name != task.name}
    cluster = None
    if cfg.executor == "ray":  # joined (or started) last: every cheaper check passed
        from bayeslora.cluster import connect

        cluster = connect(cfg)
    return PreparedBench(cfg, method_classes, tokenizer, tasks, cluster)


def check_methods(cfg: BenchConfig) -> dict[str, type]:
    """Resolve every method, its hyperparameters and its prediction modes before anything
    slow happens."""
    method_classes = {name: get_method(name) for name in cfg.methods}
    lora = cfg.lora_settings()
    for name, cls in method_classes.items():
        for task in cfg.tasks:  # with each task's defaults under the overrides
            cls(cls.make_config(task, cfg.hparams.get(name)), train=cfg.train_settings(0)).modes()
        cls.check_lora(lora)
    if cfg.quantization != "none":
        for name, cls in method_classes.items():
            if not cls.quantized_base:
                raise ValueError(
                    f"method '{name}' does not work on a base quantized with --quantization "
                    f"{cfg.quantization}: {cls.quantized_base_reason}; use --quantization none"
                )
    unknown = set(cfg.hparams) - set(method_classes)
    if unknown:
        raise ValueError(
            f"hyperparameters given for method(s) {sorted(unknown)} that are not in --methods {cfg.methods}"
        )
    return method_classes


def preflight(cfg: BenchConfig) -> None:
    """What can be checked in seconds and would otherwise fail after loading or training:
    the tracking server and the optuna storage answer and have their drivers, the jsonl
    files parse. Raises ValueError (or a subclass) naming the problem."""
    from bayeslora.tracking.urls import check_reachable

    if cfg.executor == "ray":
        from bayeslora.cluster import require_ray

        require_ray()  # without the extra: fail now, naming it
    uri = cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        check_reachable(uri, "--tracking-uri")
        if "://" in uri and not uri.startswith(("http", "file", "sqlite", "databricks")):
            from bayeslora.tuning.storage import check_storage

            check_storage(uri, "--tracking-uri")  # an SQLAlchemy URL: its driver must be there
    if cfg.tune or cfg.tune_only:
        from bayeslora.tuning.storage import check_storage

        check_storage(cfg.storage)
    if cfg.source == "jsonl":
        from bayeslora.tasks.jsonl import read_jsonl

        for path in (cfg.jsonl_train, cfg.jsonl_eval):
            if path:
                read_jsonl(path)


def _tokenizer(cfg: BenchConfig):
    """The model's tokenizer; a model that cannot be found is a ValueError saying where
    it was looked for (the hub client's own errors do not)."""
    try:
        return load_tokenizer(cfg.model_settings())
    except (OSError, ValueError) as err:  # HFValidationError is a ValueError, the rest OSError
        raise ValueError(
            f"--model {cfg.model!r} could not be loaded: not a packaged model, not a local "
            f"directory, and not found on the Hugging Face hub or in its cache ({err}); "
            "check the name, or give a local directory"
        ) from None
