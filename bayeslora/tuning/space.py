"""Search spaces: the method's proposal, the LoRA part every method shares, user overrides.

Each method proposes its own hyperparameters (``Method.search_space(trial)``); the LoRA
settings are common to all methods, so they are proposed here, once. A user replaces any
proposal from the config file, without code::

    search_space:
      ivon:                                   # a method name, or "all" for every method
        ess: {type: float, low: 1e5, high: 1e9, log: true}
        hess_init: {type: float, low: 1e-5, high: 1e-2, log: true}
        mc_samples: {type: int, low: 1, high: 4}          # step: 1, log: false by default
        lora_rank: {type: categorical, choices: [4, 8]}
        lr: null                              # not tuned: keeps the run's value

Each name is a hyperparameter of that method (its Config field, tuned even if the
method does not propose it) or one of ``lora_rank``, ``lora_alpha``, ``lora_dropout``.
An entry replaces the method's proposal for that name; ``null`` removes the name from the
search (the value then comes from ``--hp``/``--lora-*`` or the default). Entries under
``all`` apply to every method that has that hyperparameter; a method's own entry wins.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)

from bayeslora.models.classifier import LoraSettings

ALL_METHODS = "all"  # not "*": MLflow refuses it in the logged config's param names

# The LoRA part of every method's space. Rank and alpha around the papers' r=8, alpha=16
# (our choice: one step either side and beyond, as the issue asks); dropout from off to
# twice the papers' 0.1.
LORA_SPACE: dict[str, BaseDistribution] = {
    "lora_rank": CategoricalDistribution([2, 4, 8, 16]),
    "lora_alpha": CategoricalDistribution([8, 16, 32]),
    "lora_dropout": FloatDistribution(0.0, 0.2),
}
# Search-space name → (LoraSettings field, type).
LORA_FIELDS: dict[str, tuple[str, type]] = {
    "lora_rank": ("r", int),
    "lora_alpha": ("alpha", float),
    "lora_dropout": ("dropout", float),
}

_ENTRY_KEYS = {
    "float": {"type", "low", "high", "log", "step"},
    "int": {"type", "low", "high", "log", "step"},
    "categorical": {"type", "choices"},
}


def suggest(trial, name: str, dist: BaseDistribution) -> Any:
    """``trial.suggest_*`` for a distribution object (the public way to sample one)."""
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, list(dist.choices))
    raise TypeError(f"unsupported distribution {dist!r} for '{name}'")


# -- user overrides --------------------------------------------------------------------


def parse_search_space(
    raw: Mapping[str, Any] | None, method_classes: Mapping[str, type]
) -> dict[str, dict[str, BaseDistribution | None]]:
    """Validate the config file's ``search_space`` into {method: {name: distribution or None}}.

    Every selected method gets an entry (possibly empty); ``all`` entries are merged into
    each method that has the hyperparameter. Errors name the entry and the fix.
    """
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        raise ValueError(f"search_space must map method names to entries, got {raw!r}")
    unknown = set(raw) - set(method_classes) - {ALL_METHODS}
    if unknown:
        raise ValueError(
            f"search_space names method(s) {sorted(unknown)} that are not in --methods "
            f"{sorted(method_classes)}; use one of those or '{ALL_METHODS}' for all of them"
        )
    for method, entries in raw.items():
        if not isinstance(entries, Mapping):
            raise ValueError(
                f"search_space.{method} must map hyperparameter names to entries like "
                f"{{type: float, low: 1e-5, high: 1e-3, log: true}}, got {entries!r}"
            )

    shared = raw.get(ALL_METHODS, {})
    for name in shared:
        if name not in LORA_FIELDS and not any(
            _has_field(c, name) for c in method_classes.values()
        ):
            raise ValueError(
                f"search_space.{ALL_METHODS}.{name}: no selected method has a hyperparameter "
                f"'{name}'; LoRA names are {sorted(LORA_FIELDS)}"
            )
    parsed = {}
    for method, cls in method_classes.items():
        entries = {n: e for n, e in shared.items() if n in LORA_FIELDS or _has_field(cls, n)}
        entries.update(raw.get(method, {}))
        parsed[method] = {
            name: _parse_entry(f"search_space.{method}.{name}", cls, name, entry)
            for name, entry in entries.items()
        }
    return parsed


def _has_field(cls, name: str) -> bool:
    return name in {f.name for f in dataclasses.fields(cls.Config)}


def _parse_entry(where: str, cls, name: str, entry: Any) -> BaseDistribution | None:
    if name in LORA_FIELDS:
        kind = LORA_FIELDS[name][1]
    elif _has_field(cls, name):
        kind = type(getattr(cls.Config(), name))
    else:
        fields = sorted(f.name for f in dataclasses.fields(cls.Config))
        raise ValueError(
            f"{where}: '{name}' is not a hyperparameter of {cls.name}; "
            f"known: {fields} and LoRA {sorted(LORA_FIELDS)}"
        )
    if entry is None:
        return None
    if not isinstance(entry, Mapping) or entry.get("type") not in _ENTRY_KEYS:
        raise ValueError(
            f"{where}: expected a mapping with type float, int or categorical "
            f"(e.g. {{type: float, low: 1e-5, high: 1e-3, log: true}}) or null, got {entry!r}"
        )
    kind_name = entry["type"]
    extra = set(entry) - _ENTRY_KEYS[kind_name]
    if extra:
        raise ValueError(
            f"{where}: unknown key(s) {sorted(extra)} for type {kind_name}; "
            f"allowed: {sorted(_ENTRY_KEYS[kind_name])}"
        )

    def value(v: Any) -> Any:  # also YAML's "1e5", which it reads as a string
        return _check_value(where, cls, name, kind, v)

    try:
        if kind_name == "categorical":
            choices = entry.get("choices")
            if not isinstance(choices, list) or not choices:
                raise ValueError("choices must be a non-empty list")
            return CategoricalDistribution([value(c) for c in choices])
        if "low" not in entry or "high" not in entry:
            raise ValueError("low and high are required")
        if kind not in (int, float):
            raise ValueError(f"'{name}' is a {kind.__name__}: use type categorical")
        log = _check_bool(entry.get("log", False))
        if kind_name == "int":
            low, high = _whole(entry["low"]), _whole(entry["high"])
            value(low), value(high)
            step = entry.get("step")
            return IntDistribution(low, high, log=log, step=1 if step is None else _whole(step))
        if kind is int:
            raise ValueError(f"'{name}' is an int: use type int or categorical")
        step = entry.get("step")
        return FloatDistribution(
            value(entry["low"]),
            value(entry["high"]),
            log=log,
            step=None if step is None else float(step),
        )
    except (TypeError, ValueError) as err:
        if str(err).startswith(where):
            raise
        raise ValueError(f"{where}: {err}") from err


def _check_value(where: str, cls, name: str, kind: type, v: Any) -> Any:
    """``v`` converted to the hyperparameter's type, or an error naming the entry."""
    if name in LORA_FIELDS:
        field, _ = LORA_FIELDS[name]
        try:
            converted = kind(float(v)) if kind is int else kind(v)
            if kind is int and float(v) != converted:
                raise ValueError("not a whole number")
            LoraSettings(**{field: converted})  # its own range checks
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: invalid value {v!r} ({err})") from err
        return converted
    config = cls.Config.from_dict({name: v})  # raises naming the name and the expected type
    return getattr(config, name)


