"""One stderr line per finished trial: trial k of n, its value, the best so far, the time.

``k`` counts the study's trials whichever worker ran them, so a resumed or shared study
shows where the whole study stands, not just this process.
"""

from __future__ import annotations

import sys
import time

import optuna
from optuna.trial import FrozenTrial, TrialState

from bayeslora.tuning.study import FAIL_REASON, SURPLUS, Census


class TrialProgress:
    """An optuna callback (``study.optimize(callbacks=[...])``) that prints progress."""

    def __init__(self, label: str, n_trials: int, objective_names: list[str], stream=None):
        self.label = label
        self.n_trials = n_trials
        self.objective_names = objective_names
        self.stream = stream or sys.stderr
        self.durations: list[float] = []
        self._last_wait: tuple[int, int] | None = None
        self._started = time.perf_counter()

    def _print(self, text: str) -> None:
        print(f"tune {self.label}: {text}", file=self.stream, flush=True)

    def start(self, study: optuna.Study, storage: str) -> None:
        census = Census.of(study.get_trials(deepcopy=False))
        left = max(0, self.n_trials - census.done)
        self._print(
            f"study {study.study_name} in {storage}: {census.done}/{self.n_trials} trials done"
            + (f", {left} to run" if left else "")
            + (f" ({census.running} running elsewhere)" if census.running else "")
        )

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if SURPLUS in trial.user_attrs:
            return
        census = Census.of(study.get_trials(deepcopy=False))
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        self.durations.append(seconds)
        mean = sum(self.durations) / len(self.durations)
        if trial.state == TrialState.COMPLETE:
            outcome = " ".join(
                f"{n}={v:.4g}" for n, v in zip(self.objective_names, trial.values, strict=True)
            )
        elif trial.state == TrialState.FAIL:
            outcome = f"FAILED ({trial.user_attrs.get(FAIL_REASON, 'error')})"
        else:
            outcome = trial.state.name
        self._print(
            f"trial {census.done}/{self.n_trials} (#{trial.number}) {outcome}; "
            f"{self._best(study)}; {seconds:.1f}s, {mean:.1f}s/trial"
        )

    def waiting(self, census: Census) -> None:
        key = (census.done, census.running)
        if key != self._last_wait:  # once per change, not once per poll
            self._last_wait = key
            self._print(
                f"{census.done}/{self.n_trials} trials done; waiting for {census.running} "
                "running in other workers (a dead worker's trial is retried after its heartbeat "
                "grace period)"
            )

    def _best(self, study: optuna.Study) -> str:
        if len(self.objective_names) > 1:
            try:
                return f"Pareto front {len(study.best_trials)} trial(s)"
            except ValueError:
                return "no completed trial yet"
        try:
            best = study.best_trial
        except ValueError:
            return "no completed trial yet"
        return f"best {self.objective_names[0]}={best.value:.4g} (#{best.number})"
