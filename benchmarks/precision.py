"""Does a cheaper precision change the results? Two bench output directories compared.

  python -m bayeslora.bench --seeds 0,1,2 --dtype float32  --output-dir runs-fp32
  python -m bayeslora.bench --seeds 0,1,2 --dtype bfloat16 --output-dir runs-bf16
  python benchmarks/precision.py runs-fp32 runs-bf16 [--json out.json]

For each prediction mode: each metric's mean and standard deviation over the seeds in
both directories, and whether the candidate's mean lies within the reference's
seed-to-seed spread (|difference of means| <= the reference's std over seeds, the noise
that training alone leaves); and, per seed, the argmax agreement: the share of evaluation
questions on which both predict the same answer (matched by question id).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from bayeslora.tracking.schema import PREDICTIONS, read_predictions  # noqa: E402

METRICS = ("accuracy", "ece", "nll", "brier")
AGREEMENT_TARGET = 0.97  # the share of answers a cheaper precision may leave unchanged, at least


def load(directory: Path) -> dict[tuple[str, int], dict]:
    """("task/mode", seed) -> {"metrics", "argmax" (id -> answer), "train_time_s"} of the
    newest result per (task, mode, seed) in ``directory``'s results.jsonl files and MLflow
    store."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{directory / 'mlflow.db'}")
    rows: dict[tuple[str, int], dict] = {}
    for path in sorted(directory.glob("bench-*/results.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            run = client.get_run(row["mlflow_run_id"])
            local = client.download_artifacts(run.info.run_id, PREDICTIONS)
            ids, _, probs = read_predictions(json.loads(Path(local).read_text()))
            argmax = dict(zip(ids, probs.argmax(-1).tolist(), strict=True))
            rows[(f"{row['task']}/{row['mode']}", row["seed"])] = {
                "metrics": row["metrics"],
                "argmax": argmax,
                "train_time_s": row["train_time_s"],
            }
    if not rows:
        raise SystemExit(f"no bench results under {directory} (bench-*/results.jsonl)")
    return rows


def compare(reference: dict, candidate: dict) -> dict:
    modes = sorted({m for m, _ in reference} & {m for m, _ in candidate})
    report = {}
    for mode in modes:
        seeds = sorted(
            {s for m, s in reference if m == mode} & {s for m, s in candidate if m == mode}
        )
        entry = {"seeds": seeds, "metrics": {}, "argmax_agreement": {}}
        for metric in METRICS:
            ref = [reference[(mode, s)]["metrics"][metric] for s in seeds]
            cand = [candidate[(mode, s)]["metrics"][metric] for s in seeds]
            ref_std = statistics.stdev(ref) if len(ref) > 1 else float("nan")
            diff = statistics.mean(cand) - statistics.mean(ref)
            entry["metrics"][metric] = {
                "reference_mean": statistics.mean(ref),
                "reference_std": ref_std,
                "candidate_mean": statistics.mean(cand),
                "candidate_std": statistics.stdev(cand) if len(cand) > 1 else float("nan"),
                "difference": diff,
                "within_spread": bool(abs(diff) <= ref_std) if len(ref) > 1 else None,
            }
        for s in seeds:
            a, b = reference[(mode, s)]["argmax"], candidate[(mode, s)]["argmax"]
            common = a.keys() & b.keys()
            entry["argmax_agreement"][s] = sum(a[i] == b[i] for i in common) / len(common)
        entry["agreement_ok"] = min(entry["argmax_agreement"].values()) >= AGREEMENT_TARGET
        report[mode] = entry
    return report


def format_report(report: dict) -> str:
    lines = []
    for mode, entry in report.items():
        lines.append(f"{mode} (seeds {','.join(map(str, entry['seeds']))})")
        for metric, m in entry["metrics"].items():
            verdict = {True: "within", False: "OUTSIDE", None: "n/a (one seed)"}[m["within_spread"]]
            lines.append(
                f"  {metric:<9} reference {m['reference_mean']:.4f} ± {m['reference_std']:.4f}  "
                f"candidate {m['candidate_mean']:.4f} ± {m['candidate_std']:.4f}  "
                f"difference {m['difference']:+.4f}  {verdict} the reference's seed spread"
            )
        agreement = ", ".join(f"seed {s}: {v:.3f}" for s, v in entry["argmax_agreement"].items())
        verdict = "ok" if entry["agreement_ok"] else "BELOW"
        lines.append(f"  argmax agreement {agreement}  ({verdict} the target {AGREEMENT_TARGET})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("reference", type=Path, help="output directory of the reference run (fp32)")
    p.add_argument("candidate", type=Path, help="output directory of the candidate run (bf16)")
    p.add_argument("--json", help="write the comparison here")
    args = p.parse_args(argv)
    report = compare(load(args.reference), load(args.candidate))
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
