"""benchmarks/bf16_breakdown.py runs on the tiny model and writes sane figures (their values
are the script's business, never a timing assertion here)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_breakdown_writes_shares_and_bounds(tmp_path):
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bf16_breakdown.py"), "--model",
         "tiny-random-llama", "--rounds", "1", "--eval-questions", "4", "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    for phase in ("train", "infer"):
        for dtype in ("float32", "bfloat16"):
            assert 0 < figures[f"matmul_share_{phase}_{dtype}"] < 1
        bound, ratio = figures[f"speedup_bound_{phase}"], figures["bf16_over_fp32_matmul"]
        assert figures[f"speedup_bound_over_matmul_ratio_{phase}"] == bound / ratio
        assert figures[f"rest_fp32_over_bf16_{phase}"] > 0
