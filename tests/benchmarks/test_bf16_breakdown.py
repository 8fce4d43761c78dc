"""benchmarks/bf16_breakdown.py runs on the tiny model and writes sane figures (their values
are the script's business, never a timing assertion here)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_breakdown_writes_shares_and_bounds(tmp_path):
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bf16_breakdown.py"), "--model",
         "tiny-random-llama", "--rounds", "1", "--eval-questions", "4", "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    f = json.loads(out.read_text())
    ratio = f["bf16_over_fp32_matmul"]
    for phase in ("train", "infer"):
        s32, s16 = f[f"matmul_share_{phase}_float32"], f[f"matmul_share_{phase}_bfloat16"]
        rest, matmul = f[f"rest_fp32_over_bf16_{phase}"], f[f"matmul_speedup_{phase}"]
        assert 0 < s32 < 1 and 0 < s16 < 1 and rest > 0 and matmul > 0
        # each speed-up recomputed from the shares (fp32 time = 1; bf16 rest = (1 - s32) / rest)
        close = pytest.approx
        assert f[f"profiled_speedup_{phase}"] == close(1 / (s32 / matmul + (1 - s32) / rest))
        assert f[f"speedup_ceiling_{phase}"] == close(rest / (1 - s32))
        bound = 1 / (s32 / max(ratio, matmul) + (1 - s32) / rest)
        assert f[f"speedup_bound_{phase}"] == close(bound)
        assert f[f"speedup_bound_over_matmul_ratio_{phase}"] == close(bound / ratio)
        assert f[f"speedup_bound_{phase}"] <= f[f"speedup_ceiling_{phase}"]
        assert f[f"speedup_bound_{phase}"] >= f[f"profiled_speedup_{phase}"] * (1 - 1e-9)
