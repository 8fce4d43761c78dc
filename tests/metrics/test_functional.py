"""Tests for bayeslora.metrics.functional.

Each metric is compared with a reference written below from the textbook definition in
plain Python/numpy loops. The reference shares no code with the implementation (no
torch arithmetic, no torchmetrics), so a bug in one shows up as a disagreement.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from bayeslora.metrics import (
    accuracy,
    brier,
    calibration_metrics,
    ece,
    mce,
    nll,
    reliability_bins,
)
from bayeslora.metrics.functional import DEFAULT_NLL_EPS, BinEdges

# --------------------------------------------------------------------------- reference


def ref_top_label(row: np.ndarray) -> tuple[int, float]:
    """Predicted class and its probability; on a tie the first maximum wins (torch.argmax)."""
    best = 0
    for k in range(1, len(row)):
        if row[k] > row[best]:
            best = k
    return best, float(row[best])


def ref_accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    hits = sum(ref_top_label(row)[0] == y for row, y in zip(probs, labels, strict=True))
    return hits / len(labels)


def ref_nll(probs: np.ndarray, labels: np.ndarray, eps: float = 1e-12) -> float:
    return sum(-math.log(max(row[y], eps)) for row, y in zip(probs, labels, strict=True)) / len(
        labels
    )


def ref_brier(probs: np.ndarray, labels: np.ndarray) -> float:
    total = 0.0
    for row, y in zip(probs, labels, strict=True):
        total += sum((p - (1.0 if k == y else 0.0)) ** 2 for k, p in enumerate(row))
    return total / len(labels)


def ref_bins(
    probs: np.ndarray, labels: np.ndarray, n_bins: int, edge_dtype=np.float64, edges="right"
):
    """Per-bin (count, confidence sum, correct count); bins (m/M, (m+1)/M], the first
    closed (``edges="right"``), or [m/M, (m+1)/M), the last closed (``"left"``).

    The edges m/M are rounded to the input's precision (``edge_dtype``), the documented
    convention for confidences that lie exactly on an edge.
    """
    left = edges == "left"
    edges = [float(edge_dtype(m / n_bins)) for m in range(n_bins + 1)]
    count = [0] * n_bins
    conf_sum = [0.0] * n_bins
    correct = [0] * n_bins
    for row, y in zip(probs, labels, strict=True):
        predicted, confidence = ref_top_label(row)
        b = 0
        while b < n_bins - 1 and (
            confidence >= edges[b + 1] if left else confidence > edges[b + 1]
        ):
            b += 1
        count[b] += 1
        conf_sum[b] += confidence
        correct[b] += int(predicted == y)
    return count, conf_sum, correct


def ref_gaps(
    probs, labels, n_bins, edge_dtype=np.float64, edges="right"
) -> list[tuple[float, float]]:
    """(weight, |accuracy - confidence|) of every non-empty bin."""
    count, conf_sum, correct = ref_bins(probs, labels, n_bins, edge_dtype, edges)
    n = len(labels)
    return [
        (c / n, abs(h / c - s / c)) for c, s, h in zip(count, conf_sum, correct, strict=True) if c
    ]


def ref_ece(probs, labels, n_bins, edge_dtype=np.float64, edges="right") -> float:
    return sum(w * g for w, g in ref_gaps(probs, labels, n_bins, edge_dtype, edges))


def ref_mce(probs, labels, n_bins, edge_dtype=np.float64) -> float:
    return max(g for _, g in ref_gaps(probs, labels, n_bins, edge_dtype))


NUMPY_DTYPE = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}


def as_numpy(probs: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The exact values of the inputs, in float64, for the reference."""
    return probs.to(torch.float64).numpy(), labels.numpy()


# --------------------------------------------------------------------------- test data


def random_case(seed: int, n: int, k: int, dtype: torch.dtype = torch.float32):
    """Dirichlet-random probabilities, labels partly drawn from them (so partly right)."""
    rng = np.random.default_rng(seed)
    alpha = [0.3, 1.0, 5.0][seed % 3]  # very peaked, flat-ish and near-uniform rows
    probs = rng.dirichlet(np.full(k, alpha), size=n)
    labels = np.array(
        [rng.choice(k, p=row) if rng.random() < 0.7 else rng.integers(k) for row in probs]
    )
    return torch.tensor(probs, dtype=dtype), torch.tensor(labels, dtype=torch.int64)


