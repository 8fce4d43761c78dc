"""Fixtures for the tuning tests: an output directory with a ready MLflow store (creating
one runs MLflow's migrations, ~10 s each on this machine)."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory):
    """An empty, migrated MLflow SQLite store, copied into each test's output directory."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    store = SqlAlchemyStore(f"sqlite:///{path}", str(path.parent / "artifacts"))
    store.engine.dispose()
    return path


@pytest.fixture
def output_dir(tmp_path, mlflow_template, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(mlflow_template, out / "mlflow.db")
    return out
