"""Every setting of a bench run, in one dataclass that a config file or the CLI fills.

A config file (YAML or JSON) is a flat mapping with the same keys as the fields below
(``steps: 300``), plus ``hparams: {ivon: {ess: 1e7}}`` for method hyperparameters and,
for ``--tune``, ``search_space: {ivon: {ess: {type: float, low: 1e5, high: 1e9, log: true}}}``
(schema: bayeslora/tuning/space.py and bayeslora/tuning/README.md).
Command-line flags override the file; the resolved config is logged with every run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bayeslora.methods.registry import get_method, split_method_name
from bayeslora.models.classifier import LoraSettings
from bayeslora.models.loading import ModelSettings
from bayeslora.models.packaged import DEFAULT_MODEL
from bayeslora.tasks.encoding import EncodingSettings
from bayeslora.tasks.scoring import Scoring, as_scoring
from bayeslora.threads import check_threads
from bayeslora.tracking.urls import mask_url
from bayeslora.training.settings import TrainSettings

SOURCES = ("packaged", "hub", "jsonl")
EXECUTORS = ("local", "ray")


@dataclass
class BenchConfig:
    # pretrained: the zero-shot row that shows what finetuning adds (one evaluation pass)
    methods: list[str] = field(default_factory=lambda: ["adamw", "ivon", "pretrained"])
    tasks: list[str] = field(default_factory=lambda: ["arc_easy"])
    source: str = "packaged"  # packaged (offline) | hub | jsonl
    jsonl_train: str | None = None
    jsonl_eval: str | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    # outputs beyond each task's own metrics (part of the affected cells' keys)
    eval_tasks: list[str] = field(default_factory=list)  # scored out of distribution too
    tau_grid: list[float] = field(default_factory=list)  # posterior scales of the tau curve
    # model
    model: str = DEFAULT_MODEL
    dtype: str = "float32"
    quantization: str = "none"
    device: str = "auto"
    attn_implementation: str = "auto"  # auto: chosen per dtype and device (models/loading.py)
    trust_remote_code: bool = False
    # LoRA (the paper: r=8, alpha=16, dropout 0.1 on q_proj and v_proj)
    lora_rank: int = 8
    lora_alpha: float = 16
    lora_dropout: float = 0.1
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    # scoring (bayeslora/tasks/scoring.py): letters (the papers') | choices (cloze likelihood)
    scoring: str = "letters"
    length_norm: str = "none"  # choices scoring: none | token | char
    # data
    max_length: int = 320  # as the paper
    truncation_side: str = "left"  # keeps the question and "Answer:" of a long passage
    limit_train: int | None = None  # use only the first N training examples (smoke runs)
    limit_eval: int | None = None
    val_fraction: float = 0.1  # held out of train for methods that need validation data
    # training
    steps: int = 300
    batch_size: int = 8
    grad_accum: int = 1
    warmup_steps: int = 0
    eval_every: int = 0
    eval_batch_size: int = 32
    # method hyperparameters: {"ivon": {"ess": 1e7}}
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)
    # tuning (--tune): an optuna study per (method, task) on a split of the training data
    tune: bool = False
    tune_only: bool = False  # run trials and exit, without the per-seed runs (extra workers)
    n_trials: int = 20  # the study's total; a resumed study runs only the missing ones
    tune_objective: str = "nll"  # nll (validation NLL) | accuracy-ece (Pareto front)
    tune_fraction: float = 0.2  # part of the training data held out to score trials
    tune_seed: int = 0  # the tuning split's seed, also the trials' training seed
    tune_steps: int | None = None  # steps per trial (default: steps)
    pruner: str = "median"  # median | hyperband | none
    storage: str | None = None  # default: sqlite:///<output_dir>/optuna.db
    heartbeat_interval: int = 60  # seconds; a trial silent for twice this is retried
    # {method or "all": {name: {type: float|int|categorical, ...} or null}}
    search_space: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the presets this run was built on (bench.cli fills it; see presets_for); logged
    preset: str = "none"
    # tracking and output
    output_dir: str = "runs"
    tracking_uri: str | None = None  # default: sqlite:///<output_dir>/mlflow.db
    experiment: str = "bayeslora"
    save_adapters: bool = True
    progress: bool = True
    # torch threads of this process; None: a fair share of the cores among the bench and
    # tuning workers running on this machine (bayeslora/threads.py)
    threads: int | None = None
    # where cells (and tuning trials) run: local (this process) | ray (bayeslora/cluster.py)
    executor: str = "local"
    ray_address: str | None = None  # None: start a local Ray instance; "auto": the running one
    gpus_per_cell: float | None = None  # None: 1 when the cluster has GPUs, else 0
    cpus_per_cell: int = 1  # also each cell's torch threads in its Ray worker
    max_retries: int = 2  # Ray reruns of a cell (or trial task) whose worker process died
    ray_dashboard: bool = False
    # resume: a cell whose key has a FINISHED result per mode in the store is reused
    force: bool = False  # rerun every cell even if the store has it finished
    checkpoint_every: int = 0  # save mid-training state every N steps (0: never)
    keep_checkpoints: bool = False  # keep a finished cell's checkpoints (default: removed)

    def __post_init__(self) -> None:
        """Every setting checked when the config is resolved, before any model, data or
        store is touched: a ValueError naming the setting and the fix. (Method
        hyperparameters are checked by each method's Config: ``bench.prepare.check_methods``;
        servers and files by ``bench.prepare.preflight``.)"""
        self._check_types()
        check_threads(self.threads)
        # the settings objects check their own fields (one rule, one place)
        self.encoding()  # scoring, length normalisation, max length, truncation side
        self.lora_settings()
        self.train_settings(0)
        self.model_settings()  # model name or path, dtype, quantization, device
        self._check_lists()
        self._check_numbers()
        for option, url in (("--storage", self.storage), ("--tracking-uri", self.tracking_uri)):
            _check_url_syntax(option, url)
        if self.source not in SOURCES:
            raise ValueError(f"--source must be one of {list(SOURCES)}, got {self.source!r}")
        if self.source == "jsonl":
            if not (self.jsonl_train or self.jsonl_eval):
                raise ValueError("--source jsonl needs --jsonl-train and/or --jsonl-eval")
            for path in (self.jsonl_train, self.jsonl_eval):
                if path and not Path(path).is_file():
                    raise ValueError(f"jsonl file {path} does not exist")
        else:
            from bayeslora.tasks import get_task

            for task in self.tasks:
                get_task(task)  # an unknown name says "did you mean"
        if as_scoring(self.scoring) is Scoring.CHOICES and (
            self.attn_implementation == "flash_attention_2"
        ):
            raise ValueError(
                "--scoring choices packs a question's choices behind their shared prefix with a "
                "block attention mask, which flash_attention_2 cannot take; use "
                "--attn-implementation sdpa (or eager)"
            )
        self._check_outputs()
        self._check_executor()
        if self.checkpoint_every < 0:
            raise ValueError(
                f"--checkpoint-every must be >= 0 steps (0: no checkpoints), got {self.checkpoint_every}"
            )

    def _check_executor(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(f"--executor must be one of {list(EXECUTORS)}, got {self.executor!r}")
        if self.gpus_per_cell is not None and self.gpus_per_cell < 0:
            raise ValueError(f"--gpus-per-cell must be >= 0, got {self.gpus_per_cell}")
        if self.cpus_per_cell < 1:
            raise ValueError(f"--cpus-per-cell must be >= 1, got {self.cpus_per_cell}")
        if self.max_retries < 0:
            raise ValueError(f"--max-retries must be >= 0, got {self.max_retries}")
        if self.executor == "ray" and self.threads is not None:
            raise ValueError(
                "--threads sets this process's threads under --executor local; with --executor "
                "ray each cell runs --cpus-per-cell threads in its Ray worker: give that instead"
            )

    def _check_lists(self) -> None:
        lists = {"methods": self.methods, "tasks": self.tasks, "seeds": self.seeds}
        for name, values in lists.items():
            if not isinstance(values, list):
                raise ValueError(f"--{name} must be a list, got {values!r}")
            repeated = sorted({str(v) for v in values if values.count(v) > 1})
            if repeated:
                raise ValueError(f"--{name} lists {', '.join(repeated)} more than once")
        for name in ("methods", "tasks"):
            if not lists[name]:
                raise ValueError(f"--{name} is empty; give at least one")
        if not self.seeds and not self.tune_only:
            raise ValueError("--seeds is empty; give at least one (e.g. --seeds 0)")

    def _check_outputs(self) -> None:
        """--eval-tasks: known tasks whose questions have as many answers as each --tasks
        task's (an adapter scores K answers); --tau-grid: scales >= 0, for a method that
        has a posterior to scale."""
        for name, values in (("eval-tasks", self.eval_tasks), ("tau-grid", self.tau_grid)):
            repeated = sorted({str(v) for v in values if values.count(v) > 1})
            if repeated:
                raise ValueError(f"--{name} lists {', '.join(repeated)} more than once")
        if self.eval_tasks:
            if self.source == "jsonl":
                raise ValueError(
                    "--eval-tasks takes tasks of --source packaged or hub; with --source jsonl "
                    "there is one task, the files'"
                )
            from bayeslora.tasks import get_task

            letters = as_scoring(self.scoring) is Scoring.LETTERS
            for task in self.tasks:
                trained = get_task(task).answer_labels
                for other in self.eval_tasks:
                    labels = get_task(other).answer_labels
                    if len(labels) != len(trained) or (letters and labels != trained):
                        what = "answer letters" if letters else "answer count"
                        raise ValueError(
                            f"--eval-tasks {other} has answers {list(labels)}, but --tasks {task}'s "
                            f"adapters score {list(trained)}: the {what} must match (e.g. ARC-Easy, "
                            "ARC-Challenge and OpenBookQA have 4; WinoGrande and BoolQ 2)"
                        )
        for tau in self.tau_grid:
            if not (tau >= 0 and tau < float("inf")):
                raise ValueError(
                    f"--tau-grid values are scales of the posterior variance, >= 0 (0: the "
                    f"mean, 1: the posterior), got {tau}"
                )
        if self.tau_grid and not any(
            get_method(m).scales_posterior for m in self.methods if _registered(m)
        ):
            raise ValueError(
                f"--tau-grid draws the tau curve of a method that scales its posterior (ivon); "
                f"none of --methods {','.join(self.methods)} does: add ivon or drop --tau-grid"
            )

    def _check_numbers(self) -> None:
        def fail(name: str, rule: str) -> None:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} must be {rule}, got {getattr(self, name)}")

        for name in ("limit_train", "limit_eval", "tune_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                fail(name, ">= 1 (leave it out for all)")
        for name in ("val_fraction", "tune_fraction"):
            if not 0 < getattr(self, name) < 1:
                fail(name, "between 0 and 1 (exclusive)")
        for name in ("n_trials", "heartbeat_interval"):
            if getattr(self, name) < 1:
                fail(name, ">= 1")

    def encoding(self) -> EncodingSettings:
        return EncodingSettings(self.max_length, self.truncation_side, self.length_norm)

    def model_settings(self) -> ModelSettings:
        return ModelSettings(
            name=self.model,
            dtype=self.dtype,
            quantization=self.quantization,
            device=self.device,
            trust_remote_code=self.trust_remote_code,
            attn_implementation=self.attn_implementation,
        )

    def lora_settings(self) -> LoraSettings:
        return LoraSettings(
            r=self.lora_rank,
            alpha=self.lora_alpha,
            dropout=self.lora_dropout,
            target_modules=tuple(self.lora_targets),
        )

    def train_settings(self, seed: int) -> TrainSettings:
        return TrainSettings(
            steps=self.steps,
            batch_size=self.batch_size,
            grad_accum=self.grad_accum,
            warmup_steps=self.warmup_steps,
            eval_every=self.eval_every,
            eval_batch_size=self.eval_batch_size,
            seed=seed,
            progress=self.progress,
        )

    def _check_types(self) -> None:
        """Each field holds a value of its annotated type (a config file or a caller may
        give anything); an int where a float is expected becomes that float."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            setattr(self, f.name, _typed(f.name, value, hints[f.name]))

    def to_dict(self) -> dict[str, Any]:
        """Every setting, as logged: passwords in the storage and tracking URLs masked."""
        values = dataclasses.asdict(self)
        for name in ("storage", "tracking_uri"):
            values[name] = mask_url(values[name])
        return values


