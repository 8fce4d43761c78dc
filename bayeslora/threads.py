"""How many threads torch may use, shared among the bench and tuning workers of one machine.

Why this exists: torch starts one intra-op thread per core in every process. Two bench
processes on a 2-core machine then run four busy threads on two cores, and OpenMP threads
that wait for each other at every operation collapse: measured, with four such processes a
training step went from 3 s to 45 s. So each worker registers itself (a small file per
process in a directory of this machine, see :func:`workers_dir`) and takes a fair share of
the cores, ``cores // workers``; a worker started with an explicit ``--threads N`` keeps N
and the others share what is left. Shares are recomputed between training steps and
evaluation batches (:func:`rebalance`, at most once a second): when a worker ends, the
others take its cores back.

torch.set_num_threads only affects the thread that calls it (OpenMP keeps the setting per
thread), so rebalancing happens on the main thread, inside the loops, not in a timer thread.

A second guard watches the machine rather than the registry: when other processes keep
more cores busy than this process leaves free (another framework, a probe, a process that
ignores the registry), it warns once, naming the numbers and the fix.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REBALANCE_INTERVAL_S = 1.0  # how often the loops may look at the registry
BUSY_WINDOW_S = 20.0  # how long a window the busy-core check averages over
BUSY_MARGIN = 0.5  # cores of slack before "oversubscribed" is called


class OversubscriptionWarning(RuntimeWarning):
    """More busy threads than cores on this machine: every step is slower than it should be."""


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    try:  # cgroup v2: "max 100000" or "<quota> <period>"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def workers_dir() -> Path:
    """Where the workers of this machine register: ``$BAYESLORA_WORKERS_DIR``, or a folder
    per user in the system's temporary directory."""
    configured = os.environ.get("BAYESLORA_WORKERS_DIR")
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / f"bayeslora-workers-{os.getuid()}"


