"""Tests for bayeslora.metrics.collection.CalibrationMetrics (the stateful shell).

The functional core is tested against an independent reference in test_functional.py;
here we check that accumulating batches changes nothing: any split of the data gives
exactly what one call on all of it gives.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bayeslora.metrics import CalibrationMetrics, calibration_metrics, reliability_bins


def random_data(seed: int, n: int = 300, k: int = 4, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=generator) * 2
    probs = torch.softmax(logits, dim=-1).to(dtype)
    labels = torch.randint(0, k, (n,), generator=generator)
    return probs, labels


def split(tensor: torch.Tensor, sizes: list[int]) -> tuple[torch.Tensor, ...]:
    return torch.split(tensor, sizes)


@pytest.mark.parametrize("sizes", [[300], [100, 100, 100], [1, 7, 92, 200], [299, 1]])
@pytest.mark.parametrize("n_bins", [1, 10, 15])
def test_chunked_updates_equal_one_call(sizes, n_bins):
    probs, labels = random_data(seed=0)
    metrics = CalibrationMetrics(n_bins=n_bins)
    for p, y in zip(split(probs, sizes), split(labels, sizes), strict=True):
        metrics.update(p, y)

    assert metrics.num_examples == 300
    # Same numbers, not just close: compute() runs the same code on the same data.
    assert metrics.compute() == calibration_metrics(probs, labels, n_bins=n_bins)


def test_compute_does_not_consume_the_state():
    probs, labels = random_data(seed=1)
    metrics = CalibrationMetrics()
    metrics.update(probs[:150], labels[:150])
    first_half = metrics.compute()
    assert first_half == calibration_metrics(probs[:150], labels[:150])
    metrics.update(probs[150:], labels[150:])
    assert metrics.compute() == calibration_metrics(probs, labels)


def test_reset_forgets_everything():
    probs, labels = random_data(seed=2)
    other_probs, other_labels = random_data(seed=3)
    metrics = CalibrationMetrics()
    metrics.update(probs, labels)
    metrics.reset()

    assert metrics.num_examples == 0
    with pytest.raises(RuntimeError, match="call update"):
        metrics.compute()
    metrics.update(other_probs, other_labels)
    assert metrics.compute() == calibration_metrics(other_probs, other_labels)


def test_compute_before_update_raises():
    with pytest.raises(RuntimeError, match="no data"):
        CalibrationMetrics().compute()
    with pytest.raises(RuntimeError, match="no data"):
        CalibrationMetrics().reliability_diagram_data()


def test_n_bins_is_used_and_can_be_changed():
    probs, labels = random_data(seed=4)
    metrics = CalibrationMetrics(n_bins=15)
    metrics.update(probs, labels)
    assert metrics.compute() == calibration_metrics(probs, labels, n_bins=15)
    # All data is kept, so a different binning can be computed afterwards.
    metrics.n_bins = 1
    assert metrics.compute() == calibration_metrics(probs, labels, n_bins=1)


@pytest.mark.parametrize("n_bins", [0, -1, 2.5, True])
def test_bad_n_bins(n_bins):
    with pytest.raises(ValueError, match="n_bins must be a positive integer"):
        CalibrationMetrics(n_bins=n_bins)


def test_update_copies_its_inputs():
    probs, labels = random_data(seed=5)
    expected = calibration_metrics(probs, labels)
    metrics = CalibrationMetrics()
    metrics.update(probs, labels)
    probs.fill_(0.25)  # the caller reuses its buffers
    labels.zero_()
    assert metrics.compute() == expected


def test_update_accepts_tensors_that_require_grad():
    probs, labels = random_data(seed=6)
    metrics = CalibrationMetrics()
    metrics.update(probs.clone().requires_grad_(True), labels)
    assert metrics.compute() == calibration_metrics(probs, labels)


def test_labels_of_any_integer_dtype():
    probs, labels = random_data(seed=7)
    metrics = CalibrationMetrics()
    metrics.update(probs[:100], labels[:100].to(torch.int32))
    metrics.update(probs[100:], labels[100:])
    assert metrics.compute() == calibration_metrics(probs, labels)


def test_bad_batch_is_rejected_at_update():
    probs, labels = random_data(seed=8)
    metrics = CalibrationMetrics()
    metrics.update(probs, labels)
    with pytest.raises(ValueError, match="softmax"):
        metrics.update(torch.randn(5, 4), torch.zeros(5, dtype=torch.int64))  # logits
    # The bad batch was not kept.
    assert metrics.compute() == calibration_metrics(probs, labels)


def test_batches_must_agree_on_classes_and_dtype():
    probs, labels = random_data(seed=9)
    metrics = CalibrationMetrics()
    metrics.update(probs, labels)
    five_class_probs, five_class_labels = random_data(seed=10, n=10, k=5)
    with pytest.raises(ValueError, match="K=5 classes but earlier batches had K=4"):
        metrics.update(five_class_probs, five_class_labels)
    with pytest.raises(ValueError, match="dtype torch.float64 but earlier batches had"):
        metrics.update(probs.double(), labels)


def test_reliability_diagram_data():
    probs, labels = random_data(seed=11)
    metrics = CalibrationMetrics(n_bins=15)
    for p, y in zip(split(probs, [120, 180]), split(labels, [120, 180]), strict=True):
        metrics.update(p, y)
    data = metrics.reliability_diagram_data()
    bins = reliability_bins(probs, labels, n_bins=15)

    assert set(data) == {"confidence", "accuracy", "count", "edges"}
    assert all(isinstance(value, np.ndarray) for value in data.values())
    assert data["count"].sum() == 300
    np.testing.assert_array_equal(data["count"], bins.count.numpy())
    np.testing.assert_array_equal(data["confidence"], bins.confidence.numpy())  # NaN == NaN here
    np.testing.assert_array_equal(data["accuracy"], bins.accuracy.numpy())
    np.testing.assert_allclose(data["edges"], np.arange(16) / 15)
    # Every non-empty bin's mean confidence lies inside the bin.
    filled = data["count"] > 0
    assert np.all(data["confidence"][filled] >= data["edges"][:-1][filled])
    assert np.all(data["confidence"][filled] <= data["edges"][1:][filled])
