"""Optuna tuning of every method with the same budget, on data the results never use.

``python -m bayeslora.bench --tune`` builds a :class:`Tuner` and hands it to the bench
runner; see ``bayeslora/tuning/README.md`` for the search spaces, storage, workers and
the MLflow layout.
"""

__all__ = ["Tuner"]


def __getattr__(name: str):
    # Lazy: bayeslora.tuning.storage and .study must not pull in torch (worker processes).
    if name == "Tuner":
        from bayeslora.tuning.tuner import Tuner

        return Tuner
    raise AttributeError(f"module 'bayeslora.tuning' has no attribute {name!r}")