def _whole(v: Any) -> int:
    if isinstance(v, bool) or float(v) != int(float(v)):
        raise ValueError(f"{v!r} is not a whole number")
    return int(float(v))


def _check_bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"log must be true or false, got {v!r}")
    return v


# -- proposing a trial's values --------------------------------------------------------


class _Proposer:
    """The optuna trial as a method's ``search_space`` sees it: a user entry replaces the
    method's proposal for that name (``None``: not tuned, the run's value is used)."""

    def __init__(self, trial, overrides: Mapping[str, BaseDistribution | None], defaults):
        self._trial = trial
        self._overrides = overrides
        self._defaults = defaults
        self.seen: set[str] = set()

    def suggest_float(self, name, low, high, *, step=None, log=False):
        return self._suggest(name, FloatDistribution(low, high, step=step, log=log))

    def suggest_int(self, name, low, high, *, step=1, log=False):
        return self._suggest(name, IntDistribution(low, high, step=step, log=log))

    def suggest_categorical(self, name, choices):
        return self._suggest(name, CategoricalDistribution(choices))

    def _suggest(self, name: str, dist: BaseDistribution) -> Any:
        self.seen.add(name)
        dist = self._overrides.get(name, dist)
        if dist is None:
            return self._defaults.get(name)  # the method may compute with it; dropped later
        return suggest(self._trial, name, dist)

    def __getattr__(self, attr):  # trial.number, trial.params, ... for the method's code
        return getattr(self._trial, attr)


