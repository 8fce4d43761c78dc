"""benchmarks/scoring.py runs end to end (on the tiny model, a few questions)."""

import json

from tests.benchmarks.helpers import load_benchmark

scoring = load_benchmark("scoring")


def test_every_figure_is_written(tmp_path):
    out = tmp_path / "scoring.json"
    args = ["--model", "tiny-random-llama", "--json", str(out), "--zero-shot-questions", "6"]
    assert scoring.main([*args, "--questions", "4", "--rounds", "1"]) == 0
    figures = json.loads(out.read_text())
    for name in (
        "zero_shot_accuracy_arc_easy_letters",
        "zero_shot_accuracy_arc_easy_choices_none",
        "zero_shot_nll_arc_easy_choices_char",
        "zero_shot_accuracy_boolq_falsetrue",
        "zero_shot_accuracy_boolq_noyes",
        "choices_over_letters_train",
        "shared_over_separate_infer",
    ):
        assert name in figures, name
    assert all(0 <= figures[n] <= 1 for n in figures if "accuracy" in n)
    assert all(figures[n] > 0 for n in figures if "_over_" in n)
