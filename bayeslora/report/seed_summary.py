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

from bayeslora.metrics.registry import bootstrap_metrics, table_metrics


def _mean_std(values: list[float]) -> dict[str, float]:
    # Sample standard deviation (n - 1), as seed-to-seed spread is an estimate; 0 for one seed.
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std}


def metrics_over_seeds(rows: Iterable) -> list[dict]:
    """Per (task, mode) of ``rows`` (``.task``, ``.mode``, ``.seed``, ``.metrics`` a
    ``{name: float}``): the seeds and the mean/std of each table metric of the registry."""
    names = [m.name for m in table_metrics()]
    groups: dict[tuple[str, str], list] = {}
    for row in rows:
        groups.setdefault((row.task, row.mode), []).append(row)
    return [
        {
            "task": task,
            "mode": mode,
            "seeds": [r.seed for r in group],
            **{name: _mean_std([r.metrics[name] for r in group]) for name in names},
        }
        for (task, mode), group in groups.items()
    ]


def differences_over_seeds(comparisons: Iterable[dict]) -> list[dict]:
    """Per (task, mode) of ``compare_to_baseline`` output: mean/std of each bootstrapped
    difference over seeds, and the number of seeds whose interval lies below 0 and above 0."""
    names = [m.name for m in bootstrap_metrics()]
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for c in comparisons:
        if "missing" not in c:  # a seed whose baseline failed has no difference
            groups.setdefault((c["task"], c["mode"], c["baseline"]), []).append(c)
    summaries = []
    for (task, mode, baseline), group in groups.items():
        summary = {"task": task, "mode": mode, "baseline": baseline}
        summary["seeds"] = [c["seed"] for c in group]
        for name in names:
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
            f"{metric.name} {m[metric.name]['mean']:{metric.fmt}} "
            f"± {m[metric.name]['std']:{metric.fmt}}"
            for metric in table_metrics()
        )
        lines.append(f"  {m['mode']:<18} {len(m['seeds'])} seeds  {cells}")
    if differences:
        lines.append(
            f"difference to {differences[0]['baseline']} over seeds (mean ± std; "
            "seeds whose 95% interval is below 0 / above 0):"
        )
        for d in differences:
            cells = "  ".join(
                f"d{metric.name} {d[metric.name]['mean']:+{metric.fmt}} "
                f"± {d[metric.name]['std']:{metric.fmt}} "
                f"({d[metric.name]['seeds_below_0']}/{d[metric.name]['seeds_above_0']})"
                for metric in bootstrap_metrics()
            )
            lines.append(f"  {d['mode']:<18} {len(d['seeds'])} seeds  {cells}")
    return "\n".join(lines)
