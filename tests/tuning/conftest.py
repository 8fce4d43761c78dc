"""Fixtures for the tuning tests: an output directory with a ready MLflow store (a copy of
tests/conftest.py's ``mlflow_template``)."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture
def output_dir(tmp_path, mlflow_template, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(mlflow_template, out / "mlflow.db")
    return out
