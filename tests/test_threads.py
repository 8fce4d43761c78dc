import os
import subprocess
import sys
import warnings

import pytest
import torch

from bayeslora import threads
from bayeslora.threads import (
    OversubscriptionWarning,
    WorkerEntry,
    fair_share,
    live_workers,
    worker_threads,
)


@pytest.fixture
def workers(tmp_path, monkeypatch):
    """An empty registry of this test's own; the process pretends to have 4 cores."""
    monkeypatch.setenv("BAYESLORA_WORKERS_DIR", str(tmp_path))
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    return tmp_path


@pytest.fixture
def sleeper():
    """Another live process to register as a worker."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def _register(directory, pid, threads_=None):
    import json

    (directory / f"{pid}.json").write_text(json.dumps({"pid": pid, "threads": threads_}))


def test_fair_share_splits_the_cores_left_by_fixed_workers():
    auto = [WorkerEntry(1, None), WorkerEntry(2, None)]
    assert fair_share(auto, 1, cores=2) == 1
    assert fair_share(auto, 1, cores=8) == 4
    assert fair_share([WorkerEntry(1, None), WorkerEntry(2, 3)], 1, cores=4) == 1
    assert fair_share([WorkerEntry(1, 3), WorkerEntry(2, None)], 1, cores=2) == 3  # fixed is fixed
    many = [WorkerEntry(i, None) for i in range(5)]
    assert fair_share(many, 0, cores=2) == 1  # never 0
    three = [WorkerEntry(p, None) for p in (30, 10, 20)]
    assert [fair_share(three, p, cores=4) for p in (10, 20, 30)] == [2, 1, 1]  # no core idle
    assert fair_share([], 7, cores=4) == 4  # not registered yet: as if alone


def test_a_worker_takes_all_cores_alone_and_restores_torch_afterwards(workers):
    before = torch.get_num_threads()
    with worker_threads() as worker:
        assert (workers / f"{os.getpid()}.json").exists()
        assert worker.threads == 4 == torch.get_num_threads()
        with worker_threads(1) as inner:  # nested: the outer registration holds
            assert inner is worker
    assert not (workers / f"{os.getpid()}.json").exists()
    assert torch.get_num_threads() == before
    assert threads.current_threads() is None


def test_workers_rebalance_as_others_start_and_end(workers, sleeper, monkeypatch):
    monkeypatch.setattr(threads, "REBALANCE_INTERVAL_S", 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OversubscriptionWarning)
        with worker_threads() as worker:
            assert worker.threads == 4
            _register(workers, sleeper)
            threads.rebalance()
            assert worker.threads == 2 == torch.get_num_threads()
            (workers / f"{sleeper}.json").unlink()
            threads.rebalance()
            assert worker.history == [4, 2, 4]


def test_dead_workers_are_forgotten(workers):
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = int(proc.stdout)
    _register(workers, dead)
    (workers / "garbage.json").write_text("{not json")
    assert live_workers(workers) == []
    assert not (workers / f"{dead}.json").exists()


def test_a_reused_pid_is_not_a_live_worker(workers):
    import json

    (workers / "self.json").write_text(json.dumps({"pid": os.getpid(), "start": "1"}))
    assert live_workers(workers) == []  # our pid, but a process that started at another time
    start = threads._process_start(os.getpid())
    (workers / "self.json").write_text(json.dumps({"pid": os.getpid(), "start": start}))
    assert live_workers(workers) == [WorkerEntry(os.getpid(), None)]


def test_fixed_threads_beyond_the_cores_warn(workers, sleeper):
    _register(workers, sleeper, threads_=4)
    with pytest.warns(OversubscriptionWarning, match="ask for 8 threads on 4 cores"):
        with worker_threads(4):
            pass


def test_busy_cores_of_other_processes_warn_once(workers, monkeypatch):
    monkeypatch.setattr(threads, "REBALANCE_INTERVAL_S", 0.0)
    monkeypatch.setattr(threads._BusyCores, "others", lambda self: 3.0)
    with pytest.warns(OversubscriptionWarning, match="other processes kept 3.0") as caught:
        with worker_threads():
            threads.rebalance()
            threads.rebalance()
    assert len([w for w in caught if w.category is OversubscriptionWarning]) == 1


def test_threads_must_be_positive(workers):
    with pytest.raises(ValueError, match="--threads must be >= 1"):
        with worker_threads(0):
            pass


def test_rebalance_outside_a_worker_does_nothing():
    before = torch.get_num_threads()
    threads.rebalance()
    assert torch.get_num_threads() == before
