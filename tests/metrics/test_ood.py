"""OOD detection metrics against an independent reference (scikit-learn's ROC) and by hand."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from bayeslora.metrics.ood import detection, ood_metrics, uncertainty_scores


def _fpr95_reference(in_scores, out_scores) -> float:
    y = np.r_[np.zeros(len(in_scores)), np.ones(len(out_scores))]
    fpr, tpr, _ = roc_curve(y, np.r_[in_scores, out_scores])
    return float(fpr[tpr >= 0.95].min())


@pytest.mark.parametrize("seed", range(5))
def test_detection_matches_sklearn(seed):
    gen = torch.Generator().manual_seed(seed)
    inside = torch.rand(200, generator=gen, dtype=torch.float64)
    outside = torch.rand(150, generator=gen, dtype=torch.float64) + 0.3
    if seed % 2:  # ties across the classes
        inside, outside = (inside * 10).round() / 10, (outside * 10).round() / 10
    auroc, fpr95 = detection(inside, outside)
    y = np.r_[np.zeros(200), np.ones(150)]
    assert auroc == pytest.approx(roc_auc_score(y, np.r_[inside.numpy(), outside.numpy()]))
    assert fpr95 == pytest.approx(_fpr95_reference(inside.numpy(), outside.numpy()))


def test_perfect_and_useless_detectors():
    assert detection(torch.tensor([0.1, 0.2]), torch.tensor([0.8, 0.9])) == (1.0, 0.0)
    assert detection(torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5]))[0] == 0.5


def test_scores_by_hand():
    samples = torch.tensor(
        [[[0.9, 0.1], [0.5, 0.5]], [[0.1, 0.9], [0.5, 0.5]]], dtype=torch.float64
    )  # two samples that disagree on question 0, agree on question 1
    scores = uncertainty_scores(samples)
    assert scores["maxprob"].tolist() == pytest.approx([0.5, 0.5])
    assert scores["entropy"].tolist() == pytest.approx([math.log(2), math.log(2)])
    h = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    assert scores["mi"].tolist() == pytest.approx([math.log(2) - h, 0.0])
    assert "mi" not in uncertainty_scores(samples[:1])


def test_ood_metrics_names_and_a_separable_case():
    confident = torch.tensor([[0.97, 0.01, 0.01, 0.01]]).repeat(1, 40, 1)
    unsure = torch.full((1, 30, 4), 0.25)
    metrics = ood_metrics(confident, unsure)
    assert set(metrics) == {
        "ood_auroc_maxprob",
        "ood_fpr95_maxprob",
        "ood_auroc_entropy",
        "ood_fpr95_entropy",
    }
    assert metrics["ood_auroc_maxprob"] == 1.0 and metrics["ood_fpr95_entropy"] == 0.0
    sampled = ood_metrics(confident.repeat(3, 1, 1), unsure.repeat(3, 1, 1))
    assert "ood_auroc_mi" in sampled


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"\[S, N, K\]"):
        uncertainty_scores(torch.rand(3, 4))
