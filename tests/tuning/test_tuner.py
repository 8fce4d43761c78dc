"""The tuner end to end on the tiny random model: the CLI, MLflow layout, pruning,
divergence, user search spaces, multi-objective, resume after a kill, two workers."""

import json
import signal

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

import bayeslora.tuning.tuner as tuner_module
from bayeslora.bench.cli import main
from bayeslora.bench.config import BenchConfig
from bayeslora.bench.plan import prepare_task
from bayeslora.bench.runner import BenchContext
from bayeslora.bench.store import ResultStore
from bayeslora.methods.adamw import AdamW
from bayeslora.tracking.mlflow_tracker import MlflowTracker
from bayeslora.tuning import Tuner
from bayeslora.tuning.storage import open_storage
from bayeslora.tuning.study import SURPLUS, counts

from .helpers import TINY, artifacts, bench_process, runs


def _tag(run, name):
    return run.data.tags.get(f"bayeslora.{name}")


def _study(output_dir, study_run, spec=None):
    storage = open_storage(spec, output_dir, heartbeat_interval=1)
    return optuna.load_study(study_name=_tag(study_run, "study"), storage=storage)


def test_cli_tunes_then_runs_the_seeds_and_logs_it_all_to_mlflow(output_dir, capsys):
    args = ["--methods", "adamw,ivon", "--tune", "--n-trials", "3", *TINY]
    assert main([*args, "--output-dir", str(output_dir)]) == 0
    err = capsys.readouterr().err
    assert "tune ivon/arc_easy: trial 3/3" in err and "s/trial" in err and "best nll=" in err

    (bench,) = runs(output_dir, "bench")
    studies = {_tag(r, "method"): r for r in runs(output_dir, "study")}
    trials = runs(output_dir, "trial")
    results = runs(output_dir, "result")
    assert sorted(studies) == ["adamw", "ivon"]
    assert len(trials) == 6
    assert sorted(_tag(r, "mode") for r in results) == ["adamw", "ivon", "ivon@mean"]

    client = MlflowClient(tracking_uri=f"sqlite:///{output_dir / 'mlflow.db'}")
    for method, study_run in studies.items():
        assert study_run.data.tags["mlflow.parentRunId"] == bench.info.run_id
        assert study_run.info.status == "FINISHED"
        children = [t for t in trials if t.data.tags["mlflow.parentRunId"] == study_run.info.run_id]
        assert sorted(_tag(t, "trial_number") for t in children) == ["0", "1", "2"]
        for trial in children:
            assert _tag(trial, "study") == _tag(study_run, "study")
            assert _tag(trial, "trial_state") in ("COMPLETE", "PRUNED")
            assert "lora_rank" in trial.data.params and "hparams.lr" in trial.data.params
            steps = [m.step for m in client.get_metric_history(trial.info.run_id, "val_nll")]
            assert steps[:3] == [1, 2, 3]  # every evaluation, for the pruner and for MLflow
        # The per-seed runs train with the best trial's values.
        best = {k[5:]: v for k, v in study_run.data.params.items() if k.startswith("best.")}
        assert "lr" in best and "lora_rank" in best
        result = next(r for r in results if _tag(r, "method") == method)
        assert float(result.data.params["hparams.lr"]) == pytest.approx(float(best["lr"]))
        assert result.data.params["lora.r"] == best["lora_rank"]
        assert study_run.data.metrics["n_trials_complete"] + study_run.data.metrics[
            "n_trials_pruned"
        ] == pytest.approx(3)
        assert any(k.startswith("importance.") for k in study_run.data.metrics)
        logged = artifacts(output_dir, study_run)
        assert {"trials.json", "tuning_split.json", "plots/history.png"} <= logged
        assert ("plots/ess_hess_init.png" in logged) == (method == "ivon")
        split = json.loads(
            (
                output_dir
                / "mlartifacts"
                / study_run.info.run_id
                / "artifacts"
                / "tuning_split.json"
            ).read_text()
        )
        assert split["val_size"] == 6 and split["train_size"] == 26 and len(split["val_ids"]) == 6


class _AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial):
        return True


def _context(output_dir, tokenizer, model, **settings):
    cfg = BenchConfig(
        methods=["adamw"],
        model="tiny-random-llama",
        steps=3,
        limit_train=32,
        limit_eval=16,
        progress=False,
        tune=True,
        heartbeat_interval=1,
        output_dir=str(output_dir),
        **settings,
    )
    tracker = MlflowTracker(
        f"sqlite:///{output_dir / 'mlflow.db'}", "bayeslora", output_dir / "mlartifacts"
    )
    store = ResultStore(tracker, {}, save_adapters=False)
    return BenchContext(cfg, tracker, store, output_dir, tokenizer, {}, loaded_model=model)


