"""Where studies live, so a tuning run resumes and several workers share one study.

``--storage`` takes:
- nothing: ``sqlite:///<output-dir>/optuna.db`` (resume by running the same command again);
- a database URL (``sqlite:///path.db``, ``postgresql://user@host/db``,
  ``mysql+pymysql://user@host/db``): optuna's RDBStorage, for workers on several machines;
- a file path ending in ``.log`` or ``.journal``: optuna's JournalStorage on that file,
  for several workers on one machine (or a shared NFS disk) without a database server.

Trials left RUNNING by a killed worker must not block the study nor count as done: every
storage gets a heartbeat (each running trial records one every ``heartbeat_interval`` s;
one silent for twice that is failed and retried with the same parameters by
``RetryHeartbeatStaleTrialCallback``). Optuna's RDBStorage has the heartbeat built in;
its JournalStorage has none, so :class:`HeartbeatJournalStorage` adds the same
interface, which optuna's optimize loop then drives as for a database.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat  # the interface optimize() drives
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

JOURNAL_SUFFIXES = (".log", ".journal")
MAX_RETRY = 2  # a trial whose worker dies three times (e.g. always OOM-killed) is dropped
_HEARTBEAT_ATTR = "bayeslora:heartbeat"


def default_storage(output_dir: str | Path) -> str:
    return f"sqlite:///{Path(output_dir).resolve() / 'optuna.db'}"


def open_storage(spec: str | None, output_dir: str | Path, heartbeat_interval: int = 60):
    """An optuna storage for ``spec`` (see the module docstring) with a heartbeat."""
    spec = spec or default_storage(output_dir)
    retry = quiet(RetryHeartbeatStaleTrialCallback, max_retry=MAX_RETRY)
    if storage_kind(spec) == "database":
        # SQLite serialises writers; wait for the lock instead of failing a worker at once.
        engine_kwargs = {"connect_args": {"timeout": 60}} if spec.startswith("sqlite") else {}
        return quiet(
            RDBStorage,
            spec,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat_interval,
            heartbeat_stale_trial_callback=retry,
        )
    Path(spec).parent.mkdir(parents=True, exist_ok=True)
    return HeartbeatJournalStorage(
        JournalFileBackend(spec), heartbeat_interval=heartbeat_interval, stale_callback=retry
    )


def storage_kind(spec: str) -> str:
    """ "database" or "journal"; a clear error for anything else."""
    if "://" in spec:
        return "database"
    if spec.endswith(JOURNAL_SUFFIXES):
        return "journal"
    raise ValueError(
        f"--storage {spec!r} is neither a database URL nor a journal file: give e.g. "
        "sqlite:///tune.db, postgresql://user@host/db, or a path ending in .log or .journal"
    )


def check_storage(spec: str | None, what: str = "--storage") -> None:
    """Fail now, not after training, when ``spec`` (given as the option ``what``) names a
    database whose driver is not installed or a server that does not answer (a ValueError
    naming what to install); a spec that is neither a URL nor a journal file fails too."""
    if not spec or storage_kind(spec) != "database":
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    from bayeslora.tracking.urls import check_connects, mask_url

    try:
        url = make_url(spec)
        dialect = url.get_dialect()
        # SQLAlchemy 2 names it import_dbapi; the DBAPI driver is imported only here
        (getattr(dialect, "import_dbapi", None) or dialect.dbapi)()
    except (ArgumentError, NoSuchModuleError) as err:
        raise ValueError(f"{what} {describe_storage(spec, '.')}: {err}") from None
    except ImportError as err:
        raise ValueError(
            f"{what} {mask_url(spec)} needs the database "
            f"driver module '{err.name or err}'; install the package that provides it "
            "(postgresql: pip install 'psycopg[binary]', or psycopg2-binary with "
            "postgresql+psycopg2://; MySQL: pip install pymysql with mysql+pymysql://)"
        ) from None
    if url.host:
        check_connects(
            url.host,
            url.port or _DEFAULT_PORTS.get(url.get_backend_name(), 0),
            f"{what} {mask_url(spec)}: the database server",
            "start it or fix the URL",
        )


_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}


def describe_storage(spec: str | None, output_dir: str | Path) -> str:
    """The storage for logs and MLflow, with any password hidden."""
    spec = spec or default_storage(output_dir)
    if storage_kind(spec) == "database":
        from bayeslora.tracking.urls import mask_url

        return mask_url(spec)
    return str(Path(spec).resolve())


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """JournalStorage with optuna's heartbeat interface: a running trial's heartbeat is a
    timestamp in its system attributes (a journal has no table for it)."""

    def __init__(
        self,
        backend,
        *,
        heartbeat_interval: int,
        stale_callback: Callable | None = None,
    ):
        super().__init__(backend)
        self._heartbeat_interval = heartbeat_interval
        self._stale_callback = stale_callback

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, _HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        # Clocks of workers on several machines must agree to well under the grace period.
        deadline = time.time() - 2 * self._heartbeat_interval  # RDBStorage's default grace
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        return [
            t._trial_id
            for t in running
            if _HEARTBEAT_ATTR in t.system_attrs and t.system_attrs[_HEARTBEAT_ATTR] < deadline
        ]

    def get_heartbeat_interval(self) -> int | None:
        return self._heartbeat_interval

    def get_heartbeat_stale_trial_callback(self):
        return self._stale_callback


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail (and queue a retry of) trials whose worker stopped sending heartbeats."""
    quiet(optuna.storages.fail_stale_trials, study)


def quiet(fn, *args, **kwargs):
    """Call an optuna API that is marked experimental without its warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return fn(*args, **kwargs)
