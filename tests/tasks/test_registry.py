import pytest

from bayeslora.tasks import (
    TASKS,
    TEMPLATES,
    UnknownNameError,
    get_task,
    list_tasks,
    load_task,
)

EXPECTED = ["arc_challenge", "arc_easy", "boolq", "obqa", "winogrande_m", "winogrande_s"]


def test_list_tasks():
    assert list_tasks() == EXPECTED


def test_unknown_task_says_did_you_mean_and_lists_known():
    with pytest.raises(UnknownNameError) as err:
        get_task("arc_esay")
    message = str(err.value)
    assert "Did you mean 'arc_easy'" in message
    for name in EXPECTED:
        assert name in message
    assert isinstance(err.value, KeyError)  # a failed lookup, catchable as such


def test_unknown_task_without_close_match_still_lists_known():
    with pytest.raises(UnknownNameError, match="Known tasks: arc_challenge"):
        get_task("zzzz")


@pytest.mark.parametrize("name", EXPECTED)
def test_specs_are_consistent(name):
    spec = get_task(name)
    assert spec.name == name
    assert spec.template in TEMPLATES
    assert spec.num_choices == len(spec.answer_labels) >= 2
    assert len(set(spec.answer_labels)) == spec.num_choices
    assert spec.hub is not None and spec.packaged is not None
    assert spec.hub.train_split == "train" and spec.hub.eval_split == "validation"


def test_answer_labels_and_hub_sources():
    assert get_task("arc_easy").answer_labels == ("A", "B", "C", "D")
    assert get_task("obqa").answer_labels == ("A", "B", "C", "D")
    assert get_task("winogrande_s").answer_labels == ("A", "B")
    assert get_task("boolq").answer_labels == ("False", "True")
    hub = {name: (TASKS[name].hub.path, TASKS[name].hub.config) for name in EXPECTED}
    assert hub == {
        "arc_easy": ("allenai/ai2_arc", "ARC-Easy"),
        "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge"),
        "obqa": ("allenai/openbookqa", "main"),
        "boolq": ("aps/super_glue", "boolq"),
        "winogrande_s": ("allenai/winogrande", "winogrande_s"),
        "winogrande_m": ("allenai/winogrande", "winogrande_m"),
    }


def test_winogrande_sizes_share_the_eval_split():
    s, m = get_task("winogrande_s").packaged, get_task("winogrande_m").packaged
    assert s.eval_dir == m.eval_dir
    assert (s.split.seed, s.split.eval_size) == (m.split.seed, m.split.eval_size)
    assert (s.split.train_size, m.split.train_size) == (192, None)


def test_unknown_source_says_did_you_mean():
    with pytest.raises(UnknownNameError, match="Did you mean 'packaged'"):
        load_task("arc_easy", source="packged")


def test_jsonl_paths_need_the_jsonl_source(tmp_path):
    with pytest.raises(ValueError, match="only read with source='jsonl'"):
        load_task("arc_easy", jsonl_train=tmp_path / "x.jsonl")
