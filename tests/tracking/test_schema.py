"""The store's layout: the predictions artifact written and read back unchanged."""

import torch

from bayeslora.tracking.schema import predictions_payload, read_predictions


def test_predictions_round_trip_keeps_ids_labels_probs_and_dtype():
    probs = torch.tensor([[0.25, 0.75], [0.5, 0.5]], dtype=torch.float64)
    labels = torch.tensor([1, 0])
    payload = predictions_payload(("q1", "q2"), labels, probs)
    assert payload["dtype"] == "float64"
    ids, back_labels, back_probs = read_predictions(payload)
    assert ids == ["q1", "q2"] and torch.equal(back_labels, labels)
    assert back_probs.dtype == torch.float64 and torch.equal(back_probs, probs)


def test_predictions_without_ids_or_dtype_read_as_float32():
    ids, labels, probs = read_predictions({"labels": [0], "probs": [[0.9, 0.1]]})
    assert ids is None and labels.dtype == torch.long and probs.dtype == torch.float32