def test_pruning_leaves_fit_cleanly_and_detaches_the_adapters(
    output_dir, tokenizer, tiny_model, monkeypatch
):
    monkeypatch.setattr(tuner_module, "make_pruner", lambda *args, **kwargs: _AlwaysPrune())
    ctx = _context(output_dir, tokenizer, tiny_model, n_trials=2)
    task = prepare_task(ctx.cfg, tokenizer, "arc_easy")
    with ctx.tracker.run("bench", tags={"bayeslora.kind": "bench"}):
        with pytest.raises(RuntimeError, match=r"no trial completed \(2 pruned, 0 failed\)"):
            Tuner(ctx.cfg)(ctx, task, AdamW)

    # The shared base model is as it was: no adapters, no peft bookkeeping, frozen.
    assert not hasattr(tiny_model, "peft_config")
    assert not any("lora_" in name for name, _ in tiny_model.named_modules())
    assert not any(p.requires_grad for p in tiny_model.parameters())

    (study_run,) = runs(output_dir, "study")
    study = _study(output_dir, study_run)
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 2
    assert all(list(t.intermediate_values) == [1] for t in study.trials)  # stopped at once
    client = MlflowClient(tracking_uri=f"sqlite:///{output_dir / 'mlflow.db'}")
    for run in runs(output_dir, "trial"):
        assert run.info.status == "FINISHED" and _tag(run, "trial_state") == "PRUNED"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_nll")] == [1]


def test_user_space_and_diverging_trials(output_dir, capsys):
    # A user's space from the config file; lr 1e30 makes the weights overflow.
    config = output_dir / "tune.yaml"
    config.write_text(
        "search_space:\n"
        "  adamw:\n"
        "    lr: {type: categorical, choices: [1e-4, 1e30]}\n"
        "    weight_decay: null\n"
        "  all:\n"
        "    lora_rank: {type: categorical, choices: [2, 4]}\n"
    )
    args = ["--config", str(config), "--methods", "adamw", "--tune", "--n-trials", "4", *TINY]
    assert main([*args, "--output-dir", str(output_dir)]) == 0
    assert "FAILED (validation predictions became non-finite" in capsys.readouterr().err

    (study_run,) = runs(output_dir, "study")
    study = _study(output_dir, study_run)
    assert len(study.trials) == 4 and all(counts(t) for t in study.trials)
    for t in study.trials:
        assert set(t.params) == {"lr", "lora_rank", "lora_alpha", "lora_dropout"}
        assert t.params["lora_rank"] in (2, 4)
        assert t.state == (TrialState.FAIL if t.params["lr"] > 1 else TrialState.COMPLETE)
    assert {t.state for t in study.trials} == {TrialState.FAIL, TrialState.COMPLETE}

    for run in runs(output_dir, "trial"):
        if float(run.data.params["lr"]) > 1:
            assert run.info.status == "FAILED" and _tag(run, "trial_state") == "FAIL"
            assert "non-finite" in _tag(run, "fail_reason")
        else:
            assert run.info.status == "FINISHED" and _tag(run, "trial_state") == "COMPLETE"
    (result,) = runs(output_dir, "result")
    assert float(result.data.params["hparams.lr"]) == 1e-4


def test_multi_objective_reports_the_pareto_front(output_dir):
    args = ["--methods", "adamw", "--tune", "--tune-objective", "accuracy-ece", "--n-trials", "2"]
    assert main([*args, *TINY, "--output-dir", str(output_dir)]) == 0
    (study_run,) = runs(output_dir, "study")
    assert study_run.data.params["pruner"] == "none (multi-objective)"
    assert {"best_accuracy", "best_ece", "pareto_front_size"} <= set(study_run.data.metrics)
    assert {"pareto_front.json", "plots/pareto_front.png"} <= artifacts(output_dir, study_run)
    assert len(runs(output_dir, "result")) == 1


