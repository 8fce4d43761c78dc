"""The one interface every method implements: ``fit`` then ``predict_proba``.

Lifecycle (one instance per run)::

    method = get_method("ivon")(config, train=TrainSettings(steps=500, seed=0))
    method.fit(classifier, train_data, val_data)         # trains the LoRA adapter
    for mode in method.modes():                          # PredictionMode values
        probs = method.predict_proba(eval_data, mode)    # [N, K], rows sum to one

Hyperparameters are a typed dataclass (``Config``) with defaults; ``search_space``
proposes values for them from an optuna trial, so the tuner needs no special cases.

A method that trains with gradients calls :meth:`Method.training_loop`, which wires the
shared loop to the harness: training logs (``on_log``), evaluation during training
(``--eval-every``, pruning) and mid-run checkpoints (``--checkpoint-every``).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

from torch import Tensor

from bayeslora.methods.modes import PredictionMode, as_mode
from bayeslora.models.classifier import AnswerTokenClassifier
from bayeslora.training.checkpoint import Checkpointer
from bayeslora.training.loop import LogCallback, check_finite, train_loop
from bayeslora.training.settings import TrainSettings

__all__ = ["LogCallback", "Method", "MethodConfig", "Range"]


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric hyperparameter may take: ``low`` to ``high``, each end included
    unless ``*_open`` says otherwise."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        """What a value must be: "> 0", ">= 1", "in [0, 1)"."""
        if math.isinf(self.high):
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        low = "(" if self.low_open else "["
        high = ")" if self.high_open else "]"
        return f"in {low}{self.low:g}, {self.high:g}{high}"


POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
AT_LEAST_ONE = Range(1)
UNIT_OPEN_TOP = Range(0, 1, high_open=True)  # momentum coefficients: [0, 1)


@dataclasses.dataclass
class MethodConfig:
    """Base class of a method's hyperparameters. Subclasses add typed fields with defaults.

    Every construction is validated (``__post_init__`` calls :meth:`validate`), so a bad
    value fails when the run's settings are resolved, before anything loads: a float
    field must be finite, and a field named in ``ranges`` must lie in its :class:`Range`.
    A subclass with its own ``__post_init__`` calls ``super().__post_init__()``.
    """

    # name -> the values the field may take; a subclass extends its parent's:
    # ranges = {**AdamWConfig.ranges, "members": AT_LEAST_ONE}
    ranges: ClassVar[dict[str, Range]] = {}
    # The fields that are learning rates (what a preset's learning-rate scale multiplies).
    learning_rates: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first field whose value is not allowed."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if not math.isfinite(value):
                raise ValueError(f"{f.name}={value} must be a finite number")
            allowed = self.ranges.get(f.name)
            if allowed is not None and not allowed.contains(value):
                raise ValueError(f"{f.name}={value:g} must be {allowed}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MethodConfig:
        """Build from strings or numbers (CLI, config file, optuna), checking names and
        converting each value to its field's annotated type (``float``, ``int``, ``bool``,
        ``str``, or one of them ``| None``, where "none" gives None)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(values) - set(fields)
        if unknown:
            raise ValueError(
                f"unknown hyperparameter(s) {sorted(unknown)} for {cls.__qualname__}; "
                f"known: {sorted(fields)}"
            )
        kinds = _field_kinds(cls)
        converted = {}
        for name, value in values.items():
            kind, optional = kinds[name]
            if optional and (value is None or str(value).lower() in ("none", "null")):
                converted[name] = None
                continue
            try:
                converted[name] = _convert(value, kind)
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"hyperparameter {name}={value!r}: expected {kind.__name__} ({err})"
                ) from err
        return cls(**converted)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _field_kinds(cls: type[MethodConfig]) -> dict[str, tuple[type, bool]]:
    """Field name -> (the type a value converts to, whether None is allowed), from the
    annotations; where one cannot be read, the type of the default value."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that does not resolve: fall back to the defaults
        hints = {}
    defaults, kinds = cls(), {}
    for f in dataclasses.fields(cls):
        hint = hints.get(f.name)
        args = (
            typing.get_args(hint)
            if typing.get_origin(hint) in (typing.Union, types.UnionType)
            else ()
        )
        optional = type(None) in args
        plain = [a for a in args if a is not type(None)]
        if len(plain) == 1:
            hint = plain[0]
        kind = hint if hint in (int, float, str, bool) else type(getattr(defaults, f.name))
        kinds[f.name] = (kind, optional)
    return kinds


def _convert(value: Any, kind: type) -> Any:
    if kind is bool and isinstance(value, str):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError("use true or false")
    if kind in (int, float, str, bool):
        converted = kind(float(value)) if kind is int and isinstance(value, str) else kind(value)
        if kind is int and float(value) != converted:
            raise ValueError("not a whole number")
        return converted
    return value


class Method(ABC):
    """A way of training a LoRA adapter and predicting with it (MAP, IVON, Laplace, ...)."""

    name: ClassVar[str] = ""  # the registry name; set by @register_method
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    # Per-task hyperparameter defaults from the method's paper, applied before user
    # overrides: {"arc_easy": {"ess": 1e6}, ...}. Tasks not listed use Config's defaults.
    task_defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    # Methods that need held-out data (e.g. to tune a temperature) set this; the
    # harness then carves a seeded validation part out of the training data.
    needs_validation: ClassVar[bool] = False
    # Whether a checkpoint saved by training_loop lets an interrupted fit continue. A
    # method whose state outlives one loop (the members of an ensemble) sets False, and
    # the harness then says that an interrupted cell restarts.
    checkpointable: ClassVar[bool] = True
    # Libraries beyond torch/transformers/peft whose version changes this method's results:
    # part of its cells' keys (README, "Resume").
    key_libraries: ClassVar[tuple[str, ...]] = ()
    # Whether the method works on a base quantized by bitsandbytes (--quantization). One
    # that does not sets False with the reason, and the harness refuses it before loading.
    quantized_base: ClassVar[bool] = True
    quantized_base_reason: ClassVar[str] = ""
    # Whether fit trains the adapter. One that does not (the zero-shot ``pretrained``) gets
    # no checkpoints, and the tuner leaves it alone (there is nothing to tune).
    trains: ClassVar[bool] = True
    # Whether the method can scale its posterior's variance at test time (IVON's tau):
    # such a method implements predict_samples_at, and --tau-grid draws its tau curve.
    scales_posterior: ClassVar[bool] = False

    def __init__(
        self,
        config: MethodConfig | None = None,
        *,
        train: TrainSettings | None = None,
        on_log: LogCallback | None = None,
    ):
        self.config = config if config is not None else self.Config()
        if not isinstance(self.config, self.Config):
            raise TypeError(
                f"{type(self).__name__} takes a {self.Config.__name__}, got {type(self.config).__name__}"
            )
        self.train_settings = train if train is not None else TrainSettings()
        self.on_log = on_log
        self.history: list[dict[str, float]] = []  # training log: one dict per logged step
        # Set by the harness before fit (--checkpoint-every); training_loop uses it.
        self.checkpointer: Checkpointer | None = None
        self._loop_runs = 0  # training_loop calls: a fit without any logged no curve

    @property
    def used_training_loop(self) -> bool:
        """Whether ``fit`` trained through :meth:`training_loop` (and so logged its
        curve, evaluated every ``--eval-every`` steps and could be pruned)."""
        return self._loop_runs > 0

    @abstractmethod
    def fit(self, model: AnswerTokenClassifier, train, val=None) -> None:
        """Train ``model``'s LoRA weights on ``train`` (a dataset of ``tasks/encoding.py``)."""

    @abstractmethod
    def predict_proba(self, data, mode: PredictionMode | str | None = None) -> Tensor:
        """Class probabilities ``[N, K]`` for ``data`` in its order; rows sum to one.

        ``mode``: one of :meth:`prediction_modes` as declared there (None: the first)."""

    def predict_samples(self, data, mode: PredictionMode | str | None = None) -> Tensor:
        """The stochastic predictions a SAMPLED mode averages, ``[S, N, K]``, in order: their
        mean over the first axis is :meth:`predict_proba`'s answer, and the running mean over
        the first k is the samples curve of the reports. A sampling method overrides this
        (and answers :meth:`predict_proba` from it); the default is that answer as the one
        sample."""
        return self.predict_proba(data, mode).unsqueeze(0)

    def predict_samples_at(self, data, tau: float) -> Tensor:
        """:meth:`predict_samples` of the sampled mode with the posterior variance scaled by
        ``tau`` (0: the mean, 1: the posterior), for methods that set ``scales_posterior``."""
        raise NotImplementedError(f"{self.name} does not scale a posterior (scales_posterior)")

    def prediction_modes(self) -> tuple[PredictionMode | str, ...]:
        """The prediction modes this method reports, each logged as its own result row.

        Override to declare several (``PredictionMode`` values, or plain names, which are
        POINT modes); the default is one POINT mode named after the method.
        """
        return (PredictionMode(self.name),)

    def modes(self) -> tuple[PredictionMode, ...]:
        """:meth:`prediction_modes` as ``PredictionMode`` values (what the harness reads)."""
        return tuple(as_mode(m) for m in self.prediction_modes())

    def declared_mode(self, mode: PredictionMode) -> PredictionMode | str:
        """``mode`` as :meth:`prediction_modes` declared it, which is what the harness passes
        to :meth:`predict_proba`: a method that declared plain names gets a name back."""
        for declared in self.prediction_modes():
            if as_mode(declared).name == mode.name:
                return declared
        raise ValueError(f"{self.name} has no prediction mode '{mode.name}'")

    def training_loop(self, model, train, optimizer, val=None, **loop_options) -> list[dict]:
        """The shared training loop (``bayeslora.training.loop.train_loop``) with the
        harness's wiring: ``on_log``, evaluation on ``val`` every ``--eval-every`` steps
        (what the tuner prunes on) and checkpoints, including this method's
        :meth:`checkpoint_state`. ``loop_options``: ``sample_context``,
        ``samples_per_batch``, ``after_step``, or replacements for ``evaluate``/``on_log``."""
        self._loop_runs += 1
        options = {
            "evaluate": self._evaluator(val),
            "on_log": self.on_log,
            "checkpoint": self.checkpointer,
            "state": self,
            **loop_options,
        }
        return train_loop(model, train, optimizer, self.train_settings, **options)

    def checkpoint_state(self) -> Any:
        """State of this method that changes during training, beyond the adapter and the
        optimizer (which the loop saves itself): tensors, dicts, lists, numbers or None."""
        return None

    def load_checkpoint_state(self, state: Any) -> None:  # noqa: B027 (optional hook)
        """Restore what :meth:`checkpoint_state` returned."""

    def extra_metrics(self) -> dict[str, float]:
        """Method-specific numbers worth logging (fit memory, time of a Laplace fit, ...)."""
        return {}

    @classmethod  # noqa: B027 (an optional hook)
    def check_lora(cls, lora) -> None:
        """Refuse LoRA settings (``models.classifier.LoraSettings``) this method cannot use,
        with a ValueError; called when the run's settings are checked, before loading."""

    @classmethod
    def search_space(cls, trial) -> dict[str, Any]:
        """Hyperparameter values proposed by an optuna ``trial`` (a subset of Config's fields)."""
        return {}

    def validation_metrics(self, data) -> dict[str, float]:
        """Calibration metrics of the primary prediction mode on ``data`` (used during training)."""
        return self.score_validation(self.predict_proba(data), data)

    @staticmethod
    def score_validation(probs: Tensor, data) -> dict[str, float]:
        """Metrics of ``probs`` on validation ``data``; non-finite ones are divergence."""
        from bayeslora.metrics import calibration_metrics

        return calibration_metrics(check_finite(probs, "validation predictions"), data.labels)

    def _evaluator(self, val) -> Callable[[], dict[str, float]] | None:
        return (lambda: self.validation_metrics(val)) if val is not None else None

    @classmethod
    def make_config(
        cls, task: str | None = None, overrides: dict[str, Any] | None = None
    ) -> MethodConfig:
        """Config from the method's defaults, then its per-task defaults (the method's
        ``task_defaults``, then the task's ``method_defaults`` for this method), then
        ``overrides``. A bad value is a ValueError naming the method and how to set it."""
        try:
            return cls.Config.from_dict({**cls.defaults_for(task), **(overrides or {})})
        except ValueError as err:
            raise ValueError(
                f"method '{cls.name}': {err} (set it with --hp {cls.name}.NAME=VALUE or "
                f"hparams: {{{cls.name}: {{NAME: VALUE}}}} in a config file)"
            ) from None

    @classmethod
    def defaults_for(cls, task: str | None) -> dict[str, Any]:
        """The per-task defaults for ``task``: the method's own, under the task's."""
        from bayeslora.tasks import get_task

        if task is None:
            return {}
        try:
            declared = get_task(task).method_defaults.get(cls.name, {})
        except KeyError:  # not a registered task (a jsonl source's name, a test's)
            declared = {}
        return {**cls.task_defaults.get(task, {}), **declared}

    @classmethod
    def defaults_notice(cls, task: str, overrides: dict[str, Any] | None = None) -> str | None:
        """What a reader should know when this method sets some hyperparameters per task
        but neither ``task``'s defaults nor ``overrides`` give them: which ones fall back to
        the Config's defaults (chosen for other tasks). None when nothing falls back."""
        per_task = {k for values in cls.task_defaults.values() for k in values}
        missing = sorted(per_task - set(cls.defaults_for(task)) - set(overrides or {}))
        if not missing:
            return None
        defaults = cls.Config()
        values = ", ".join(f"{k}={getattr(defaults, k)!r}" for k in missing)
        return (
            f"{cls.name} has no per-task value of {', '.join(missing)} for {task} (it has them "
            f"for {', '.join(sorted(cls.task_defaults))}): using {values}; set them with "
            f"--hp {cls.name}.NAME=VALUE or the task's method_defaults"
        )

    def _check_mode(self, mode: PredictionMode | str | None) -> PredictionMode:
        """The declared mode that ``mode`` (a mode, its name, or None: the first) names."""
        modes = self.modes()
        if mode is None:
            return modes[0]
        name = mode.name if isinstance(mode, PredictionMode) else mode
        for declared in modes:
            if declared.name == name:
                return declared
        names = [m.name for m in modes]
        raise ValueError(f"{self.name} has no prediction mode '{name}'; it has {names}")
