"""The same command with the same seed gives identical metrics on the same machine.

Tested to 1e-9 on CPU for every built-in method (a new built-in is picked up from the
registry) and the composite ``adamw+temperature``: two fits from scratch, each on fresh LoRA
adapters, then every prediction mode, and the metrics of each mode.

Not tested here, measured instead: the torch thread count. On the toy task below, fitting
with ``torch.set_num_threads(1)`` and with 2 gives probabilities that differ by up to 6e-8
(AdamW) and 1.5e-7 (Laplace), float32 rounding from the changed order of the sums in the
matmuls (training and prediction both); the metrics move by up to 8e-8, the accuracy not at
all. So threads change results beyond 1e-9, though far below any difference worth reading.
"""

from __future__ import annotations

import json

import pytest
import torch

from bayeslora.methods.adamw import AdamWConfig
from bayeslora.methods.registry import available_methods, get_method
from bayeslora.metrics import compute_metrics
from tests.bench.test_cli import TINY

TOL = 1e-9

# Every built-in, whatever its name; the composite is built on request, never listed.
METHODS = [
    *(name for name, source in available_methods().items() if source == "built-in"),
    "adamw+temperature",
]

# Small sample counts wherever a method has the field (a new method gets them too).
CHEAP = {"test_samples": 2, "members": 2, "n_samples": 500}
# For the AdamW family: learning rates that move the adapter in 4 steps (AdamW's default
# 5e-5 would barely, and the runs compared would be two near-untrained models).
FAST = {"lr": 1e-2, "swa_lr": 1e-2}
PER_METHOD = {"swag": {"swa_start": 0.5}}  # two snapshots in 4 steps: SWAG needs two


def _overrides(name: str, cls) -> dict:
    fields = set(cls.Config.__dataclass_fields__)
    values = {k: v for k, v in CHEAP.items() if k in fields}
    if issubclass(cls.Config, AdamWConfig):
        values.update({k: v for k, v in FAST.items() if k in fields})
    return {**values, **PER_METHOD.get(name, {})}


@pytest.fixture(scope="module")
def toy_val(tokenizer):
    """8 held-out questions for the methods that need validation data."""
    from bayeslora.tasks.encoding import TokenizedDataset

    from .conftest import toy_examples

    return TokenizedDataset(toy_examples(8, seed=2), tokenizer, max_length=64)


def _fit_predict(name, seed, toy_classifier, toy_train, toy_val, toy_eval, quick_settings):
    """A fresh method and fresh LoRA adapters (both seeded with ``seed``): mode -> probs."""
    cls = get_method(name)
    method = cls(cls.make_config(None, _overrides(name, cls)), train=quick_settings(4, seed))
    with toy_classifier(dropout=0.1, seed=seed) as clf:
        method.fit(clf, toy_train, toy_val if cls.needs_validation else None)
        return {
            mode.name: method.predict_proba(toy_eval, method.declared_mode(mode))
            for mode in method.modes()
        }


@pytest.mark.parametrize("name", METHODS)
def test_same_seed_gives_the_same_probabilities_and_metrics(
    name, toy_classifier, toy_train, toy_val, toy_eval, quick_settings
):
    cls = get_method(name)
    if "laplace-torch" in cls.key_libraries:
        pytest.importorskip("laplace")
    data = (toy_classifier, toy_train, toy_val, toy_eval, quick_settings)
    first = _fit_predict(name, 0, *data)
    second = _fit_predict(name, 0, *data)

    assert first.keys() == second.keys() and first
    for mode, probs in first.items():
        assert probs.shape == (len(toy_eval), 2), mode
        torch.testing.assert_close(probs, second[mode], rtol=0, atol=TOL, msg=mode)
        expected = compute_metrics(probs, toy_eval.labels)
        got = compute_metrics(second[mode], toy_eval.labels)
        assert got.keys() == expected.keys()
        for metric, value in expected.items():
            assert abs(got[metric] - value) <= TOL, (mode, metric, value, got[metric])

    if cls.trains:  # and the seed matters: the comparison above is not of constants
        other = _fit_predict(name, 1, *data)
        assert max((other[m] - first[m]).abs().max().item() for m in first) > 1e-6


def _results(out_dir) -> dict:
    (path,) = out_dir.glob("bench-*/results.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {(r["mode"], r["task"], r["seed"]): r for r in rows}


def test_the_same_command_twice_in_one_process_gives_the_same_results(tmp_path, capsys):
    """Two fresh runs of one command (two stores, so nothing is reused) in one interpreter:
    nothing a first run leaves behind (RNG state, caches, the loaded base model) may change
    the second. tests/bench/test_resume.py compares runs in separate processes, one of them
    killed and resumed from its checkpoints."""
    from bayeslora.bench.cli import main

    args = ["--methods", "adamw,ivon", *TINY, "--hp", "ivon.test_samples=2", "--no-save-adapters"]
    for run in ("first", "second"):
        assert main([*args, "--output-dir", str(tmp_path / run)]) == 0, capsys.readouterr().err
    first, second = _results(tmp_path / "first"), _results(tmp_path / "second")
    assert (
        sorted(first)
        == sorted(second)
        == [
            ("adamw", "arc_easy", 0),
            ("ivon", "arc_easy", 0),
            ("ivon@mean", "arc_easy", 0),
        ]
    )
    for key, row in first.items():
        assert not row["reused"] and not second[key]["reused"]
        assert second[key]["cell"] == row["cell"]  # the same key: the same cell
        assert second[key]["metrics"].keys() == row["metrics"].keys()
        for metric, value in row["metrics"].items():
            assert abs(second[key]["metrics"][metric] - value) <= TOL, (key, metric)
