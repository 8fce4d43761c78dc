"""The tuning objectives: metric names here, directions from the metric registry."""

import pytest

from bayeslora.tuning.objective import OBJECTIVES, objective_directions, objective_metrics


def test_objectives_take_their_directions_from_the_registry():
    assert objective_metrics("nll") == ["nll"]
    assert objective_directions("nll") == ["minimize"]
    assert objective_metrics("accuracy-ece") == ["accuracy", "ece"]
    assert objective_directions("accuracy-ece") == ["maximize", "minimize"]
    assert sorted(OBJECTIVES) == ["accuracy-ece", "nll"]


def test_unknown_objective_names_the_choices():
    with pytest.raises(
        ValueError, match=r"unknown objective 'ece'; choose one of \['accuracy-ece', 'nll'\]"
    ):
        objective_metrics("ece")
