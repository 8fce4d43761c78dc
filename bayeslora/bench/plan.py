"""From a BenchConfig to cells: the tasks' data, and one Cell per (task, method, seed).

Everything a cell's key needs is resolved here, before any model is loaded: the method's
hyperparameters (defaults, task defaults, presets, the config file, flags, tuned values),
LoRA and training settings, the model's identity, and digests of the exact examples.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bayeslora.bench.config import BenchConfig
from bayeslora.cell import Cell, CellData
from bayeslora.cell.identity import code_identity, examples_digest
from bayeslora.models.classifier import LoraSettings
from bayeslora.tasks import answer_token_ids, load_task
from bayeslora.tasks.encoding import encode
from bayeslora.tasks.holdout import split_holdout
from bayeslora.tasks.scoring import Scoring


@dataclass
class PreparedTask:
    """One task's data, tokenized once and shared by every method and seed."""

    name: str
    train_examples: list
    eval_data: object  # a dataset of tasks/encoding.py
    answer_ids: list[int] | None  # letters scoring's answer tokens; None for choices
    info: dict  # logged as the task.* params
    identity: dict  # the data and protocol parts of its cells' keys
    # --eval-tasks other than this one: its adapters are scored on their eval data too
    ood: dict[str, PreparedTask] = field(default_factory=dict)


def prepare_task(cfg: BenchConfig, tokenizer, task_name: str) -> PreparedTask:
    scoring = Scoring(cfg.scoring)
    splits = load_task(
        task_name,
        source=cfg.source,
        jsonl_train=cfg.jsonl_train,
        jsonl_eval=cfg.jsonl_eval,
        scoring=scoring,
    )
    letters = scoring is Scoring.LETTERS
    answer_ids = answer_token_ids(tokenizer, splits.task.answer_labels) if letters else None
    train_examples = splits.train[: cfg.limit_train]
    eval_data = encode(splits.eval[: cfg.limit_eval], tokenizer, cfg.encoding())
    # what decides how a question becomes K logits, beyond the examples themselves
    scoring_identity = (
        {"answer_token_ids": answer_ids} if letters else {"length_norm": cfg.length_norm}
    )
    info = {
        **splits.info,
        "train_used": len(train_examples),
        "eval_used": len(eval_data),
        **scoring_identity,
        "max_length": cfg.max_length,
        "truncation_side": cfg.truncation_side,
        "eval_truncated": eval_data.num_truncated,
    }
    identity = {
        "data": {
            "task": task_name,
            "source": cfg.source,
            "protocol": splits.info.get("protocol"),
            "train_examples": examples_digest(train_examples),
            "eval_examples": examples_digest(eval_data.examples),
        },
        "protocol": {
            "scoring": scoring.value,
            "template": splits.info["template"],
            **scoring_identity,
            "max_length": cfg.max_length,
            "truncation_side": cfg.truncation_side,
            "bos_added": eval_data.bos_added,
        },
    }
    return PreparedTask(task_name, train_examples, eval_data, answer_ids, info, identity)


def uses_holdout(cfg: BenchConfig, method_cls) -> bool:
    """Whether a method's cells train on the training data minus --val-fraction."""
    return method_cls.needs_validation or bool(cfg.eval_every)


def plan_cells(
    cfg: BenchConfig,
    task: PreparedTask,
    method_name: str,
    method_cls,
    model_identity: dict,
    hparams: dict,
    lora: LoraSettings,
) -> list[Cell]:
    """The cells of one (task, method), one per seed, with their keys' full context."""
    context = {
        "model": model_identity,
        **task.identity,
        "holdout": cfg.val_fraction if uses_holdout(cfg, method_cls) else None,
        "code": code_identity(method_name, method_cls, quantized=cfg.quantization != "none"),
    }
    config = method_cls.make_config(task.name, hparams)
    notes = tuple(n for n in [method_cls.defaults_notice(task.name, hparams)] if n)
    outputs = {
        "eval_tasks": {name: other.identity for name, other in task.ood.items()},
        "tau_grid": tuple(sorted(cfg.tau_grid)) if method_cls.scales_posterior else (),
    }
    return [
        Cell(
            task.name,
            method_name,
            seed,
            config,
            lora,
            cfg.train_settings(seed),
            context,
            notes,
            **outputs,
        )
        for seed in cfg.seeds
    ]


def cell_data(cfg: BenchConfig, tokenizer, task: PreparedTask, cell: Cell) -> CellData:
    """The cell's training data (minus a seeded holdout when it uses one) and the eval split."""
    train_examples, val_data = task.train_examples, None
    if uses_holdout(cfg, cell.method_cls):
        train_examples, val_examples = split_holdout(train_examples, cfg.val_fraction, cell.seed)
        val_data = encode(val_examples, tokenizer, cfg.encoding())
    train_data = encode(train_examples, tokenizer, cfg.encoding())
    ood = {name: other.eval_data for name, other in task.ood.items()}
    return CellData(train_data, task.eval_data, task.answer_ids, val_data, ood)