def one_hot(classes: list[int], k: int, dtype=torch.float64) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(classes), k).to(dtype)


# --------------------------------------------------------------------------- against the reference


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [2, 4, 5])
@pytest.mark.parametrize("n", [1, 7, 100, 1000])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference_on_random_inputs(seed, n, k, dtype):
    probs, labels = random_case(seed, n, k, dtype)
    p, y = as_numpy(probs, labels)
    edge_dtype = NUMPY_DTYPE[dtype]

    # torchmetrics counts in float32, hence the looser tolerance for accuracy only.
    assert accuracy(probs, labels).item() == pytest.approx(ref_accuracy(p, y), abs=1e-7)
    assert nll(probs, labels).item() == pytest.approx(ref_nll(p, y), rel=1e-12)
    assert brier(probs, labels).item() == pytest.approx(ref_brier(p, y), rel=1e-12, abs=1e-15)
    for n_bins in (1, 10, 15):
        expected_ece = ref_ece(p, y, n_bins, edge_dtype)
        expected_mce = ref_mce(p, y, n_bins, edge_dtype)
        assert ece(probs, labels, n_bins).item() == pytest.approx(expected_ece, abs=1e-12)
        assert mce(probs, labels, n_bins).item() == pytest.approx(expected_mce, abs=1e-12)
        assert expected_mce >= expected_ece - 1e-12  # a max is at least a weighted mean


@pytest.mark.parametrize("n_bins", [1, 10, 15])
def test_reliability_bins_match_reference(n_bins):
    probs, labels = random_case(seed=3, n=500, k=4)
    p, y = as_numpy(probs, labels)
    count, conf_sum, correct = ref_bins(p, y, n_bins, np.float32)
    bins = reliability_bins(probs, labels, n_bins)

    assert bins.count.tolist() == count
    for m in range(n_bins):
        if count[m]:
            assert bins.confidence[m].item() == pytest.approx(conf_sum[m] / count[m], abs=1e-12)
            assert bins.accuracy[m].item() == pytest.approx(correct[m] / count[m], abs=1e-12)
        else:  # empty bins have no mean
            assert math.isnan(bins.confidence[m].item()) and math.isnan(bins.accuracy[m].item())


def test_calibration_metrics_dict():
    probs, labels = random_case(seed=4, n=50, k=5)
    result = calibration_metrics(probs, labels, n_bins=15)

    assert list(result)[:5] == ["accuracy", "ece", "nll", "brier", "mce"]  # the registry's order
    assert all(type(value) is float for value in result.values())  # MLflow wants floats
    assert result["accuracy"] == accuracy(probs, labels).item()
    assert result["nll"] == nll(probs, labels).item()
    assert result["ece"] == ece(probs, labels, 15).item()
    assert result["mce"] == mce(probs, labels, 15).item()
    assert result["brier"] == brier(probs, labels).item()
    assert result["ece"] != ece(probs, labels, 10).item()  # n_bins is passed on
    # the fixed-bin readings keep their own bin counts whatever n_bins is
    assert result["ece_20"] == ece(probs, labels, 20).item()


@pytest.mark.parametrize("metric", [accuracy, nll, ece, mce, brier])
def test_returns_0dim_float64_tensor(metric):
    probs, labels = random_case(seed=5, n=10, k=3)
    value = metric(probs, labels)
    assert isinstance(value, torch.Tensor)
    assert value.shape == () and value.dtype == torch.float64


def test_accuracy_is_micro_not_torchmetrics_default_macro():
    # 3 of 4 right overall, but recall is 3/3 for class 0 and 0/1 for class 1: macro
    # averaging (torchmetrics' default) would give 0.5.
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    labels = torch.tensor([0, 0, 0, 1])
    assert accuracy(probs, labels).item() == 0.75


