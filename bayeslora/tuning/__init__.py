"""Optuna tuning of every method with the same budget, on data the results never use.

``python -m bayeslora.bench --tune`` builds a :class:`Tuner` and hands it to the bench
runner; see ``bayeslora/tuning/README.md`` for the search spaces, storage, workers and MLflow layout.
"""

from bayeslora.tuning.tuner import Tuner

__all__ = ["Tuner"]