def _process_start(pid: int) -> str | None:
    """The start time of ``pid`` (clock ticks since boot), which tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    return start is None or _process_start(pid) in (None, start)


@dataclass(frozen=True)
class WorkerEntry:
    pid: int
    threads: int | None  # None: takes a fair share


def live_workers(directory: Path | None = None) -> list[WorkerEntry]:
    """The registered workers whose processes still run; files of dead ones are removed."""
    directory = directory or workers_dir()
    entries = []
    for path in sorted(directory.glob("*.json")):
        try:
            record = json.loads(path.read_text())
            pid = int(record["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written, or not ours
        if _alive(pid, record.get("start")):
            entries.append(WorkerEntry(pid, record.get("threads")))
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    return entries


def check_threads(threads: int | None) -> None:
    if threads is not None and threads < 1:
        raise ValueError(
            f"--threads must be >= 1 (leave it out for a fair share of the cores), got {threads}"
        )


def fair_share(workers: list[WorkerEntry], me: int, cores: int) -> int:
    """Threads for worker ``me``: its own fixed number, or an equal part of the cores the
    fixed workers leave, the remainder going to the lowest pids (at least 1 each)."""
    mine = next((w for w in workers if w.pid == me), None)
    if mine is not None and mine.threads:
        return mine.threads
    free = cores - sum(w.threads for w in workers if w.threads)
    shared = sorted({w.pid for w in workers if not w.threads} | {me})
    share, extra = divmod(max(free, 0), len(shared))
    return max(1, share + (shared.index(me) < extra))


class _BusyCores:
    """Cores kept busy by *other* processes: the busy time of the CPUs this process may run
    on (/proc/stat's cpuN lines), minus this process's own CPU time."""

    def __init__(self) -> None:
        self.ticks = os.sysconf("SC_CLK_TCK")
        try:
            self.cpus = {f"cpu{i}" for i in os.sched_getaffinity(0)}
        except (AttributeError, OSError):
            self.cpus = set()
        self.last = self._read()

    def _read(self) -> tuple[float, float, float] | None:
        try:
            lines = Path("/proc/stat").read_text().splitlines()
            own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        busy = 0
        for line in lines:
            fields = line.split()
            if fields and fields[0] in self.cpus:
                # user, nice, system, irq, softirq: not idle, iowait or a hypervisor's steal
                busy += sum(int(fields[i]) for i in (1, 2, 3, 6, 7))
        return time.monotonic(), float(busy), float(int(own[11]) + int(own[12]))  # utime+stime

    def others(self) -> float | None:
        """Average number of cores other processes used since the last call (None: too soon)."""
        now = self._read()
        if now is None or self.last is None or now[0] - self.last[0] < BUSY_WINDOW_S:
            return None
        elapsed = now[0] - self.last[0]
        other_ticks = (now[1] - self.last[1]) - (now[2] - self.last[2])
        self.last = now
        return max(0.0, other_ticks / self.ticks / elapsed)


class Worker:
    """This process as a registered torch worker; use :func:`worker_threads`."""

    def __init__(self, threads: int | None, directory: Path | None = None):
        check_threads(threads)
        self.requested = threads
        self.directory = directory or workers_dir()
        self.cores = available_cores()
        self.pid = os.getpid()
        self.path = self.directory / f"{self.pid}.json"
        self.threads = 0
        self.history: list[int] = []  # every thread count this worker has run with
        self._next_check = 0.0
        self._busy = _BusyCores()
        self._warned = False
        self._threads_before: int | None = None

    def register(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        record = {"pid": self.pid, "start": _process_start(self.pid), "threads": self.requested}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self.path)  # never half a file for the others to read
        import torch

        self._threads_before = torch.get_num_threads()
        self.rebalance(force=True)

    def unregister(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()
        if self._threads_before is not None:  # the process may go on (tests, a notebook)
            import torch

            torch.set_num_threads(self._threads_before)

    def rebalance(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_check:
            return
        self._next_check = now + REBALANCE_INTERVAL_S
        workers = live_workers(self.directory)
        share = fair_share(workers, self.pid, self.cores)
        if share != self.threads:
            import torch

            torch.set_num_threads(share)
            self.threads = share
            self.history.append(share)
        self._check_oversubscription(workers)

    def _check_oversubscription(self, workers: list[WorkerEntry]) -> None:
        if self._warned:
            return
        registered = sum(w.threads or fair_share(workers, w.pid, self.cores) for w in workers)
        if registered > self.cores:
            self._warn(
                f"{len(workers)} bayeslora workers on this machine ask for {registered} threads "
                f"on {self.cores} cores"
            )
            return
        others = self._busy.others()
        if others is not None and others + self.threads > self.cores + BUSY_MARGIN:
            self._warn(
                f"other processes kept {others:.1f} of this machine's {self.cores} cores busy "
                f"while this one ran {self.threads} torch threads"
            )

    def _warn(self, what: str) -> None:
        self._warned = True
        warnings.warn(
            f"{what}: with more busy threads than cores every step slows down sharply "
            "(measured: 15x with four processes on two cores). Run fewer processes at once, "
            "or give each --threads N so that together they use at most the cores there are.",
            OversubscriptionWarning,
            stacklevel=3,
        )


_current: Worker | None = None


@contextlib.contextmanager
def worker_threads(threads: int | None = None) -> Iterator[Worker]:
    """Register this process as a worker for the duration of the block (nestable: an inner
    block reuses the outer registration) and set torch's thread count to its share."""
    global _current
    if _current is not None:
        yield _current
        return
    worker = Worker(threads)
    worker.register()
    _current = worker
    try:
        yield worker
    finally:
        _current = None
        worker.unregister()


def rebalance() -> None:
    """Take this worker's current fair share (cheap; a no-op outside :func:`worker_threads`)."""
    if _current is not None:
        _current.rebalance()


def current_threads() -> int | None:
    """The thread count of this process's registered worker, or None."""
    return _current.threads if _current is not None else None
