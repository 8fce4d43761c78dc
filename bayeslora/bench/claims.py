"""Cell claims: which bench process on this machine is running which cell of a store.

A process holds a cell's claim (an OS file lock, released by the kernel if the process
dies) while it runs and records the cell. The locks live in a directory per tracking store
and experiment under the machine's temporary directory, not in ``--output-dir``, so that
two processes sharing a store through different output directories (or one
``MLFLOW_TRACKING_URI``) see each other's claims too. Processes on other machines do not:
claims are local, as ``filelock`` on a network file system is not reliable.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import filelock

WAIT_MESSAGE_EVERY_S = 60.0


def claims_dir(tracking_uri: str, experiment: str) -> Path:
    """One directory per (store, experiment) and user on this machine."""
    digest = hashlib.sha256(f"{tracking_uri}\0{experiment}".encode()).hexdigest()[:16]
    user = os.getuid() if hasattr(os, "getuid") else os.getlogin()
    return Path(tempfile.gettempdir()) / f"bayeslora-claims-{user}" / digest


class Claims:
    """The claims of one store: :meth:`try_claim` without waiting, :meth:`wait_for`."""

    def __init__(self, tracking_uri: str, experiment: str):
        self.directory = claims_dir(tracking_uri, experiment)
        self.directory.mkdir(parents=True, exist_ok=True)

    def lock(self, key: str) -> filelock.FileLock:
        return filelock.FileLock(self.directory / f"{key}.lock")

    def try_claim(self, key: str) -> filelock.FileLock | None:
        """The held lock of cell ``key``, or None when another process holds it."""
        lock = self.lock(key)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            return None
        return lock

    @contextmanager
    def wait_for(self, key: str, label: str) -> Iterator[None]:
        """Hold cell ``key``'s claim, waiting for the process that holds it, and saying so
        every minute."""
        lock = self.lock(key)
        print(f"bayeslora: waiting for {label}: another bench process runs it", file=sys.stderr)
        while True:
            try:
                lock.acquire(timeout=WAIT_MESSAGE_EVERY_S)
                break
            except filelock.Timeout:
                print(f"bayeslora: still waiting for {label}", file=sys.stderr)
        try:
            yield
        finally:
            lock.release()
