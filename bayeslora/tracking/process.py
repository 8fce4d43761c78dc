"""Which process opened a run, so that a later process can tell a live run from an orphan.

A run is tagged with its process's host, pid and start time. A process killed with SIGKILL
(or by the out-of-memory killer, or a power cut) cannot end its runs, so they stay RUNNING;
the next bench on the same host finds them and, when that process is gone, marks them
FAILED. The start time guards against a recycled pid; where ``/proc`` is missing (macOS)
the check falls back to "is some process with this pid alive", which can keep an orphan
RUNNING if its pid was reused, never end a live run.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

HOST_TAG = "bayeslora.host"
PID_TAG = "bayeslora.pid"
START_TAG = "bayeslora.process_start"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks after boot (``/proc/<pid>/stat`` field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces: split after it
    return stat.rsplit(")", 1)[1].split()[19]


def process_tags() -> dict[str, str]:
    """Tags naming this process."""
    pid = os.getpid()
    return {
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(pid),
        START_TAG: _start_time(pid) or "",
    }


def is_gone(tags: dict[str, str]) -> bool:
    """Whether the process named by a run's ``process_tags`` has ended. Runs from other
    hosts, or without the tags, are never taken for gone: nothing here can tell."""
    if tags.get(HOST_TAG) != socket.gethostname() or not tags.get(PID_TAG, "").isdigit():
        return False
    pid = int(tags[PID_TAG])
    if pid == os.getpid():
        return False
    if Path("/proc/self/stat").exists():
        started = _start_time(pid)
        return started is None or (bool(tags.get(START_TAG)) and started != tags[START_TAG])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by someone else
        return False
    return False
