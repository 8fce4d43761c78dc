"""The data and code parts of a cell's key (the model part is ``models/identity.py``)."""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import subprocess
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import bayeslora
from bayeslora.methods.registry import available_methods, split_method_name

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
    "numpy",  # LoRA dropout's masks (SFC64, whose stream numpy keeps stable: not in the key)
)
# Part of every key: the libraries whose upgrade can change what any cell computes. An
# upgrade of one of them reruns cells rather than mixing results of two versions. A
# method adds its own (Method.key_libraries: laplace-torch for Laplace), a quantized model
# adds bitsandbytes.
KEY_LIBRARIES = ("torch", "transformers", "peft")


def library_versions(names: Iterable[str] = LIBRARIES) -> dict[str, str]:
    return {"python": platform.python_version(), **{n: version_or_missing(n) for n in names}}


def code_identity(method_name: str, method_cls, quantized: bool) -> dict[str, object]:
    """Which code computes a cell: bayeslora's own sources (a hash, so that an edit in a
    development checkout reruns cells too), the key libraries' versions, and where the
    method comes from (``built-in`` or ``plugin <distribution> <version>``)."""
    libraries = (*KEY_LIBRARIES, *method_cls.key_libraries)
    if quantized:
        libraries = (*libraries, "bitsandbytes")
    versions = {k: v for k, v in library_versions(libraries).items() if k != "python"}
    sources = available_methods()
    base, posthoc = split_method_name(method_name)
    return {
        "bayeslora": version_or_missing("bayeslora"),
        "bayeslora_sources": _sources_digest(),
        "libraries": versions,
        "method_sources": {name: sources.get(name, "in-process") for name in (base, *posthoc)},
    }


@functools.cache
def harness_identity() -> dict[str, str]:
    """Which bayeslora computed a result, for a reader (not part of any key: the sources'
    digest is): its version, the digest of its sources and, in a git checkout, the commit
    and whether the checkout has uncommitted changes."""
    identity = {"version": version_or_missing("bayeslora"), "sources": _sources_digest()}
    root = Path(bayeslora.__file__).parent.parent
    if (root / ".git").exists():
        git = ["git", "-C", str(root)]
        try:
            commit = subprocess.run(
                [*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
            )
            status = subprocess.run(
                [*git, "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=10,
            )
        except (OSError, subprocess.SubprocessError):  # no git on this machine
            return identity
        if commit.returncode == 0:
            identity["git_commit"] = commit.stdout.strip()
        if status.returncode == 0:  # git refuses some checkouts (ownership): then unknown
            identity["git_dirty"] = str(bool(status.stdout.strip())).lower()
    return identity


def version_or_missing(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


@functools.cache
def _sources_digest() -> str:
    root = Path(bayeslora.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(f"{path.relative_to(root)}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def examples_digest(examples: Iterable) -> str:
    """sha256 of the exact examples, in order: id, prompt text (the template applied), label,
    and under choices scoring each choice's (context, continuation)."""
    digest = hashlib.sha256()
    for e in examples:
        fields = [e.id, e.prompt, e.label] + ([e.scored] if e.scored else [])
        digest.update(json.dumps(fields).encode())
        digest.update(b"\n")
    return digest.hexdigest()