class _Recorder:
    """A stand-in trial that records the distributions asked for (to describe a space)."""

    def __init__(self):
        self.distributions: dict[str, BaseDistribution] = {}
        self.number = 0
        self.params: dict[str, Any] = {}

    def suggest_float(self, name, low, high, *, step=None, log=False):
        return self._record(name, FloatDistribution(low, high, step=step, log=log))

    def suggest_int(self, name, low, high, *, step=1, log=False):
        return self._record(name, IntDistribution(low, high, step=step, log=log))

    def suggest_categorical(self, name, choices):
        return self._record(name, CategoricalDistribution(choices))

    def _record(self, name, dist):
        self.distributions[name] = dist
        value = dist.choices[0] if isinstance(dist, CategoricalDistribution) else dist.low
        self.params[name] = value
        return value


@dataclasses.dataclass
class SearchSpace:
    """What one method is tuned over: its own proposal + LoRA, with the user's overrides.

    ``defaults``: the run's value of every hyperparameter and LoRA name (returned to the
    method's code for names the user removed from the search).
    """

    method_cls: type
    overrides: dict[str, BaseDistribution | None]
    defaults: dict[str, Any]

    @classmethod
    def build(cls, method_cls, task: str, hparams: dict, lora: LoraSettings, overrides):
        defaults = method_cls.make_config(task, hparams).to_dict()
        defaults.update({name: getattr(lora, f) for name, (f, _) in LORA_FIELDS.items()})
        return cls(method_cls, dict(overrides), defaults)

    def propose(self, trial) -> tuple[dict[str, Any], dict[str, Any]]:
        """(method hyperparameters, LoRA values) for ``trial``, both keyed by search name."""
        proposer = _Proposer(trial, self.overrides, self.defaults)
        values = dict(self.method_cls.search_space(proposer))
        for name, dist in LORA_SPACE.items():
            if name not in values:  # a method may propose its own range (MC Dropout: p > 0)
                values[name] = proposer._suggest(name, dist)
        for name, dist in self.overrides.items():  # user additions the method does not propose
            if name not in proposer.seen and dist is not None:
                values[name] = suggest(trial, name, dist)
        for name, dist in self.overrides.items():
            if dist is None:
                values.pop(name, None)
        lora = {n: v for n, v in values.items() if n in LORA_FIELDS}
        hparams = {n: v for n, v in values.items() if n not in LORA_FIELDS}
        return hparams, lora

    def describe(self) -> dict[str, str]:
        """{name: optuna's JSON of its distribution}; what the study searches (logged, hashed)."""
        recorder = _Recorder()
        self.propose(recorder)
        return {n: distribution_to_json(d) for n, d in sorted(recorder.distributions.items())}


def lora_from_values(base: LoraSettings, values: Mapping[str, Any]) -> LoraSettings:
    """``base`` with the tuned LoRA values (search names → LoraSettings fields)."""
    return dataclasses.replace(base, **{LORA_FIELDS[n][0]: v for n, v in values.items()})
