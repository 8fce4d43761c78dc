"""Running the bench CLI from tests, in a fresh interpreter as a user would."""

from __future__ import annotations

import os
import subprocess
import sys

# A smoke run of the whole pipeline on the tiny random model: seconds, not minutes.
TINY_RUN = [
    "--model",
    "tiny-random-llama",
    "--quick",
    "--steps",
    "5",
    "--limit-eval",
    "16",
    "--no-progress",
]


def bench_subprocess(args, cwd, *, pythonpath=None) -> subprocess.CompletedProcess:
    """``python -m bayeslora.bench ARGS`` offline, with ``pythonpath`` (a fake site) if given."""
    return module_subprocess("bayeslora.bench", args, cwd, pythonpath=pythonpath)


def module_subprocess(module, args, cwd, *, pythonpath=None) -> subprocess.CompletedProcess:
    """``python -m MODULE ARGS`` offline, with ``pythonpath`` if given."""
    # PYTHONPATH passes through, so that a checkout on it is what the subprocess runs
    keep = ("PATH", "HOME", "BAYESLORA_CACHE", "PYTHONPATH")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env["HF_HUB_OFFLINE"] = "1"
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )
