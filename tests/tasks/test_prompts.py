import pytest

from bayeslora.tasks import TEMPLATES, UnknownNameError, get_task, render
from bayeslora.tasks.prompts import letters
from bayeslora.tasks.records import read_item, to_examples
from bayeslora.tasks.registry import ARC_FIELDS, BOOLQ_PACKAGED_FIELDS, WINOGRANDE_FIELDS


def test_mc_format_is_laplace_lora():
    # Capitalised choices with a final ".", lettered by position, ending in "Answer:".
    prompt = render("laplace_lora_mc", "Which is a gas?", ["oxygen", "Iron.", "salt"])
    assert prompt == (
        "Select one of the choices that answers the following question: Which is a gas? "
        "Choices: A. Oxygen. B. Iron. C. Salt. Answer:"
    )


def test_mc_with_context_puts_it_first():
    prompt = render("laplace_lora_mc", "Q?", ["x", "y"], "Some passage.")
    assert prompt.startswith("Context: Some passage. Select one of the choices")
    assert prompt.endswith("Choices: A. X. B. Y. Answer:")


def test_arc_numeric_keys_are_lettered_by_position():
    record = {
        "id": "NYSEDREGENTS_2014_8_8",
        "question": "Which model can be used to trace genetic inheritance?",
        "choices": {
            "text": ["life cycle", "pedigree chart", "food web", "energy pyramid"],
            "label": ["1", "2", "3", "4"],
        },
        "answerKey": "2",
    }
    item = read_item(record, ARC_FIELDS, fallback_id="unused")
    (example,) = to_examples([item], get_task("arc_easy"))
    assert example.label == 1
    assert example.num_choices == 4
    assert example.id == "NYSEDREGENTS_2014_8_8"
    assert "Choices: A. Life cycle. B. Pedigree chart. C. Food web. D. Energy pyramid. Answer:" in (
        example.prompt
    )


def test_winogrande_format():
    record = {
        "sentence": "Sarah beat Maria so _ won.",
        "option1": "Sarah",
        "option2": "Maria",
        "answer": "1",
    }
    item = read_item(record, WINOGRANDE_FIELDS, fallback_id="validation-7")
    (example,) = to_examples([item], get_task("winogrande_s"))
    assert example.id == "validation-7"
    assert example.label == 0
    assert example.prompt == (
        "Select one of the choices that answers the following question: Sarah beat Maria so _ won. "
        "Choices: A. Sarah. B. Maria. Answer:"
    )


def test_boolq_format_passage_first():
    record = {"question": "is the sky blue", "passage": "The sky is blue.", "answer": True}
    item = read_item(record, BOOLQ_PACKAGED_FIELDS, fallback_id="validation-0")
    (example,) = to_examples([item], get_task("boolq"))
    assert example.label == 1  # answer_labels ("False", "True")
    assert example.num_choices == 2
    assert example.prompt == (
        "Context: The sky is blue. Answer the question with only True or False: "
        "is the sky blue? Answer:"
    )


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_every_template_ends_in_answer(name):
    assert render(name, "q", ["a", "b"], "c").endswith("Answer:")
    assert render(name, "q", ["a", "b"]).endswith("Answer:")


def test_unknown_template():
    with pytest.raises(UnknownNameError, match="Did you mean 'laplace_lora_mc'"):
        render("laplace_lora_mcq", "q", ["a", "b"])


def test_letters():
    assert letters(2) == ("A", "B")
    assert letters(5) == ("A", "B", "C", "D", "E")
    with pytest.raises(ValueError):
        letters(1)


def test_unlabeled_records_are_rejected():
    from bayeslora.tasks.records import Item, RecordError

    with pytest.raises(RecordError, match="label -1"):
        to_examples([Item("test-0", "q", (), -1, "p")], get_task("boolq"))