def _registered(method: str) -> bool:
    """Whether ``method`` names a method (an unknown one is reported by check_methods)."""
    try:
        get_method(method)
    except Exception:
        return False
    return True


def _check_url_syntax(option: str, url: str | None) -> None:
    """A URL whose port is not a number fails here, not later inside a library."""
    if url and "://" in url:
        try:
            _ = urlsplit(url).port  # parses the port
        except ValueError as err:
            raise ValueError(f"{option} {mask_url(url)}: {err}") from None


def _typed(name: str, value: Any, hint: Any) -> Any:
    """``value`` as the type ``hint`` (str, int, float, bool, X | None, list[X], dict[...]),
    or a ValueError naming the setting, what it must be and what it got."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        return _typed(name, value, hint)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ValueError(f"setting {name} must be a list, got {value!r}")
        return [_typed(f"{name}[{i}]", v, args[0]) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ValueError(f"setting {name} must be a mapping with string keys, got {value!r}")
        return {k: _typed(f"{name}.{k}", v, args[1]) for k, v in value.items()}
    if hint is Any:
        return value
    if hint is str and isinstance(value, os.PathLike):  # output_dir=Path(...) from Python
        return os.fspath(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool) or not isinstance(value, hint):
        raise ValueError(
            f"setting {name} must be {_KIND_NAMES.get(hint, hint.__name__)}, got {value!r}"
        )
    return value


_KIND_NAMES = {str: "a string", int: "a whole number", float: "a number", bool: "true or false"}


# Presets: layers of settings that go under the config file and the flags (which win).
#
# "embedded" is what the offline default runs: it applies when the model is the packaged
# SmolLM2-135M (unless --preset none). Why, measured on 2 CPU cores (README, "The embedded
# default"):
# - choices scoring: under the papers' letters protocol a 135M model stays at chance (zero-shot
#   and after training), so methods can differ only in calibration. Scored by the likelihood of
#   each choice's text it answers 52 % of ARC-Easy zero-shot, and training moves it further.
#   Summed log-probabilities (length_norm none): the best zero-shot accuracy of the three
#   normalisations (benchmarks/scoring.py).
# - all 2365 training questions, 100 steps at batch size 8 (a third of an epoch): what a CPU
#   budget allows (a step of the default takes about 4 s in fp32 on the machines measured).
# - learning rates 10x their defaults (the papers') for every method, plugins included: the
#   fields each Config lists in learning_rates (AdamW 5e-4, IVON 0.3: the papers' ratio kept).
#   Chosen on the tuning split, never on the evaluation questions: with --eval-every on
#   a 20 % holdout of the training questions, AdamW at 5e-4 reached validation accuracy 0.639
#   and NLL 1.77 against 0.567 and 2.02 at 2e-4 (README). IVON's rate follows the ratio; it
#   was not probed separately.
# - IVON averages 4 posterior samples instead of the paper's 10: each sample is a full pass
#   over the evaluation set, and 10 would take the default past the time budget of the
#   performance issue (README). --hp ivon.test_samples=10 restores the paper's count.
EMBEDDED_LR_SCALE = 10
EMBEDDED_PRESET: dict[str, Any] = {
    "scoring": "choices",
    "steps": 100,
    # every method's declared learning rates (MethodConfig.learning_rates), plugins' too
    "lr_scale": EMBEDDED_LR_SCALE,
    "hparams": {"ivon": {"test_samples": 4}},
}

# --quick: a smoke run of the whole pipeline in about 2 minutes on 2 CPU cores (README), on
# top of "embedded" when that applies. Its numbers show that things run, not which method
# is better.
QUICK_PRESET: dict[str, Any] = {
    "steps": 8,
    "limit_train": 160,
    "limit_eval": 32,
    "hparams": {"ivon": {"test_samples": 2}},
}

PRESETS: dict[str, dict[str, Any]] = {"embedded": EMBEDDED_PRESET, "quick": QUICK_PRESET}
PRESET_CHOICES = ("auto", "embedded", "none")  # auto: embedded for the packaged default model


def presets_for(choice: str, model: str, quick: bool) -> list[str]:
    """The names of the presets a run uses, lowest first."""
    if choice not in PRESET_CHOICES:
        raise ValueError(f"preset must be one of {list(PRESET_CHOICES)}, not {choice!r}")
    names = (
        ["embedded"]
        if choice == "embedded" or (choice == "auto" and model == DEFAULT_MODEL)
        else []
    )
    return names + (["quick"] if quick else [])


def preset_layer(name: str, methods: list[str]) -> dict[str, Any]:
    """A preset's settings: its hyperparameters for the selected methods, and its
    ``lr_scale`` applied to each selected method's learning rates (the fields its Config
    declares in ``learning_rates``, at their defaults). A composite gets its base method's
    ("ivon+temperature" gets ivon's)."""
    preset = dict(PRESETS[name])
    scale = preset.pop("lr_scale", None)
    own = preset.pop("hparams", {})
    hparams = {}
    for method in methods:
        values = scaled_learning_rates(method, scale) if scale is not None else {}
        values.update(own.get(split_method_name(method)[0], {}))
        if values:
            hparams[method] = values
    return {**preset, "hparams": hparams}


def scaled_learning_rates(method: str, scale: float) -> dict[str, float]:
    """``method``'s learning rates at their defaults, times ``scale``."""
    config = get_method(method).Config
    defaults = config()
    return {name: getattr(defaults, name) * scale for name in config.learning_rates}


def field_names() -> set[str]:
    return {f.name for f in dataclasses.fields(BenchConfig)}


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a dict of BenchConfig fields, checking names."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"config file {path} is not UTF-8 text ({err})") from None
    if path.suffix == ".json":
        try:
            values = json.loads(text)
        except ValueError as err:
            raise ValueError(f"config file {path} is not valid JSON: {err}") from None
    else:
        import yaml

        try:
            values = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(values, dict):
        raise ValueError(
            f"config file {path} must hold a mapping of settings, got {type(values).__name__}"
        )
    unknown = set(values) - field_names()
    if unknown:
        raise ValueError(
            f"config file {path}: unknown setting(s) {sorted(unknown)}; known: {sorted(field_names())}"
        )
    if "hparams" in values:  # merged with the presets' before the config is built
        try:
            values["hparams"] = _typed("hparams", values["hparams"], dict[str, dict[str, Any]])
        except ValueError as err:
            raise ValueError(f"config file {path}: {err}") from None
    return values


def merge_hparams(*layers: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for method, values in (layer or {}).items():
            merged.setdefault(method, {}).update(values)
    return merged
