import json

import pytest

from bayeslora.tasks import TaskSpec, load_task
from bayeslora.tasks.jsonl import JsonlFormatError, read_jsonl


def _write(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def _q(i, answer=0, k=3, **extra):
    return {
        "question": f"Question {i}?",
        "choices": [f"c{j}" for j in range(k)],
        "answer": answer,
        **extra,
    }


def test_train_and_eval_files(tmp_path):
    train = _write(tmp_path / "train.jsonl", [_q(0, 1), _q(1, "C", id="my-id"), "", _q(2, 0)])
    evals = _write(tmp_path / "eval.jsonl", [_q(10, "B", context="A passage.")])
    splits = load_task("my_task", source="jsonl", jsonl_train=train, jsonl_eval=evals)
    assert splits.task.name == "my_task"
    assert splits.task.answer_labels == ("A", "B", "C")
    assert splits.task.template == "laplace_lora_mc"
    assert [e.label for e in splits.train] == [1, 2, 0]
    assert [e.id for e in splits.train] == [
        "train.jsonl:1",
        "my-id",
        "train.jsonl:4",
    ]  # line 3 blank
    (example,) = splits.eval
    assert example.label == 1 and example.num_choices == 3
    assert example.prompt == (
        "Context: A passage. Select one of the choices that answers the following question: "
        "Question 10? Choices: A. C0. B. C1. C. C2. Answer:"
    )
    info = splits.info
    assert (info["source"], info["train_split"], info["eval_split"]) == (
        "jsonl",
        str(train),
        str(evals),
    )
    assert (info["train_size"], info["eval_size"], info["num_choices"]) == (3, 1, 3)


def test_one_file_is_split_with_the_seed(tmp_path):
    path = _write(tmp_path / "all.jsonl", [_q(i, i % 2, k=2) for i in range(20)])
    a = load_task("t", source="jsonl", jsonl_train=path, seed=0)
    b = load_task("t", source="jsonl", jsonl_train=path, seed=0)
    c = load_task("t", source="jsonl", jsonl_train=path, seed=1)
    assert (len(a.train), len(a.eval)) == (16, 4)  # eval_fraction 0.2
    assert [e.id for e in a.eval] == [e.id for e in b.eval]
    assert [e.id for e in a.eval] != [e.id for e in c.eval]
    assert not {e.id for e in a.train} & {e.id for e in a.eval}
    assert a.info["split_seed"] == 0 and c.info["split_seed"] == 1
    only_eval = load_task("t", source="jsonl", jsonl_eval=path, jsonl_eval_fraction=0.5)
    assert (len(only_eval.train), len(only_eval.eval)) == (10, 10)


def test_a_task_spec_sets_template_and_labels(tmp_path):
    path = _write(tmp_path / "wg.jsonl", [_q(i, i % 2, k=2) for i in range(6)])
    spec = TaskSpec("mine", "two options", ("A", "B"), "laplace_lora_winogrande")
    splits = load_task(spec, source="jsonl", jsonl_train=path)
    assert splits.task is spec
    assert splits.info["template"] == "laplace_lora_winogrande"
    three = TaskSpec("three", "x", ("A", "B", "C"), "laplace_lora_mc")
    with pytest.raises(
        JsonlFormatError, match=r"wg.jsonl, line 1: 2 choices, but task 'three' has 3"
    ):
        load_task(three, source="jsonl", jsonl_train=path)


BAD = [
    ("{not json", "invalid JSON"),
    ('["a list"]', "expected a JSON object"),
    ({"choices": ["a", "b"], "answer": 0}, "missing field 'question'"),
    ({"question": "q", "answer": 0}, "missing field 'choices'"),
    ({"question": "q", "choices": ["a", "b"]}, "missing field 'answer'"),
    ({"question": 3, "choices": ["a", "b"], "answer": 0}, "'question' must be a non-empty string"),
    ({"question": "q", "choices": "a b", "answer": 0}, "'choices' must be a list of strings"),
    ({"question": "q", "choices": ["a", 2], "answer": 0}, "'choices' must be a list of strings"),
    ({"question": "q", "choices": ["a"], "answer": 0}, "at least 2"),
    ({"question": "q", "choices": ["a", "b"], "answer": 2}, "out of range"),
    ({"question": "q", "choices": ["a", "b"], "answer": "C"}, "out of range"),
    ({"question": "q", "choices": ["a", "b"], "answer": -1}, "out of range"),
    ({"question": "q", "choices": ["a", "b"], "answer": True}, "'answer' must be a choice index"),
    ({"question": "q", "choices": ["a", "b"], "answer": "a"}, "'answer' must be a choice index"),
    (
        {"question": "q", "choices": ["a", "b"], "answer": 0, "context": 5},
        "'context' must be a string",
    ),
    ({"question": "q", "choices": ["a", "b"], "answer": 0, "id": [1]}, "'id' must be a string"),
    ({"question": "q", "choices": ["a", "b", "c"], "answer": 0}, "3 choices, but line 1 has 2"),
]


@pytest.mark.parametrize(("record", "problem"), BAD)
def test_bad_records_name_file_and_line(tmp_path, record, problem):
    path = _write(tmp_path / "bad.jsonl", [_q(0, k=2), "", record])
    with pytest.raises(JsonlFormatError) as err:
        read_jsonl(path)
    assert str(err.value).startswith(f"{path}, line 3: ")
    assert problem in str(err.value)
    assert err.value.line == 3


def test_eval_file_must_match_the_train_choice_count(tmp_path):
    train = _write(tmp_path / "train.jsonl", [_q(0, k=4)])
    evals = _write(tmp_path / "eval.jsonl", [_q(1, k=4), _q(2, k=2)])
    with pytest.raises(
        JsonlFormatError,
        match=r"eval.jsonl, line 2: 2 choices, but the records of .*train.jsonl have 4",
    ):
        load_task("t", source="jsonl", jsonl_train=train, jsonl_eval=evals)


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(JsonlFormatError, match="empty.jsonl.*no records"):
        read_jsonl(empty)
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="needs jsonl_train and/or jsonl_eval"):
        load_task("t", source="jsonl")
