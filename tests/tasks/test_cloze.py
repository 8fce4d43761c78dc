"""Cloze templates (choices scoring) and the examples load_task renders with them."""

import pytest

from bayeslora.tasks import UnknownNameError, load_task
from bayeslora.tasks.prompts import CLOZE_TEMPLATES, render_cloze
from bayeslora.tasks.registry import BOOLQ_CLOZE_ANSWERS, TASKS


def test_question_template_is_lm_evaluation_harness_arc():
    pairs = render_cloze("cloze_question", " Which is a gas? ", ["oxygen", " iron "])
    assert pairs == (
        ("Question: Which is a gas?\nAnswer:", " oxygen"),
        ("Question: Which is a gas?\nAnswer:", " iron"),
    )


def test_context_goes_in_front():
    (pair, _) = render_cloze("cloze_question", "Q?", ["a", "b"], "A passage.")
    assert pair == ("A passage.\nQuestion: Q?\nAnswer:", " a")


def test_winogrande_partial_scoring_puts_the_option_in_the_blank():
    pairs = render_cloze(
        "cloze_winogrande",
        "The trophy did not fit in the case because _ was too big.",
        ["the trophy", "the case"],
    )
    assert pairs == (
        ("The trophy did not fit in the case because the trophy", " was too big."),
        ("The trophy did not fit in the case because the case", " was too big."),
    )


def test_winogrande_without_a_blank_fails():
    with pytest.raises(ValueError, match="blank"):
        render_cloze("cloze_winogrande", "No blank here.", ["a", "b"])


def test_boolq_reads_passage_question_answer():
    pairs = render_cloze("cloze_boolq", "is the sky blue", BOOLQ_CLOZE_ANSWERS, "The sky.")
    assert pairs[0] == ("The sky.\nQuestion: is the sky blue?\nAnswer:", " False")
    assert pairs[1][1] == " True"


def test_every_task_names_a_cloze_template():
    assert all(task.cloze_template in CLOZE_TEMPLATES for task in TASKS.values())


def test_unknown_cloze_template_suggests_one():
    with pytest.raises(UnknownNameError, match="Did you mean 'cloze_question'"):
        render_cloze("cloze_questoin", "q", ["a", "b"])


@pytest.mark.parametrize("name", sorted(TASKS))
def test_packaged_tasks_render_one_pair_per_choice(name):
    letters = load_task(name, max_eval=20)
    splits = load_task(name, scoring="choices", max_eval=20)
    assert splits.info["scoring"] == "choices"
    assert splits.info["template"] == TASKS[name].cloze_template
    assert [e.id for e in splits.eval] == [e.id for e in letters.eval]  # the same questions
    assert [e.label for e in splits.eval] == [e.label for e in letters.eval]
    for example in splits.eval:
        assert len(example.scored) == example.num_choices == TASKS[name].num_choices
        assert all(
            context and continuation.startswith(" ") for context, continuation in example.scored
        )
        assert "Choices:" not in example.scored[0][0]  # no lettered list


def test_arc_continuations_are_the_choice_texts():
    letters = load_task("arc_easy", max_eval=5)
    splits = load_task("arc_easy", scoring="choices", max_eval=5)
    for lettered, cloze in zip(letters.eval, splits.eval, strict=True):
        for _, continuation in cloze.scored:
            assert continuation.strip().rstrip(".").lower() in lettered.prompt.lower()


def test_unknown_scoring_is_refused_before_loading():
    with pytest.raises(ValueError, match="scoring must be one of"):
        load_task("arc_easy", scoring="letter")


def test_jsonl_tasks_get_choices_scoring_for_free(tmp_path):
    import json

    lines = [
        {
            "question": "Which gas do plants take in?",
            "choices": ["oxygen", "carbon dioxide"],
            "answer": 1,
        },
        {
            "question": "Which is wet?",
            "choices": ["water", "sand"],
            "answer": 0,
            "context": "Beach.",
        },
    ]
    train, evaluation = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    train.write_text(json.dumps({"question": "Q?", "choices": ["a", "b"], "answer": 0}) + "\n")
    evaluation.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    splits = load_task(
        "mine", source="jsonl", jsonl_train=train, jsonl_eval=evaluation, scoring="choices"
    )
    first, second = splits.eval
    assert first.scored == (
        ("Question: Which gas do plants take in?\nAnswer:", " oxygen"),
        ("Question: Which gas do plants take in?\nAnswer:", " carbon dioxide"),
    )
    assert second.scored[0] == ("Beach.\nQuestion: Which is wet?\nAnswer:", " water")
    assert second.label == 0
