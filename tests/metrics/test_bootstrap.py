import numpy as np
import pytest
import torch

from bayeslora.metrics.bootstrap import paired_bootstrap
from bayeslora.metrics.functional import accuracy, brier, ece, nll


def _probs(n, k, seed):
    rng = np.random.default_rng(seed)
    return torch.tensor(rng.dirichlet(np.ones(k), size=n))


def test_identical_predictions_differ_by_exactly_zero():
    probs, labels = (
        _probs(50, 4, 0),
        torch.randint(4, (50,), generator=torch.Generator().manual_seed(0)),
    )
    result = paired_bootstrap(probs, probs, labels, n_resamples=50)
    assert all(r == {"diff": 0.0, "low": 0.0, "high": 0.0} for r in result.values())


def test_a_clearly_better_method_has_an_interval_above_zero():
    labels = torch.randint(4, (400,), generator=torch.Generator().manual_seed(1))
    good = torch.full((400, 4), 0.1).scatter_(1, labels[:, None], 0.7)
    guess = torch.full((400, 4), 0.25)
    result = paired_bootstrap(good, guess, labels, n_resamples=200)
    assert result["accuracy"]["low"] > 0.5 and result["nll"]["high"] < 0
    assert result["accuracy"]["low"] <= result["accuracy"]["diff"] <= result["accuracy"]["high"]


def test_interval_matches_a_numpy_reference():
    """Same resampled indices, textbook percentile interval of the accuracy difference."""
    a, b = _probs(120, 3, 2), _probs(120, 3, 3)
    labels = torch.randint(3, (120,), generator=torch.Generator().manual_seed(4))
    result = paired_bootstrap(a, b, labels, n_resamples=300, seed=7)
    generator = torch.Generator().manual_seed(7)
    diffs = []
    for _ in range(300):
        idx = torch.randint(120, (120,), generator=generator)
        ia = idx.numpy()
        acc_a = (a.numpy()[ia].argmax(1) == labels.numpy()[ia]).mean()
        acc_b = (b.numpy()[ia].argmax(1) == labels.numpy()[ia]).mean()
        diffs.append(acc_a - acc_b)
    assert result["accuracy"]["low"] == pytest.approx(
        np.quantile(diffs, 0.025), abs=1e-6
    )  # accuracy comes back from torchmetrics in float32
    assert result["accuracy"]["high"] == pytest.approx(
        np.quantile(diffs, 0.975), abs=1e-6
    )  # accuracy comes back from torchmetrics in float32


def test_registry_metrics_give_the_same_numbers_as_the_fixed_list():
    """The bootstrap draws over the registry; the results equal a direct computation with
    the functional metrics (the former fixed dict) on the same resampled indices."""
    a, b = _probs(60, 3, 5), _probs(60, 3, 6)
    labels = torch.randint(3, (60,), generator=torch.Generator().manual_seed(8))
    result = paired_bootstrap(a, b, labels, n_resamples=40, seed=3)
    assert list(result) == ["accuracy", "ece", "nll", "brier"]  # mce is not bootstrapped
    functions = {"accuracy": accuracy, "nll": nll, "ece": ece, "brier": brier}
    generator = torch.Generator().manual_seed(3)
    draws = {name: [] for name in functions}
    for _ in range(40):
        idx = torch.randint(60, (60,), generator=generator)
        for name, fn in functions.items():
            draws[name].append((fn(a[idx], labels[idx]) - fn(b[idx], labels[idx])).item())
    tail = (1 - 0.95) / 2  # as paired_bootstrap computes it (0.025 + 2e-17)
    for name, fn in functions.items():
        values = torch.tensor(draws[name], dtype=torch.float64)
        assert result[name] == {
            "diff": (fn(a, labels) - fn(b, labels)).item(),
            "low": torch.quantile(values, tail).item(),
            "high": torch.quantile(values, 1 - tail).item(),
        }


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="same examples"):
        paired_bootstrap(_probs(5, 2, 0), _probs(6, 2, 0), torch.zeros(5, dtype=torch.long))
