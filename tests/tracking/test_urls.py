"""Masking of secrets in tracking and storage URLs."""

import pytest

from bayeslora.tracking.urls import mask_url


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://user:SECRET@db:5432/optuna", "postgresql://user:***@db:5432/optuna"),
        ("http://me:SECRET@127.0.0.1:5000", "http://me:***@127.0.0.1:5000"),
        ("postgresql://u:SECRET@[::1]:5432/db", "postgresql://u:***@[::1]:5432/db"),  # IPv6
        ("postgresql://u:SECRET@h:abc/db", "postgresql://u:***@h:abc/db"),  # a bad port too
        ("postgresql://u@h/db?password=SECRET&sslmode=require", "postgresql://u@h/db?password=***&sslmode=require"),
        ("sqlite:///runs/x.db?token=SECRET", "sqlite:///runs/x.db?token=***"),
        ("mysql+pymysql://u:p%40SECRET@h/db", "mysql+pymysql://u:***@h/db"),
    ],
)  # fmt: skip
def test_secrets_are_masked_and_the_rest_kept(url, masked):
    assert mask_url(url) == masked
    assert "SECRET" not in mask_url(url)


@pytest.mark.parametrize(
    "url", [None, "", "sqlite:///runs/mlflow.db", "http://127.0.0.1:5000", "runs/x", "u@h"]
)
def test_urls_without_secrets_are_unchanged(url):
    assert mask_url(url) == url
