"""benchmarks/precision.py on two tiny bench runs (fp32 and bf16, two seeds each)."""

import pytest

from bayeslora.bench.cli import main as bench
from tests.benchmarks.helpers import load_benchmark

precision = load_benchmark("precision")

TINY = ["--model", "tiny-random-llama", "--methods", "adamw", "--quick", "--steps", "3",
        "--limit-train", "32", "--limit-eval", "16", "--no-progress", "--seeds", "0,1"]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = {}
    for dtype in ("float32", "bfloat16"):
        out[dtype] = tmp_path_factory.mktemp(dtype)
        assert bench([*TINY, "--dtype", dtype, "--output-dir", str(out[dtype])]) == 0
    return out


def test_a_run_agrees_with_itself(runs):
    fp32 = precision.load(runs["float32"])
    report = precision.compare(fp32, fp32)
    entry = report["arc_easy/adamw"]
    assert entry["seeds"] == [0, 1]
    assert entry["argmax_agreement"] == {0: 1.0, 1: 1.0} and entry["agreement_ok"]
    assert all(m["difference"] == 0 and m["within_spread"] for m in entry["metrics"].values())


def test_bf16_against_fp32(runs, capsys):
    assert precision.main([str(runs["float32"]), str(runs["bfloat16"])]) == 0
    out = capsys.readouterr().out
    assert out.startswith("arc_easy/adamw (seeds 0,1)")
    assert "argmax agreement seed 0: " in out
    report = precision.compare(precision.load(runs["float32"]), precision.load(runs["bfloat16"]))
    entry = report["arc_easy/adamw"]
    assert all(0 <= v <= 1 for v in entry["argmax_agreement"].values())
    assert entry["agreement_ok"] == (min(entry["argmax_agreement"].values()) >= 0.97)
    assert set(entry["metrics"]) == {"accuracy", "ece", "nll", "brier"}
