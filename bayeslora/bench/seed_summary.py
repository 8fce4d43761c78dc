"""Over seeds: which results survive training noise.

The paired bootstrap (``comparison.py``) sees only evaluation-set noise: which questions
happened to be scored. A change of seed changes the LoRA initialisation, the batch order and
IVON's noise, and can change a result more than that. With several ``--seeds`` the bench
therefore also reports, per task:

- each prediction mode's metrics as mean ± standard deviation over seeds (as the papers'
  tables do);
- each difference to the baseline as mean ± standard deviation over seeds, with how many
  seeds' 95% intervals lie wholly below 0 and wholly above 0. A difference is robust to both
  kinds of noise when every seed's interval lies on the same side.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable

from bayeslora.metrics.bootstrap import METRICS as BOOTSTRAPPED

METRICS = ("accuracy", "ece", "nll", "brier")  # the results table's order


def _mean_std(values: list[float]) -> dict[str, float]:
    # Sample standard deviation (n - 1), as seed-to-seed spread is an estimate; 0 for one seed.
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std}


def metrics_over_seeds(rows: Iterable) -> list[dict]:
    """Per (task, mode) of ``rows`` (ResultRow-like): seeds and mean/std of each metric."""
    groups: dict[tuple[str, str], list] = {}
    for row in rows:
        groups.setdefault((row.task, row.method), []).append(row)
    return [
        {
            "task": task,
            "method": method,
            "seeds": [r.seed for r in group],
            **{name: _mean_std([getattr(r, name) for r in group]) for name in METRICS},
        }
        for (task, method), group in groups.items()
    ]


def differences_over_seeds(comparisons: Iterable[dict]) -> list[dict]:
    """Per (task, mode) of ``compare_to_baseline`` output: mean/std of each difference over
    seeds, and the number of seeds whose interval lies below 0 and above 0."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for c in comparisons:
        groups.setdefault((c["task"], c["method"], c["baseline"]), []).append(c)
    summaries = []
    for (task, method, baseline), group in groups.items():
        summary = {"task": task, "method": method, "baseline": baseline}
        summary["seeds"] = [c["seed"] for c in group]
        for name in BOOTSTRAPPED:
            summary[name] = {
                **_mean_std([c[name]["diff"] for c in group]),
                "seeds_below_0": sum(c[name]["high"] < 0 for c in group),
                "seeds_above_0": sum(c[name]["low"] > 0 for c in group),
            }
        summaries.append(summary)
    return summaries


def format_seed_summary(metrics: list[dict], differences: list[dict]) -> str:
    if not metrics:
        return ""
    task = metrics[0]["task"]
    lines = [f"over seeds on {task} (mean ± std):"]
    for m in metrics:
        cells = "  ".join(
            f"{name} {m[name]['mean']:.4f} ± {m[name]['std']:.4f}" for name in METRICS
        )
        lines.append(f"  {m['method']:<18} {len(m['seeds'])} seeds  {cells}")
    if differences:
        lines.append(
            f"difference to {differences[0]['baseline']} over seeds (mean ± std; "
            "seeds whose 95% interval is below 0 / above 0):"
        )
        for d in differences:
            cells = "  ".join(
                f"d{name} {d[name]['mean']:+.4f} ± {d[name]['std']:.4f} "
                f"({d[name]['seeds_below_0']}/{d[name]['seeds_above_0']})"
                for name in BOOTSTRAPPED
            )
            lines.append(f"  {d['method']:<18} {len(d['seeds'])} seeds  {cells}")
    return "\n".join(lines)
