"""The jsonl source: your own multiple-choice questions.

File format: UTF-8, one JSON object per line; blank lines (empty or only whitespace) are
skipped, and line numbers in errors count them::

    {"question": "Which gas do plants take in?", "choices": ["oxygen", "carbon dioxide"], "answer": 1}
    {"id": "q2", "context": "A passage ...", "question": "...", "choices": ["...", "..."], "answer": "B"}

  ``question``  string, required.
  ``choices``   list of at least 2 strings, required. Every record of a run (train and
                eval file) needs the same number K, because the classifier reads K
                answer tokens.
  ``answer``    required: the 0-based index of the right choice (an integer), or its
                letter ("A" for the first choice, "B", ...). Not the choice text:
                a text could match two choices, or look like a letter.
  ``context``   optional string put in front of the question (e.g. a passage).
  ``id``        optional string or integer, unique within the file; default
                ``"<file name>:<line number>"``. A repeated id is an error naming both lines.
  Other keys are ignored.

The prompt is the ``laplace_lora_mc`` template with choices lettered A, B, ... by
position; the answer labels are the K letters. (Pass a ``TaskSpec`` to ``load_task``
to use another template or labels.)

Given only one file, it is split with a seeded permutation (``seed``, default 0):
``eval_fraction`` of it (at least one question) for eval, the rest for training.
Any record that breaks the format raises :class:`JsonlFormatError` naming the file,
the line number and the problem.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bayeslora.tasks.prompts import LETTERS, letters
from bayeslora.tasks.records import Item, ItemSplits
from bayeslora.tasks.spec import TaskSpec
from bayeslora.tasks.splits import seeded_split

JSONL_TEMPLATE = "laplace_lora_mc"


class JsonlFormatError(ValueError):
    """A jsonl record that breaks the documented format."""

    def __init__(self, path: Path, line: int | None, problem: str):
        where = f"{path}, line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path, self.line, self.problem = path, line, problem


def _parse_answer(answer: Any, num_choices: int) -> int:
    # bool is a subclass of int in Python; `true` is not a valid index.
    if isinstance(answer, int) and not isinstance(answer, bool):
        index = answer
    elif isinstance(answer, str) and len(answer) == 1 and answer in LETTERS:
        index = LETTERS.index(answer)
    else:
        raise ValueError(
            f"'answer' must be a choice index (integer) or letter ('A', 'B', ...), got {answer!r}"
        )
    if not 0 <= index < num_choices:
        raise ValueError(f"'answer' {answer!r} is out of range for {num_choices} choices")
    return index


def _parse_record(record: Any, default_id: str) -> Item:
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    for key in ("question", "choices", "answer"):
        if key not in record:
            raise ValueError(f"missing field '{key}'")
    question, choices = record["question"], record["choices"]
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"'question' must be a non-empty string, got {question!r}")
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        raise ValueError(f"'choices' must be a list of strings, got {choices!r}")
    if len(choices) < 2:
        raise ValueError(f"'choices' needs at least 2 entries, got {len(choices)}")
    if len(choices) > len(LETTERS):
        raise ValueError(f"'choices' has {len(choices)} entries; at most {len(LETTERS)} letters")
    context = record.get("context")
    if context is not None and not isinstance(context, str):
        raise ValueError(f"'context' must be a string, got {type(context).__name__}")
    record_id = record.get("id", default_id)
    if isinstance(record_id, bool) or not isinstance(record_id, str | int):
        raise ValueError(f"'id' must be a string or an integer, got {record_id!r}")
    label = _parse_answer(record["answer"], len(choices))
    return Item(str(record_id), question, tuple(choices), label, context)


def read_jsonl(path: str | Path, num_choices: int | None = None, *, why: str = "") -> list[Item]:
    """Read and check one file.

    ``num_choices`` (if given) is the K every record must have, and ``why`` says where
    that K comes from (for the error message); otherwise the first record sets K.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"jsonl file not found: {path}")
    items: list[Item] = []
    first_line: dict[str, int] = {}  # id -> the line that used it first
    with path.open("rb") as lines:  # bytes: a decoding error can then name its line
        for number, raw in enumerate(lines, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise JsonlFormatError(
                    path,
                    number,
                    f"not UTF-8 (byte {raw[err.start]:#04x} at column {err.start + 1}); "
                    "save the file as UTF-8",
                ) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise JsonlFormatError(path, number, f"invalid JSON ({err.msg})") from None
            except RecursionError:  # json's parser recurses once per nesting level
                raise JsonlFormatError(path, number, "JSON nested too deeply") from None
            try:
                item = _parse_record(record, default_id=f"{path.name}:{number}")
            except ValueError as err:
                raise JsonlFormatError(path, number, str(err)) from None
            if num_choices is None:
                num_choices, why = len(item.choices), f"line {number} has"
            elif len(item.choices) != num_choices:
                raise JsonlFormatError(
                    path,
                    number,
                    f"{len(item.choices)} choices, but {why} {num_choices}; all records need "
                    "the same number (the classifier reads one answer token per choice)",
                )
            if item.id in first_line:
                raise JsonlFormatError(
                    path,
                    number,
                    f"id {item.id!r} was already used on line {first_line[item.id]}; ids must "
                    "be unique (results are matched to questions by id)",
                )
            first_line[item.id] = number
            items.append(item)
    if not items:
        raise JsonlFormatError(path, None, "the file has no records (only blank lines or empty)")
    return items


def load_jsonl(
    task: str | TaskSpec,
    train_path: str | Path | None,
    eval_path: str | Path | None,
    *,
    seed: int = 0,
    eval_fraction: float = 0.2,
) -> tuple[TaskSpec, ItemSplits]:
    """Read the user's files; return the task (built from the files if ``task`` is a name) and items."""
    if train_path is None and eval_path is None:
        raise ValueError("source='jsonl' needs jsonl_train and/or jsonl_eval")
    first_path = train_path or eval_path
    if isinstance(task, TaskSpec):
        first = read_jsonl(first_path, task.num_choices, why=f"task {task.name!r} has")
    else:
        first = read_jsonl(first_path)
    k = len(first[0].choices)
    info: dict[str, str | int | float] = {"source": "jsonl"}
    if train_path is not None and eval_path is not None:
        train = first
        eval_items = read_jsonl(eval_path, k, why=f"the records of {train_path} have")
        info |= {
            "train_split": str(train_path),
            "eval_split": str(eval_path),
            "split_seed": "none",
            "protocol": "jsonl: train on the train file, report on the eval file",
        }
    else:
        if not 0 < eval_fraction < 1:
            raise ValueError(f"eval_fraction must be between 0 and 1, got {eval_fraction}")
        if len(first) < 2:
            raise ValueError(f"{first_path} has one record; cannot split it")
        eval_size = min(len(first) - 1, max(1, round(eval_fraction * len(first))))
        train_idx, eval_idx = seeded_split(len(first), seed=seed, eval_size=eval_size)
        train, eval_items = [first[i] for i in train_idx], [first[i] for i in eval_idx]
        whole = str(first_path)
        info |= {
            "train_split": f"{whole}[seeded split: train part]",
            "eval_split": f"{whole}[seeded split: eval part]",
            "split_seed": seed,
            "protocol": f"jsonl: seeded split (seed {seed}) of one file, {eval_size} for eval",
        }
    if isinstance(task, str):
        task = TaskSpec(
            name=task,
            description=f"user jsonl task ({k} choices)",
            answer_labels=letters(k),
            template=JSONL_TEMPLATE,
        )
    return task, ItemSplits(train, eval_items, info)