# --------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("k", [2, 5])
def test_all_confident_and_right(k):
    labels = [0, 1, 1, 0, 1]
    probs, y = one_hot(labels, k), torch.tensor(labels)
    # Every confidence is exactly 1.0, the value torchmetrics puts in a bin of its own.
    assert accuracy(probs, y).item() == 1.0
    assert nll(probs, y).item() == 0.0
    assert ece(probs, y).item() == 0.0
    assert mce(probs, y).item() == 0.0
    assert brier(probs, y).item() == 0.0


@pytest.mark.parametrize("k", [2, 5])
def test_all_confident_and_wrong(k):
    labels = [0, 1, 1, 0, 1]
    predicted = [(c + 1) % k for c in labels]
    probs, y = one_hot(predicted, k), torch.tensor(labels)
    assert accuracy(probs, y).item() == 0.0
    assert ece(probs, y).item() == 1.0
    assert mce(probs, y).item() == 1.0
    assert brier(probs, y).item() == 2.0  # the maximum
    # Large but finite: -log(eps), not inf.
    assert nll(probs, y).item() == pytest.approx(-math.log(DEFAULT_NLL_EPS))
    assert nll(probs, y, eps=1e-6).item() == pytest.approx(-math.log(1e-6))


def test_all_predictions_in_one_bin():
    confidences = [0.61, 0.63, 0.65, 0.67, 0.69]
    probs = torch.tensor([[c, 1 - c] for c in confidences], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 0, 1])  # 3 of 5 right
    expected = abs(0.6 - sum(confidences) / 5)

    assert reliability_bins(probs, labels).count.tolist() == [0] * 6 + [5] + [0] * 3
    assert ece(probs, labels).item() == pytest.approx(expected, abs=1e-15)
    assert mce(probs, labels).item() == pytest.approx(expected, abs=1e-15)
    assert ece(probs, labels, n_bins=1).item() == pytest.approx(expected, abs=1e-15)


def test_one_bin_is_accuracy_minus_mean_confidence():
    probs, labels = random_case(seed=6, n=200, k=4, dtype=torch.float64)
    p, y = as_numpy(probs, labels)
    mean_confidence = float(np.mean(p.max(axis=1)))
    expected = abs(ref_accuracy(p, y) - mean_confidence)
    assert ece(probs, labels, n_bins=1).item() == pytest.approx(expected, abs=1e-12)
    assert mce(probs, labels, n_bins=1).item() == pytest.approx(expected, abs=1e-12)


def test_confidence_one_shares_the_last_bin():
    # The textbook puts 0.95 and 1.0 in the same last bin [0.9, 1]: accuracy 1/2, mean
    # confidence 0.975. torchmetrics 1.9 gives 0.525 here (1.0 in a bin of its own).
    probs = torch.tensor([[0.95, 0.05], [1.0, 0.0]])
    labels = torch.tensor([0, 1])
    expected = abs(0.5 - (float(np.float32(0.95)) + 1.0) / 2)
    assert reliability_bins(probs, labels).count.tolist() == [0] * 9 + [2]
    assert ece(probs, labels).item() == pytest.approx(expected, abs=1e-15)
    assert mce(probs, labels).item() == pytest.approx(expected, abs=1e-15)
    assert ece(probs, labels, n_bins=1).item() == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("n_bins", "confidence", "right_bin", "left_bin"),
    [
        # an interior edge belongs to the bin below it (right-closed) or above it (left)
        (10, 0.3, 2, 3),
        (10, 0.5, 4, 5),
        (10, 0.7, 6, 7),  # even in float32, where float32(0.7) < 0.7: edges are rounded too
        (10, 1.0, 9, 9),  # 1.0 is in the last bin either way
        (4, 0.25, 0, 1),
        (4, 0.75, 2, 3),
        (15, 1.0, 14, 14),
        (1, 1.0, 0, 0),
    ],
)
def test_confidence_on_a_bin_edge(dtype, n_bins, confidence, right_bin, left_bin):
    k = 4
    rest = (1 - confidence) / (k - 1)  # <= confidence, so class 0 is the top label
    probs = torch.tensor([[confidence] + [rest] * (k - 1)], dtype=dtype)
    labels = torch.tensor([0])
    p, y = as_numpy(probs, labels)
    for edges, expected_bin in (("right", right_bin), ("left", left_bin)):
        count = reliability_bins(probs, labels, n_bins, edges=edges).count
        assert count.tolist() == [int(m == expected_bin) for m in range(n_bins)]
        # The reference agrees (it only shares the convention, not the code).
        assert ref_bins(p, y, n_bins, NUMPY_DTYPE[dtype], edges=edges)[0] == count.tolist()
    default = reliability_bins(probs, labels, n_bins).count  # the papers' convention
    assert default.tolist() == [int(m == right_bin) for m in range(n_bins)]


