"""Tuning with --executor ray: the trials of a study as parallel Ray tasks on one storage."""

import optuna
import pytest
from optuna.trial import TrialState

from bayeslora.bench.cli import main
from bayeslora.tuning.storage import open_storage
from bayeslora.tuning.study import SURPLUS, counts

from .helpers import TINY, runs


def test_the_trials_of_a_study_run_as_parallel_ray_tasks_exactly_n_trials(
    ray_instance, output_dir, tmp_path, capsys
):
    storage = str(tmp_path / "study.journal")
    args = ["--methods", "adamw", "--tune", "--n-trials", "5", *TINY, "--storage", storage]
    assert main([*args, "--output-dir", str(output_dir), "--executor", "ray"]) == 0
    err = capsys.readouterr().err
    assert "tune adamw/arc_easy: 5 trial(s) to run as 2 parallel Ray task(s)" in err

    (study_run,) = runs(output_dir, "study")
    name = study_run.data.tags["bayeslora.study"]
    study = optuna.load_study(study_name=name, storage=open_storage(storage, output_dir, 1))
    done = [t for t in study.trials if counts(t)]
    assert len(done) == 5  # the total, exactly: none lost, none duplicated
    assert all(counts(t) or SURPLUS in t.user_attrs for t in study.trials)
    # each trial reported its evaluations to the storage, where optuna's pruner reads them
    assert all(t.intermediate_values for t in done if t.state != TrialState.FAIL)

    trials = [r for r in runs(output_dir, "trial") if r.info.status in ("FINISHED", "FAILED")]
    assert sorted(r.data.tags["bayeslora.trial_number"] for r in trials) == sorted(
        str(t.number) for t in done
    )  # one MLflow run per trial, nested under the driver's study run
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {study_run.info.run_id}
    (result,) = runs(output_dir, "result")  # then the seed, with the best values
    best = study.best_trial.user_attrs["bayeslora.hparams"]
    assert float(result.data.params["hparams.lr"]) == pytest.approx(best["lr"])
