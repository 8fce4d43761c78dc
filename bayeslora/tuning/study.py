"""One study per (method, task, settings), run to a total number of trials by any workers.

- The study name is a hash of everything that decides what a trial's value means
  (method, task, model, data, training settings, search space, objective), so the same
  command finds the same study and resumes it; ``n_trials`` is not part of it: it is the
  total the study should reach, and only the missing trials run.
- A trial *counts* when it is COMPLETE, PRUNED, or FAILED for a reason the objective
  recorded (a diverged loss: it used its share of the budget). A trial failed by a
  stale heartbeat (killed worker) or an interruption does not count and is redone.
- Several workers: each ``ask`` gets a unique trial number; a new trial runs only if fewer
  than ``n_trials`` lower-numbered trials count or are still running (others are
  "surplus": failed at once, marked, never trained), so the target is met exactly.
  A worker with nothing left to start waits for the running trials of others, and takes
  over a retry if one of them dies, before the study is read for its best parameters.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from bayeslora.training.loop import DivergedError
from bayeslora.tuning.storage import fail_stale_trials

FAIL_REASON = "bayeslora.fail_reason"  # user attr of a trial that failed but counts
SURPLUS = "bayeslora.surplus"  # user attr of a trial created beyond the target


class Surplus(Exception):
    """This trial would exceed the study's target (another worker took the last slot)."""


def study_name(method: str, task: str, definition: dict[str, Any]) -> str:
    """``method-task-<hash>``: readable, and the same for the same definition."""
    text = json.dumps(definition, sort_keys=True, default=str)
    return f"{method}-{task}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def counts(trial: FrozenTrial) -> bool:
    """Whether ``trial`` used one of the study's ``n_trials``."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and FAIL_REASON in trial.user_attrs


@dataclass
class Census:
    done: int  # trials that count
    running: int
    waiting: int  # queued retries of trials whose worker died
    complete: int
    pruned: int
    failed: int  # failed and counted (diverged)

    @classmethod
    def of(cls, trials: Sequence[FrozenTrial]) -> Census:
        def n(state):
            return sum(t.state == state for t in trials)

        return cls(
            done=sum(counts(t) for t in trials),
            running=n(TrialState.RUNNING),
            waiting=n(TrialState.WAITING),
            complete=n(TrialState.COMPLETE),
            pruned=n(TrialState.PRUNED),
            failed=sum(t.state == TrialState.FAIL and counts(t) for t in trials),
        )


def admit(trial: optuna.Trial, n_trials: int) -> FrozenTrial:
    """Raise :class:`Surplus` (marking the trial) if the target is already taken; else
    return the trial as stored (with its system attributes: a retry says of which trial).

    Lower-numbered trials that count, run or wait were (or will be) admitted first; the
    numbers are the storage's, so two workers never both take the last slot.
    """
    trials = trial.study.get_trials(deepcopy=False)
    ahead = [
        t
        for t in trials
        if t.number < trial.number
        and (counts(t) or t.state in (TrialState.RUNNING, TrialState.WAITING))
    ]
    if len(ahead) >= n_trials:
        trial.set_user_attr(SURPLUS, True)
        raise Surplus(f"trial {trial.number}: the study already has its {n_trials} trials")
    return next(t for t in trials if t.number == trial.number)


def run_tuning_trials(study: optuna.Study, objective, n_trials: int, progress) -> None:
    """:func:`run_trials` as the tuner runs them, in a bench process or a Ray task:
    ``progress`` (a :class:`~bayeslora.tuning.progress.TrialProgress`) reports each trial and
    the waits, and a diverged trial is failed, not raised (optuna tries the next)."""
    run_trials(
        study,
        objective,
        n_trials,
        callbacks=[progress],
        catch=(DivergedError,),
        on_wait=progress.waiting,
    )


def run_trials(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], Any],
    n_trials: int,
    *,
    callbacks: Sequence[Callable] = (),
    catch: tuple[type[Exception], ...] = (),
    poll_s: float = 2.0,
    on_wait: Callable[[Census], None] | None = None,
) -> None:
    """Run trials until ``n_trials`` count and none is running anywhere."""
    while True:
        fail_stale_trials(study)  # a dead worker's trial: failed, and a retry queued
        census = Census.of(study.get_trials(deepcopy=False))
        if census.waiting or census.done + census.running < n_trials:
            study.optimize(objective, n_trials=1, catch=(Surplus, *catch), callbacks=callbacks)
        elif census.running:
            if on_wait:
                on_wait(census)
            time.sleep(poll_s)
        else:
            return