def test_confidence_just_below_an_edge_stays_below():
    below = float(np.nextafter(0.5, 0.0))
    probs = torch.tensor([[below, 0.3, 0.2]], dtype=torch.float64)
    assert reliability_bins(probs, torch.tensor([0])).count.argmax().item() == 4


def test_edge_convention_changes_ece():
    # Closed on the right (the default, Guo et al.), 0.5 (right) and 0.45 (wrong) share
    # (0.4, 0.5]: accuracy 0.5, confidence 0.475. Closed on the left, 0.5 is in
    # [0.5, 0.6) and 0.45 in [0.4, 0.5): two bins.
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.45, 0.35, 0.2]], dtype=torch.float64)
    labels = torch.tensor([0, 1])
    assert ece(probs, labels).item() == pytest.approx(0.025, abs=1e-15)
    assert ece(probs, labels, edges="right").item() == pytest.approx(0.025, abs=1e-15)
    left = ece(probs, labels, edges=BinEdges.LEFT).item()
    assert left == pytest.approx(0.5 * 0.5 + 0.5 * 0.45, abs=1e-15)
    with pytest.raises(ValueError, match="edges must be one of 'right', 'left'"):
        ece(probs, labels, edges="closed")


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("edges", ["right", "left"])
def test_both_conventions_match_the_reference_on_coarse_confidences(seed, edges):
    # confidences on a 0.05 grid: many lie exactly on edges, where the conventions differ
    gen = torch.Generator().manual_seed(seed)
    top = torch.randint(10, 21, (300,), generator=gen).double() / 20
    probs = torch.stack([top, 1 - top], 1)
    labels = torch.randint(0, 2, (300,), generator=gen)
    p, y = as_numpy(probs, labels)
    for n_bins in (4, 10, 20):
        expected = ref_ece(p, y, n_bins, edges=edges)
        assert ece(probs, labels, n_bins, edges).item() == pytest.approx(expected, abs=1e-12)


def test_ties_go_to_the_first_class():
    # Same rule as torch.argmax (and np.argmax), for accuracy and calibration alike.
    probs = torch.tensor([[0.4, 0.4, 0.2], [0.2, 0.4, 0.4], [0.5, 0.5, 0.0]])
    assert torch.equal(probs.argmax(dim=1), torch.tensor([0, 1, 0]))
    first = torch.tensor([0, 1, 0])
    second = torch.tensor([1, 2, 1])
    assert accuracy(probs, first).item() == 1.0
    assert accuracy(probs, second).item() == 0.0
    # confidences 0.4, 0.4, 0.5, all right or all wrong
    assert ece(probs, first, n_bins=1).item() == pytest.approx(1 - 1.3 / 3, abs=1e-7)
    assert ece(probs, second, n_bins=1).item() == pytest.approx(1.3 / 3, abs=1e-7)


def test_rows_summing_to_one_up_to_rounding_are_used_as_given():
    probs = torch.tensor(
        [[0.6 + 1e-6, 0.4], [0.3, 0.7 + 1e-6], [0.9 - 1e-6, 0.1]], dtype=torch.float64
    )
    labels = torch.tensor([0, 1, 1])
    p, y = as_numpy(probs, labels)
    result = calibration_metrics(probs, labels)

    assert result["nll"] == pytest.approx(ref_nll(p, y), abs=1e-14)
    assert result["brier"] == pytest.approx(ref_brier(p, y), abs=1e-14)
    assert result["ece"] == pytest.approx(ref_ece(p, y, 10), abs=1e-14)
    # Not renormalised: that would move NLL by ~1e-6.
    renormalised = p / p.sum(axis=1, keepdims=True)
    assert abs(result["nll"] - ref_nll(renormalised, y)) > 1e-8


