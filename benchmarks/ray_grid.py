"""A grid of tiny-model cells with ``--executor ray`` against ``--executor local``.

    python benchmarks/ray_grid.py [--sizes 4,16] [--steps 3] [--json out.json]

For each executor and grid size n (adamw, seeds 0..n-1, the tiny random model) the bench
CLI runs once in a fresh process and output directory; the wall time W(n) includes the
interpreter, the store's creation and, for Ray, starting a local instance. Two sizes
separate the fixed cost from the cost per cell: per cell = (W(n2) - W(n1)) / (n2 - n1),
fixed = W(n1) - n1 * per cell. The cells' own compute (train_s + eval_s, from
``results.jsonl``) is printed beside it; under Ray ``slots`` cells run at once, so the
overhead per cell is ``slots * per cell - compute``, locally ``per cell - compute``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINY = ["--model", "tiny-random-llama", "--quick", "--limit-train", "32", "--limit-eval", "16"]
TINY += ["--no-progress", "--no-save-adapters", "--methods", "adamw"]


def run(executor: str, cells: int, steps: int) -> tuple[float, float]:
    """(wall seconds, mean compute seconds per cell) of one bench process."""
    with tempfile.TemporaryDirectory() as out:
        seeds = ",".join(str(s) for s in range(cells))
        args = [*TINY, "--steps", str(steps), "--seeds", seeds, "--output-dir", out]
        args += ["--executor", executor]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        env.pop("MLFLOW_TRACKING_URI", None)
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "bayeslora.bench", *args],
            capture_output=True,
            text=True,
            env=env,
        )
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{executor} with {cells} cells failed:\n{done.stderr[-3000:]}")
        rows = [
            json.loads(line)
            for path in Path(out).glob("bench-*/results.jsonl")
            for line in path.read_text().splitlines()
        ]
    compute = sum(r["train_time_s"] + r["eval_time_s"] for r in rows) / len(rows)
    return wall, compute


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="4,16", help="two grid sizes (cells)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--slots", type=int, default=2, help="cells Ray runs at once (CPUs)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    small, large = (int(n) for n in args.sizes.split(","))
    figures = {}
    for executor, parallel in (("local", 1), ("ray", args.slots)):
        w1, c1 = run(executor, small, args.steps)
        w2, c2 = run(executor, large, args.steps)
        per_cell = (w2 - w1) / (large - small)
        compute = (c1 * small + c2 * large) / (small + large)
        figures[executor] = {
            f"wall_{small}": round(w1, 1),
            f"wall_{large}": round(w2, 1),
            "per_cell_s": round(per_cell, 2),
            "fixed_s": round(w1 - small * per_cell, 1),
            "compute_per_cell_s": round(compute, 2),
            "overhead_per_cell_s": round(parallel * per_cell - compute, 2),
        }
        print(executor, figures[executor], flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
