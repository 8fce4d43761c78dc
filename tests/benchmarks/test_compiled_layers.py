"""benchmarks/compiled_layers.py runs on the tiny model and writes its figures (their values are the script's business, never a timing assertion)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_compiled_layers_writes_a_ratio_per_phase_and_dtype(tmp_path):
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "compiled_layers.py"), "--model",
         "tiny-random-llama", "--rounds", "1", "--eval-questions", "4", "--backend",
         "aot_eager", "--dtypes", "bfloat16", "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    f = json.loads(out.read_text())
    names = ("compile_seconds", "compiled_over_eager_train", "compiled_over_eager_infer")
    assert set(f) == {f"{name}_bfloat16" for name in (*names, "graphs", "graph_breaks")}
    assert f["compiled_over_eager_train_bfloat16"] > 0
    assert f["compiled_over_eager_infer_bfloat16"] > 0
    assert f["graphs_bfloat16"] >= 1  # the compiled layers did run compiled