def test_probability_slightly_above_one_is_not_softmaxed():
    # torchmetrics would take any value > 1 for a logit and softmax every row.
    probs = torch.tensor([[1.0000001, 0.0], [0.7, 0.3]])
    labels = torch.tensor([0, 1])
    c1, c2 = float(probs[0, 0]), float(probs[1, 0])
    assert c1 > 1.0
    assert ece(probs, labels).item() == pytest.approx((abs(1 - c1) + c2) / 2, abs=1e-15)
    assert mce(probs, labels).item() == pytest.approx(c2, abs=1e-15)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_softmax_outputs_are_accepted(dtype):
    logits = torch.randn(300, 5, generator=torch.Generator().manual_seed(7)) * 3
    probs = torch.softmax(logits.to(dtype), dim=-1)  # rows off by up to ~4e-3 in bf16
    labels = torch.randint(0, 5, (300,), generator=torch.Generator().manual_seed(8))
    p, y = as_numpy(probs, labels)
    # numpy has no bfloat16; torch rounds the reference's edges for it.
    edges = {m: float(torch.tensor(m / 10, dtype=torch.float64).to(dtype)) for m in range(11)}

    def edge_dtype(x):
        return edges[round(x * 10)]

    assert nll(probs, labels).item() == pytest.approx(ref_nll(p, y), rel=1e-12)
    assert brier(probs, labels).item() == pytest.approx(ref_brier(p, y), rel=1e-12)
    assert ece(probs, labels).item() == pytest.approx(ref_ece(p, y, 10, edge_dtype), abs=1e-12)
    assert mce(probs, labels).item() == pytest.approx(ref_mce(p, y, 10, edge_dtype), abs=1e-12)


def test_sum_tolerance_depends_on_dtype():
    # 5e-3 off is plausible rounding for bfloat16 but not for float32.
    row = [[0.5 + 5e-3, 0.5]]
    labels = torch.tensor([0])
    ece(torch.tensor(row, dtype=torch.bfloat16), labels)  # accepted
    with pytest.raises(ValueError, match="do not sum to 1"):
        ece(torch.tensor(row, dtype=torch.float32), labels)


def test_agrees_with_torchmetrics_away_from_its_edge_cases():
    # Float32 input, default 10 bins, no confidence of exactly 1.0: here torchmetrics'
    # calibration error is the textbook one, so the papers' numbers are comparable.
    from torchmetrics.functional.classification import multiclass_calibration_error

    for seed in range(6):
        probs, labels = random_case(seed, n=400, k=4)
        assert probs.max() < 1.0
        for norm, ours in (("l1", ece), ("max", mce)):
            theirs = multiclass_calibration_error(probs, labels, 4, n_bins=10, norm=norm)
            # torchmetrics closes its bins on the left
            assert ours(probs, labels, edges="left").item() == pytest.approx(
                theirs.item(), abs=1e-6
            )


# --------------------------------------------------------------------------- bad input

GOOD_PROBS = torch.tensor([[0.7, 0.3], [0.2, 0.8]])
GOOD_LABELS = torch.tensor([0, 1])


@pytest.mark.parametrize(
    ("probs", "labels", "message"),
    [
        (torch.tensor([0.7, 0.3]), torch.tensor([0]), r"probs must be 2-D .*unsqueeze"),
        (GOOD_PROBS, torch.tensor([[0], [1]]), r"labels must be 1-D"),
        (GOOD_PROBS, torch.tensor([0, 1, 1]), r"N=2 rows but labels has 3"),
        (torch.empty(0, 2), torch.empty(0, dtype=torch.int64), r"no examples"),
        (torch.ones(2, 1), GOOD_LABELS, r"K=1 .*at least 2 classes"),
        (GOOD_PROBS, torch.tensor([0, 2]), r"labels must be class indices in \[0, 2\)"),
        (GOOD_PROBS, torch.tensor([-1, 0]), r"1 of 2 are outside"),
        (GOOD_PROBS, torch.tensor([0.0, 1.0]), r"integer class indices.*labels\.long\(\)"),
        (GOOD_PROBS, torch.tensor([True, False]), r"integer class indices"),
        (torch.tensor([[1, 0], [0, 1]]), GOOD_LABELS, r"floating-point"),
        (torch.tensor([[float("nan"), 0.5], [0.5, 0.5]]), GOOD_LABELS, r"non-finite"),
        (torch.tensor([[float("inf"), 0.0], [0.5, 0.5]]), GOOD_LABELS, r"non-finite"),
        (torch.tensor([[1.2, -0.2], [0.5, 0.5]]), GOOD_LABELS, r"negative.*softmax"),
        (torch.tensor([[2.0, 3.0], [0.5, 0.5]]), GOOD_LABELS, r"1 of 2 rows .*softmax"),
        (torch.tensor([[0.5, 0.49], [0.5, 0.5]]), GOOD_LABELS, r"do not sum to 1"),
    ],
)
@pytest.mark.parametrize("metric", [accuracy, nll, ece, mce, brier, calibration_metrics])
def test_bad_input_raises_clear_error(metric, probs, labels, message):
    with pytest.raises(ValueError, match=message):
        metric(probs, labels)


