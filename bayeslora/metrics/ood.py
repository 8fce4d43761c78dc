"""Out-of-distribution detection: can a model's uncertainty tell questions of another task
from those of the task it was trained on?

Conventions (BLoB, Wang et al. 2024; SWAG-LoRA, Onal et al. 2024):

* **OOD is the positive class.** Each question gets an uncertainty score, higher meaning
  "more likely out of distribution"; AUROC is the probability that a random OOD question
  scores above a random in-distribution one (ties count one half).
* **Scores**, from a mode's predictions ``samples [S, N, K]`` (``S = 1`` for a
  deterministic mode), with ``p̄`` their mean over samples:

  - ``maxprob``: ``1 - max_k p̄_k`` (one minus the confidence);
  - ``entropy``: ``H[p̄] = -Σ_k p̄_k log p̄_k`` (the total predictive uncertainty);
  - ``mi``: the mutual information ``H[p̄] - mean_s H[p_s]`` (the disagreement between
    samples, the epistemic part), only when ``S > 1``.

* **FPR at 95 % TPR**: the fraction of in-distribution questions flagged at the lowest
  threshold that flags at least 95 % of the OOD ones (lower is better).

AUROC and the ROC curve come from torchmetrics; this module only chooses the scores and
names the numbers (``ood_auroc_<score>``, ``ood_fpr95_<score>``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

SCORES = ("maxprob", "entropy", "mi")
TPR_LEVEL = 0.95


@dataclass(frozen=True)
class OodMetric:
    """One logged OOD number: ``name`` = ``ood_<reading>_<score>``."""

    reading: str  # "auroc" or "fpr95"
    score: str  # one of SCORES
    higher_is_better: bool

    @property
    def name(self) -> str:
        return f"ood_{self.reading}_{self.score}"

    @property
    def header(self) -> str:
        return f"{self.reading}({self.score})"


# every number ood_metrics can log, in display order (AUROC first, then FPR at 95 % TPR)
OOD_METRICS: dict[str, OodMetric] = {
    m.name: m
    for m in (
        *(OodMetric("auroc", score, True) for score in SCORES),
        *(OodMetric("fpr95", score, False) for score in SCORES),
    )
}


def uncertainty_scores(samples: Tensor) -> dict[str, Tensor]:
    """Per-question scores ``[N]`` (float64) from ``samples [S, N, K]``; ``mi`` only if S > 1."""
    if samples.ndim != 3:
        raise ValueError(f"samples must be [S, N, K], got shape {tuple(samples.shape)}")
    samples = samples.to(torch.float64)
    mean = samples.mean(0)
    entropy = _entropy(mean)
    scores = {"maxprob": 1 - mean.max(-1).values, "entropy": entropy}
    if samples.shape[0] > 1:
        scores["mi"] = (entropy - _entropy(samples).mean(0)).clamp_min(0)
    return scores


def detection(in_scores: Tensor, out_scores: Tensor) -> tuple[float, float]:
    """(AUROC, FPR at 95 % TPR) of telling ``out_scores`` (positives) from ``in_scores``."""
    from torchmetrics.functional.classification import binary_auroc, binary_roc

    if len(in_scores) == 0 or len(out_scores) == 0:
        raise ValueError("OOD detection needs in- and out-of-distribution questions, got none")
    preds = torch.cat([in_scores, out_scores]).to(torch.float64)
    # torchmetrics takes scores outside [0, 1] for logits and squashes them through a
    # float32 sigmoid, which merges nearby scores (entropy reaches log K > 1): rescale,
    # which keeps the order and so the ROC curve.
    low, high = preds.min(), preds.max()
    preds = (preds - low) / (high - low) if high > low else torch.zeros_like(preds)
    target = torch.cat([torch.zeros(len(in_scores)), torch.ones(len(out_scores))]).long()
    auroc = float(binary_auroc(preds, target))
    fpr, tpr, _ = binary_roc(preds, target)
    fpr95 = float(fpr[tpr >= TPR_LEVEL].min())
    return auroc, fpr95


def ood_metrics(in_samples: Tensor, out_samples: Tensor) -> dict[str, float]:
    """``ood_auroc_<score>`` and ``ood_fpr95_<score>`` for each score both sides have."""
    inside, outside = uncertainty_scores(in_samples), uncertainty_scores(out_samples)
    readings = {}
    for score in SCORES:
        if score in inside and score in outside:
            auroc, fpr95 = detection(inside[score], outside[score])
            readings[OodMetric("auroc", score, True).name] = auroc
            readings[OodMetric("fpr95", score, False).name] = fpr95
    return {name: readings[name] for name in OOD_METRICS if name in readings}


def _entropy(probs: Tensor) -> Tensor:
    return -(probs * probs.clamp_min(1e-300).log()).sum(-1)
