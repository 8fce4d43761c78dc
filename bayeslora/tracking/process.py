"""Which process opened a run, so that a later process can tell a live run from an orphan.

A run is tagged with its process: host name, boot id, PID namespace, pid and start time. A
process killed with SIGKILL (or by the out-of-memory killer, or a power cut) cannot end its
runs, so they stay RUNNING; the next bench on the same host finds them and, when that
process is gone, marks them FAILED. What decides "gone", most certain first:

- another boot of this host (a different ``/proc/sys/kernel/random/boot_id``): gone;
- another PID namespace (a container sharing the host name): cannot tell, never gone;
- the pid's start time (``/proc/<pid>/stat``) differs from the tagged one: gone (the pid
  was reused); the same: alive;
- ``/proc`` does not show the pid (macOS, or ``hidepid`` hiding other users' processes):
  ``os.kill(pid, 0)`` decides, and a pid that exists, or that this user may not signal,
  is alive. So an orphan can stay RUNNING where nothing can tell; a live run is never
  ended.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

HOST_TAG = "bayeslora.host"
BOOT_TAG = "bayeslora.boot_id"
PID_NAMESPACE_TAG = "bayeslora.pid_namespace"
PID_TAG = "bayeslora.pid"
START_TAG = "bayeslora.process_start"


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks after boot (``/proc/<pid>/stat`` field 22)."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    # the command name (field 2) is in parentheses and may hold spaces: split after it
    return stat.rsplit(")", 1)[1].split()[19]


def process_tags() -> dict[str, str]:
    """Tags naming this process."""
    pid = os.getpid()
    return {
        HOST_TAG: socket.gethostname(),
        BOOT_TAG: _read("/proc/sys/kernel/random/boot_id"),
        PID_NAMESPACE_TAG: _pid_namespace(),
        PID_TAG: str(pid),
        START_TAG: _start_time(pid) or "",
    }


def is_gone(tags: dict[str, str]) -> bool:
    """Whether the process named by a run's ``process_tags`` has certainly ended (see the
    module docstring). Runs of other hosts, or without the tags, are never taken for gone."""
    here = process_tags()
    if tags.get(HOST_TAG) != here[HOST_TAG] or not tags.get(PID_TAG, "").isdigit():
        return False
    if tags.get(BOOT_TAG) and here[BOOT_TAG] and tags[BOOT_TAG] != here[BOOT_TAG]:
        return True  # the machine rebooted since
    if tags.get(PID_NAMESPACE_TAG, "") != here[PID_NAMESPACE_TAG]:
        return False
    pid = int(tags[PID_TAG])
    if pid == os.getpid():
        return False
    started = _start_time(pid)
    if started is not None:
        return bool(tags.get(START_TAG)) and started != tags[START_TAG]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by someone else
        return False
    return False
