"""benchmarks/compiled_layers.py runs on the tiny model and writes its figures (their values are the script's business, never a timing assertion)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bayeslora.models.dropout import LoraDropout, lane_dropout
from tests.benchmarks.helpers import load_benchmark

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("train_dropout", "train_figure"),
    [("lanes", "compiled_over_eager_train"), ("fused", "compiled_fused_dropout_over_eager_train")],
)
def test_compiled_layers_writes_a_ratio_per_phase_and_dtype(tmp_path, train_dropout, train_figure):
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "compiled_layers.py"), "--model",
         "tiny-random-llama", "--rounds", "1", "--eval-questions", "4", "--backend",
         "aot_eager", "--dtypes", "bfloat16", "--train-dropout", train_dropout,
         "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    f = json.loads(out.read_text())
    names = ("compile_seconds", train_figure, "compiled_over_eager_infer", "graphs", "graph_breaks")
    assert set(f) == {f"{name}_bfloat16" for name in names}
    assert f[f"{train_figure}_bfloat16"] > 0
    assert f["compiled_over_eager_infer_bfloat16"] > 0
    assert f["graphs_bfloat16"] >= 1  # the compiled layers did run compiled
    if train_dropout == "fused":
        # torch's dropout is traced: the numpy draw no longer breaks a layer's graph
        assert f["graph_breaks_bfloat16"] == 0, proc.stdout[-3000:]
    else:
        # the counter counts: the lanes' draw outside the graph breaks each layer's graph
        assert f["graph_breaks_bfloat16"] > 0, proc.stdout[-3000:]


def test_torch_dropout_in_the_graph_leaves_eager_calls_to_the_lanes():
    compiled_layers = load_benchmark("compiled_layers")
    harness_forward = LoraDropout.forward
    layer = LoraDropout(0.3).train()
    x = torch.randn(4, 64)
    with compiled_layers.torch_dropout_in_the_graph():
        assert LoraDropout.forward is not harness_forward
        torch.manual_seed(0)
        inside = layer(x)
    assert LoraDropout.forward is harness_forward  # put back on leaving
    torch.manual_seed(0)
    assert torch.equal(inside, lane_dropout(x, 0.3))
