"""The data and code parts of a cell's key (the model part is ``models/identity.py``)."""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version

# Logged with every run.
LIBRARIES = (
    "bayeslora",
    "torch",
    "transformers",
    "peft",
    "torchmetrics",
    "mlflow",
    "optuna",
    "bitsandbytes",
    "laplace-torch",
)
# Part of the key: the libraries whose upgrade can change what a cell computes. An
# upgrade of one of them reruns cells rather than mixing results of two versions.
KEY_LIBRARIES = ("bayeslora", "torch", "transformers", "peft")


def library_versions(names: Iterable[str] = LIBRARIES) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def code_identity() -> dict[str, str]:
    return library_versions(KEY_LIBRARIES)


def examples_digest(examples: Iterable) -> str:
    """sha256 of the exact examples, in order: id, prompt text (the template applied) and label."""
    digest = hashlib.sha256()
    for e in examples:
        digest.update(json.dumps([e.id, e.prompt, e.label]).encode())
        digest.update(b"\n")
    return digest.hexdigest()