def test_bad_settings_fail_before_anything_loads(output_dir, capsys):
    config = output_dir / "bad.yaml"
    config.write_text("search_space: {ivon: {ess: {type: float, low: 1e9, high: 1e5}}}\n")
    args = ["--config", str(config), "--methods", "ivon", "--tune", "--output-dir", str(output_dir)]
    assert main(args) == 2
    assert "search_space.ivon.ess" in capsys.readouterr().err
    assert main(["--tune", "--storage", "tune.db", "--output-dir", str(output_dir)]) == 2
    assert "neither a database URL nor a journal file" in capsys.readouterr().err


KILLER = """
import os, signal, sys
import bayeslora.methods.base as base  # Method.training_loop calls base.train_loop

real, calls = base.train_loop, []


def train_loop(*args, **kwargs):  # the second trial's training is killed (kill -9)
    calls.append(1)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)


base.train_loop = train_loop
from bayeslora.bench.cli import main

sys.exit(main(sys.argv[1:]))
"""


def test_a_killed_run_resumes_with_the_same_command(output_dir, tmp_path):
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    args = [
        "--methods",
        "adamw",
        "--tune",
        "--n-trials",
        "3",
        *TINY,
        "--output-dir",
        str(output_dir),
    ]
    killed = bench_process(args, tmp_path, script=script)
    assert killed.wait(timeout=600) == -signal.SIGKILL, killed.stdout.read()

    again = bench_process(args, tmp_path)  # the same command again
    out = again.communicate(timeout=600)[0]
    assert again.returncode == 0, out
    assert "1/3 trials done, 2 to run" in out

    first, second = sorted(runs(output_dir, "study"), key=lambda r: r.info.start_time)
    study = _study(output_dir, second)
    assert sum(counts(t) for t in study.trials) == 3
    assert study.trials[0].state == TrialState.COMPLETE  # not redone
    assert study.trials[1].state == TrialState.FAIL  # the killed one: failed, not counted
    (retry,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == 1]
    assert retry.params == study.trials[1].params and retry.state == TrialState.COMPLETE
    assert not any(t.state == TrialState.RUNNING for t in study.trials)

    trial_runs = runs(output_dir, "trial")
    by_parent = {}
    for run in trial_runs:
        by_parent.setdefault(run.data.tags["mlflow.parentRunId"], []).append(run)
    assert sorted(_tag(r, "trial_number") for r in by_parent[second.info.run_id]) == ["2", "3"]
    assert (
        _tag(
            next(r for r in trial_runs if _tag(r, "trial_number") == str(retry.number)), "retry_of"
        )
        == "1"
    )
    assert len(runs(output_dir, "result")) == 1


def test_two_workers_share_one_study(output_dir, tmp_path):
    storage = str(tmp_path / "study.journal")
    args = ["--methods", "adamw", "--tune", "--n-trials", "6", *TINY]
    args += ["--storage", storage, "--output-dir", str(output_dir)]
    workers = [bench_process(args, tmp_path), bench_process([*args, "--tune-only"], tmp_path)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs

    studies = runs(output_dir, "study")
    assert sorted(_tag(r, "worker") for r in studies) == ["main", "tune-only"]
    study = _study(output_dir, studies[0], spec=storage)
    done = [t for t in study.trials if counts(t)]
    assert len(done) == 6  # no trial lost or duplicated
    assert all(counts(t) or SURPLUS in t.user_attrs for t in study.trials)
    finished = [r for r in runs(output_dir, "trial") if r.info.status in ("FINISHED", "FAILED")]
    numbers = [_tag(r, "trial_number") for r in finished]
    assert sorted(numbers) == sorted(str(t.number) for t in done)  # one MLflow run each
    assert len(runs(output_dir, "result")) == 1  # only the main worker retrains


def test_a_rerun_after_tuning_skips_the_finished_seeds_without_loading_the_model(
    output_dir, capsys, monkeypatch
):
    import bayeslora.bench.runner as runner

    args = ["--methods", "adamw", "--tune", "--n-trials", "2", *TINY]
    assert main([*args, "--output-dir", str(output_dir)]) == 0
    assert (
        "1 cell(s): 0 finished earlier (reused from the store), 1 to run" in capsys.readouterr().err
    )

    def no_model(settings):
        raise AssertionError("the base model was loaded although every cell had finished")

    monkeypatch.setattr(runner, "load_causal_lm", no_model)
    assert main([*args, "--output-dir", str(output_dir)]) == 0
    assert (
        "1 cell(s): 1 finished earlier (reused from the store), 0 to run" in capsys.readouterr().err
    )
    assert len(runs(output_dir, "trial")) == 2  # the study was complete: no trial ran again
    assert len(runs(output_dir, "result")) == 1
