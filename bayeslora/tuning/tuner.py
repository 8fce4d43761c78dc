"""The tuner the bench calls once per (method, task): ``Tuner(cfg)(ctx, task, method_cls)``.

Lifecycle, top to bottom: carve the tuning split out of the training data → create or
load the study (its name says what it is, so a rerun resumes it) → run trials until the
study has ``n_trials`` (with any other workers) → pick the best → log it to the study's
MLflow run → return (hparams, LoRA settings) for the per-seed runs, which train on the
full training data and report on the evaluation split as usual.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from bayeslora.methods.registry import get_method
from bayeslora.models.loading import attn_implementation_for
from bayeslora.tasks.encoding import encode
from bayeslora.tasks.holdout import split_holdout
from bayeslora.training.settings import TrainSettings
from bayeslora.tuning.objective import (
    HPARAMS_ATTR,
    LORA_ATTR,
    METRICS_ATTR,
    OBJECTIVES,
    Objective,
    TuningData,
    objective_directions,
    objective_metrics,
)
from bayeslora.tuning.plots import log_plots
from bayeslora.tuning.progress import TrialProgress
from bayeslora.tuning.space import SearchSpace, lora_from_values, parse_search_space
from bayeslora.tuning.storage import (
    describe_storage,
    fail_stale_trials,
    open_storage,
    quiet,
    storage_kind,
)
from bayeslora.tuning.study import Census, run_tuning_trials, study_name
from bayeslora.tuning.tracking import log_study_summary, study_tags

PRUNERS = ("median", "hyperband", "none")
EVALUATIONS_PER_TRIAL = 5  # intermediate values for the pruner when --eval-every is not set


class Tuner:
    """Optuna search of each method's hyperparameters and LoRA settings (see bayeslora/tuning/README.md)."""

    def __init__(self, cfg):
        _check_settings(cfg)
        self.cfg = cfg
        # Unknown methods, bad search-space entries: fail now, before any model is loaded.
        method_classes = {name: get_method(name) for name in cfg.methods}
        self.overrides = parse_search_space(cfg.search_space, method_classes)
        self.objective_names = objective_metrics(cfg.tune_objective)
        self._storage = None
        self._data: dict[str, tuple[TuningData, dict]] = {}
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # our progress line replaces it

    def __call__(self, ctx, task, method_cls) -> tuple[dict[str, Any], Any]:
        cfg, tracker = self.cfg, ctx.tracker
        hparams, lora = cfg.hparams.get(method_cls.name, {}), cfg.lora_settings()
        if not method_cls.trains:  # the zero-shot baseline: nothing to tune
            print(f"tune {method_cls.name}/{task.name}: trains nothing, not tuned", file=sys.stderr)
            return hparams, lora
        space = SearchSpace.build(
            method_cls, task.name, hparams, lora, self.overrides[method_cls.name]
        )
        data, split = self._tuning_data(ctx, task)
        train = self.train_settings()
        definition = self.definition(method_cls.name, task, hparams, lora, space, train)
        name = study_name(method_cls.name, task.name, definition)
        study, sampler_seed = self._open_study(name, definition, train)
        label = f"{method_cls.name}/{task.name}"
        storage = describe_storage(cfg.storage, cfg.output_dir)
        params = {
            "study": name,
            "storage": storage,
            "n_trials": cfg.n_trials,
            "objective": cfg.tune_objective,
            "pruner": cfg.pruner if len(self.objective_names) == 1 else "none (multi-objective)",
            "sampler": f"TPESampler(seed={sampler_seed}, constant_liar=True)",
            "definition": definition,
            "tuning_split": {k: v for k, v in split.items() if k != "val_ids"},
        }
        worker = "tune-only" if cfg.tune_only else "main"
        with tracker.run(
            f"tune/{label}",
            nested=True,
            params=params,
            tags=study_tags(name, method_cls.name, task.name, worker),
        ):
            tracker.log_dict(split, "tuning_split.json")
            progress = TrialProgress(label, cfg.n_trials, self.objective_names)
            fail_stale_trials(study)  # so the first line does not count a dead worker's trial
            progress.start(study, storage)
            objective = Objective(
                method_cls=method_cls,
                task_name=task.name,
                space=space,
                data=data,
                base_model=lambda: ctx.base_model,  # loaded only if a trial trains
                answer_ids=task.answer_ids,
                hparams=hparams,
                lora=lora,
                train=train,
                objective=cfg.tune_objective,
                n_trials=cfg.n_trials,
                tracker=tracker,
                study_name=name,
            )
            if getattr(ctx, "cluster", None) is not None:  # --executor ray: trials as Ray tasks
                from bayeslora.tuning.ray_trials import run_trials_on_ray, trial_job

                job = trial_job(
                    ctx,
                    cfg,
                    study_name=name,
                    sampler_seed=sampler_seed,
                    train=train,
                    # set in each worker: its own tracker and base model
                    objective=dataclasses.replace(objective, tracker=None, base_model=None),
                    label=label,
                    objective_names=self.objective_names,
                )
                run_trials_on_ray(ctx.cluster, job, study)
            else:
                run_tuning_trials(study, objective, cfg.n_trials, progress)
            best = self.select_best(study)
            log_study_summary(tracker, study, self.objective_names, best)
            log_plots(tracker, study, self.objective_names)
            if best is None:
                census = Census.of(study.get_trials(deepcopy=False))
                raise RuntimeError(
                    f"study {name}: no trial completed ({census.pruned} pruned, "
                    f"{census.failed} failed); see the trial runs' bayeslora.fail_reason tags, "
                    "then narrow the search space (search_space in the config file) or raise --steps"
                )
        tuned_hparams = {**hparams, **best.user_attrs[HPARAMS_ATTR]}
        tuned_lora = lora_from_values(lora, best.user_attrs[LORA_ATTR])
        values = " ".join(
            f"{n}={v:.4g}" for n, v in zip(self.objective_names, best.values, strict=True)
        )
        print(f"tune {label}: best trial #{best.number} ({values}): {best.params}", file=sys.stderr)
        return tuned_hparams, tuned_lora

    # -- the pieces, in the order __call__ uses them -----------------------------------

    def _tuning_data(self, ctx, task) -> tuple[TuningData, dict]:
        """The held-out tuning split of ``task`` (seeded, recorded; tokenized once per task)."""
        if task.name not in self._data:
            cfg = self.cfg
            train, val = split_holdout(task.train_examples, cfg.tune_fraction, cfg.tune_seed)
            fit_train, fit_val = split_holdout(train, cfg.val_fraction, cfg.tune_seed)

            def tokenize(examples):
                return encode(examples, ctx.tokenizer, cfg.encoding())

            data = TuningData(
                tokenize(train), tokenize(val), tokenize(fit_train), tokenize(fit_val)
            )
            split = {
                "seed": cfg.tune_seed,
                "fraction": cfg.tune_fraction,
                "train_size": len(train),
                "val_size": len(val),
                "val_ids": [e.id for e in val],
            }
            self._data[task.name] = (data, split)
        return self._data[task.name]

    def train_settings(self) -> TrainSettings:
        """The final runs' settings, with --tune-steps and evaluations for the pruner."""
        cfg = self.cfg
        steps = cfg.tune_steps or cfg.steps
        return dataclasses.replace(
            cfg.train_settings(cfg.tune_seed),
            steps=steps,
            warmup_steps=min(cfg.warmup_steps, steps),
            eval_every=cfg.eval_every or max(1, steps // EVALUATIONS_PER_TRIAL),
            progress=False,  # one line per trial instead
        )

    def definition(self, method, task, hparams, lora, space, train) -> dict[str, Any]:
        """Everything that decides what a trial's value means: the study name hashes it."""
        cfg = self.cfg
        return {
            "method": method,
            "task": task.name,
            "model": cfg.model,
            # as resolved on this machine: "auto" trains in bf16 on some and fp32 on others
            "dtype": cfg.model_settings().dtype,
            "attn_implementation": attn_implementation_for(cfg.model_settings()),
            "quantization": cfg.quantization,
            "source": cfg.source,
            "jsonl_train": cfg.jsonl_train,
            "limit_train": cfg.limit_train,
            "train_examples": len(task.train_examples),
            "max_length": cfg.max_length,
            "truncation_side": cfg.truncation_side,
            # how a question becomes K logits: a letters study and a choices study differ
            "protocol": task.identity["protocol"],
            "split": {"fraction": cfg.tune_fraction, "seed": cfg.tune_seed},
            "val_fraction": cfg.val_fraction,
            "train": {
                k: v
                for k, v in dataclasses.asdict(train).items()
                if k not in ("eval_every", "eval_batch_size", "log_every", "progress")
            },
            "hparams": hparams,
            "lora": dataclasses.asdict(lora),
            "search_space": space.describe(),
            "objective": cfg.tune_objective,
        }

    def _open_study(self, name: str, definition: dict, train: TrainSettings):
        cfg = self.cfg
        if self._storage is None:
            self._storage = open_storage(cfg.storage, cfg.output_dir, cfg.heartbeat_interval)
        directions = objective_directions(cfg.tune_objective)
        study = optuna.create_study(
            study_name=name, storage=self._storage, directions=directions, load_if_exists=True
        )
        if "bayeslora.definition" not in study.user_attrs:
            study.set_user_attr("bayeslora.definition", definition)
        # A resumed study must not replay the first trials' random draws, nor two workers
        # draw the same ones: the seed moves with the trials already there (and the worker).
        sampler_seed = cfg.tune_seed * 1_000_003 + len(study.trials)
        if cfg.tune_only:
            sampler_seed += os.getpid()
        sampler = quiet(optuna.samplers.TPESampler, seed=sampler_seed, constant_liar=True)
        pruner = make_pruner(cfg.pruner, train, multi_objective=len(directions) > 1)
        study = optuna.load_study(
            study_name=name, storage=self._storage, sampler=sampler, pruner=pruner
        )
        return study, sampler_seed

    def select_best(self, study: optuna.Study) -> FrozenTrial | None:
        """The best trial; for (accuracy, ECE) the Pareto-front trial with the lowest NLL."""
        if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            return None
        if len(self.objective_names) == 1:
            return study.best_trial
        return min(study.best_trials, key=lambda t: t.user_attrs[METRICS_ATTR]["nll"])


def make_pruner(
    kind: str, train: TrainSettings, multi_objective: bool
) -> optuna.pruners.BasePruner:
    """``median``: prune a trial whose validation NLL at an evaluation is worse than the
    median of earlier trials at that step (after 5 trials); ``hyperband``: successive
    halving over the evaluation steps. Optuna does not prune multi-objective studies."""
    if multi_objective or kind == "none":
        return optuna.pruners.NopPruner()
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    return optuna.pruners.HyperbandPruner(
        min_resource=train.eval_every, max_resource=train.steps, reduction_factor=3
    )


def _check_settings(cfg) -> None:
    problems = []
    if cfg.n_trials < 1:
        problems.append(f"--n-trials must be >= 1, got {cfg.n_trials}")
    if cfg.tune_objective not in OBJECTIVES:
        problems.append(
            f"--tune-objective must be one of {sorted(OBJECTIVES)}, got {cfg.tune_objective!r}"
        )
    if cfg.pruner not in PRUNERS:
        problems.append(f"--pruner must be one of {list(PRUNERS)}, got {cfg.pruner!r}")
    if not 0 < cfg.tune_fraction < 1:
        problems.append(f"--tune-fraction must be in (0, 1), got {cfg.tune_fraction}")
    if cfg.tune_steps is not None and cfg.tune_steps < 1:
        problems.append(f"--tune-steps must be >= 1, got {cfg.tune_steps}")
    if cfg.heartbeat_interval < 1:
        problems.append(f"--heartbeat-interval must be >= 1 second, got {cfg.heartbeat_interval}")
    if cfg.storage:
        try:
            storage_kind(cfg.storage)
        except ValueError as err:
            problems.append(str(err))
    if problems:
        raise ValueError("; ".join(problems))
