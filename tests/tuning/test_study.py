"""Study bookkeeping without a model: names, the exact trial budget, resume, stale trials
of killed workers, several worker processes on one study."""

import multiprocessing
import os
import time

import optuna
import pytest
from optuna.trial import TrialState

from bayeslora.tuning.storage import describe_storage, open_storage, storage_kind
from bayeslora.tuning.study import (
    FAIL_REASON,
    SURPLUS,
    Census,
    Surplus,
    admit,
    counts,
    run_trials,
    study_name,
)


def _storage_spec(tmp_path, kind):
    return (
        f"sqlite:///{tmp_path / 'optuna.db'}" if kind == "sqlite" else str(tmp_path / "s.journal")
    )


def _study(spec, tmp_path, name="s"):
    storage = open_storage(spec, tmp_path, heartbeat_interval=1)
    return optuna.create_study(study_name=name, storage=storage, load_if_exists=True)


def _objective(n_trials, sleep=0.0, worker=""):
    def objective(trial):
        admit(trial, n_trials)
        x = trial.suggest_float("x", 0, 1)
        trial.set_user_attr("worker", worker)
        time.sleep(sleep)
        return x

    return objective


def test_study_name_is_deterministic_and_follows_the_definition():
    definition = {"model": "m", "space": {"lr": "..."}, "steps": 3}
    name = study_name("ivon", "arc_easy", definition)
    assert name == study_name("ivon", "arc_easy", dict(reversed(definition.items())))
    assert name.startswith("ivon-arc_easy-")
    assert name != study_name("ivon", "arc_easy", {**definition, "steps": 4})
    assert name != study_name("adamw", "arc_easy", definition)


def test_storage_syntax_and_password_hidden(tmp_path):
    assert storage_kind("sqlite:///x.db") == "database"
    assert storage_kind("postgresql://u@h/db") == "database"
    assert storage_kind("runs/tune.journal") == storage_kind("tune.log") == "journal"
    with pytest.raises(ValueError, match="neither a database URL nor a journal file"):
        storage_kind("tune.db")
    shown = describe_storage("postgresql://user:secret@host/db", tmp_path)
    assert "secret" not in shown and "user" in shown
    assert describe_storage(None, tmp_path) == f"sqlite:///{tmp_path.resolve() / 'optuna.db'}"


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_n_trials_is_the_total_and_a_rerun_runs_only_the_missing(tmp_path, kind):
    spec = _storage_spec(tmp_path, kind)
    run_trials(_study(spec, tmp_path), _objective(3), 3)
    study = _study(spec, tmp_path)
    first = [t.params for t in study.trials]
    run_trials(study, _objective(3), 3)  # the same command again: nothing to do
    assert len(_study(spec, tmp_path).trials) == 3
    run_trials(_study(spec, tmp_path), _objective(5), 5)
    trials = _study(spec, tmp_path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 5
    assert [t.params for t in trials[:3]] == first  # finished trials are not redone


def test_diverged_failures_count_other_failures_do_not(tmp_path):
    study = _study(None, tmp_path)

    def objective(trial):
        admit(trial, 4)
        if trial.number == 0:
            trial.set_user_attr(FAIL_REASON, "training loss became nan at step 2")
            raise FloatingPointError("diverged")
        if trial.number == 1 and not getattr(objective, "crashed", False):
            objective.crashed = True
            raise KeyboardInterrupt  # an interruption: FAIL without a reason, redone later
        return 1.0

    with pytest.raises(KeyboardInterrupt):
        run_trials(study, objective, 4, catch=(FloatingPointError,))
    run_trials(study, objective, 4, catch=(FloatingPointError,))
    census = Census.of(study.trials)
    assert (census.done, census.complete, census.failed) == (4, 3, 1)
    assert [counts(t) for t in study.trials] == [True, False, True, True, True]


def test_admit_refuses_trials_beyond_the_target(tmp_path):
    study = _study(None, tmp_path)
    trials = [study.ask() for _ in range(3)]  # three workers asked at the same moment
    assert admit(trials[0], 2).number == 0
    admit(trials[1], 2)
    with pytest.raises(Surplus):
        admit(trials[2], 2)
    assert study.trials[2].user_attrs[SURPLUS] is True


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_killed_workers_trial_is_retried_and_not_counted(tmp_path, kind):
    spec = _storage_spec(tmp_path, kind)
    study = _study(spec, tmp_path)
    # What a killed worker leaves: a RUNNING trial with a heartbeat that stopped.
    dead = study.ask()
    dead_x = dead.suggest_float("x", 0, 1)
    study._storage.record_heartbeat(dead._trial_id)

    start = time.monotonic()
    run_trials(_study(spec, tmp_path), _objective(3), 3, poll_s=0.2)
    assert time.monotonic() - start < 30  # the wait ends after the grace period (2 s)

    trials = _study(spec, tmp_path).trials
    assert trials[0].state == TrialState.FAIL and not counts(trials[0])
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retries) == 1 and retries[0].params["x"] == dead_x
    assert retries[0].state == TrialState.COMPLETE
    assert sum(counts(t) for t in trials) == 3
    assert not any(t.state == TrialState.RUNNING for t in trials)


def _worker(spec, tmp_path, n_trials, start):
    start.wait()
    run_trials(_study(spec, tmp_path), _objective(n_trials, 0.1, str(os.getpid())), n_trials)


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_processes_share_one_study_exactly(tmp_path, kind):
    spec = _storage_spec(tmp_path, kind)
    _study(spec, tmp_path)  # created once, as the first worker would
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    workers = [context.Process(target=_worker, args=(spec, tmp_path, 10, start)) for _ in range(2)]
    for w in workers:
        w.start()
    start.set()
    for w in workers:
        w.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]

    trials = _study(spec, tmp_path).trials
    done = [t for t in trials if counts(t)]
    assert len(done) == 10  # no trial lost or duplicated
    assert len({t.number for t in trials}) == len(trials)
    assert all(t.state == TrialState.COMPLETE or SURPLUS in t.user_attrs for t in trials)
    assert len({t.user_attrs["worker"] for t in done}) == 2  # both did work
