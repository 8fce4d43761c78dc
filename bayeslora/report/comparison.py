"""Each result against the baseline's (the first method's), per seed: paired bootstrap intervals.

Printed after each task and logged to the parent MLflow run, so that a reader can see at
once which differences are larger than the evaluation set's sampling noise.
"""

from __future__ import annotations

from torch import Tensor

from bayeslora.metrics.bootstrap import paired_bootstrap
from bayeslora.metrics.registry import bootstrap_metrics


def compare_to_baseline(
    results: list[tuple[object, Tensor]], labels: Tensor, baseline: str, n_resamples: int = 1000
) -> list[dict]:
    """``results``: (ResultRow, probs) of one task; ``baseline``: the mode compared against.

    A seed without a baseline result (it failed) gets entries with ``missing`` saying so,
    never a comparison to another mode in its place."""
    base_probs = {row.seed: probs for row, probs in results if row.mode == baseline}
    comparisons = []
    for row, probs in results:
        if row.mode == baseline:
            continue
        if row.seed not in base_probs:
            comparisons.append(
                {
                    "mode": row.mode,
                    "baseline": baseline,
                    "task": row.task,
                    "seed": row.seed,
                    "missing": f"no {baseline} result for seed {row.seed} (it failed)",
                }
            )
            continue
        diffs = paired_bootstrap(
            probs, base_probs[row.seed], labels, n_resamples=n_resamples, seed=row.seed
        )
        comparisons.append(
            {
                "mode": row.mode,
                "baseline": baseline,
                "task": row.task,
                "seed": row.seed,
                **diffs,
            }
        )
    return comparisons


def format_comparisons(comparisons: list[dict]) -> str:
    if not comparisons:
        return ""
    first = comparisons[0]
    lines = [
        f"difference to {first['baseline']} on {first['task']} (95% paired bootstrap interval over eval examples):"
    ]
    for c in comparisons:
        if "missing" in c:
            lines.append(f"  {c['mode']:<18} seed {c['seed']:<3} missing: {c['missing']}")
            continue
        cells = "  ".join(
            f"d{m.name} {c[m.name]['diff']:+{m.fmt}} "
            f"[{c[m.name]['low']:+{m.fmt}}, {c[m.name]['high']:+{m.fmt}}]"
            for m in bootstrap_metrics()
        )
        lines.append(f"  {c['mode']:<18} seed {c['seed']:<3} {cells}")
    return "\n".join(lines)