def test_non_tensor_input_raises_type_error():
    with pytest.raises(TypeError, match=r"torch\.as_tensor"):
        ece(GOOD_PROBS.numpy(), GOOD_LABELS)


@pytest.mark.parametrize("n_bins", [0, -3, 2.5, True, "10"])
@pytest.mark.parametrize("metric", [ece, mce, reliability_bins, calibration_metrics])
def test_bad_n_bins(metric, n_bins):
    with pytest.raises(ValueError, match="n_bins must be a positive integer"):
        metric(GOOD_PROBS, GOOD_LABELS, n_bins=n_bins)


@pytest.mark.parametrize("eps", [0.0, -1e-3, 1.0, float("nan")])
def test_bad_nll_eps(eps):
    with pytest.raises(ValueError, match="eps must be a number in"):
        nll(GOOD_PROBS, GOOD_LABELS, eps=eps)


def test_inputs_are_not_modified():
    probs, labels = random_case(seed=9, n=20, k=3)
    probs_before, labels_before = probs.clone(), labels.clone()
    calibration_metrics(probs, labels)
    assert torch.equal(probs, probs_before) and torch.equal(labels, labels_before)


def test_import_does_not_load_torchmetrics():
    # torchmetrics' import pulls in transformers, scipy and matplotlib (seconds).
    code = "import sys, bayeslora.metrics; sys.exit('torchmetrics' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_selective_prediction_by_hand():
    from bayeslora.metrics.functional import accuracy_at_coverage, aurc

    # most confident first: 0.9 right, 0.7 right, 0.6 wrong, 0.55 right
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.55, 0.45]])
    labels = torch.tensor([0, 1, 1, 0])
    assert accuracy_at_coverage(probs, labels, 0.5).item() == 1.0
    assert accuracy_at_coverage(probs, labels, 0.8).item() == 0.75  # ceil(3.2) = 4 kept
    assert accuracy_at_coverage(probs, labels, 1.0).item() == accuracy(probs, labels).item()
    assert aurc(probs, labels).item() == pytest.approx((0 + 0 + 1 / 3 + 1 / 4) / 4, abs=1e-15)
    with pytest.raises(ValueError, match="coverage must be in"):
        accuracy_at_coverage(probs, labels, 0.0)


def test_adaptive_ece_uses_equal_mass_bins():
    from bayeslora.metrics.functional import adaptive_ece

    probs, labels = random_case(seed=5, n=97, k=3)
    # one bin: |accuracy - mean confidence|, as the equal-width ECE with one bin
    assert adaptive_ece(probs, labels, n_bins=1).item() == pytest.approx(
        ece(probs, labels, n_bins=1).item(), abs=1e-12
    )
    # as many bins as examples: the mean |correct - confidence| of single examples
    conf = probs.to(torch.float64).max(dim=1).values
    correct = (probs.argmax(dim=1) == labels).to(torch.float64)
    expected = (correct - conf).abs().mean().item()
    assert adaptive_ece(probs, labels, n_bins=97).item() == pytest.approx(expected, abs=1e-12)
    assert adaptive_ece(probs, labels, n_bins=500).item() == pytest.approx(expected, abs=1e-12)
