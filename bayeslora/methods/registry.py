"""The method registry: built-ins and third-party plugins behind one name lookup.

Two ways in, one table:
- ``@register_method("name")`` on a :class:`Method` subclass registers it in-process.
- Installed packages declare an entry point in the group ``bayeslora.methods``
  (``name = "package.module:Class"``). The built-in methods are declared the same way in
  bayeslora's own ``pyproject.toml``, so a plugin is a first-class citizen.

Entry points are only *read* until a method is asked for: its module is imported on
first use (``get_method``), so a broken or heavy plugin costs nothing unless selected.

Composite names ``"A+B"``, where B is a post-hoc method (``bayeslora.methods.posthoc``),
are built on request by ``B.wrap(A)`` and cached; they are not listed as methods.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import warnings
from dataclasses import dataclass
from importlib.metadata import entry_points

from bayeslora.methods.base import Method, MethodConfig

ENTRY_POINT_GROUP = "bayeslora.methods"
BUILTIN_DISTRIBUTION = "bayeslora"


class RegistryError(LookupError):
    """Unknown, duplicate or unloadable method name."""


@dataclass
class _Entry:
    name: str
    source: str  # "built-in", "plugin <dist> <version>" or "in-process"
    target: str  # "module:Class", what will be imported
    cls: type[Method] | None = None


_entries: dict[str, _Entry] = {}
_entry_points_read = False
_composites: dict[str, type[Method]] = {}  # "A+B" -> B.wrap(A)


def register_method(name: str):
    """Class decorator registering a :class:`Method` under ``name``.

    When the module being decorated is the target of an entry point of the same name
    (that is how built-ins and plugins load), this completes that entry; any other
    second registration of a name is an error.
    """

    def decorate(cls: type[Method]) -> type[Method]:
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise TypeError(
                f"@register_method({name!r}) must decorate a Method subclass, got {cls!r}"
            )
        _read_entry_points()
        target = f"{cls.__module__}:{cls.__qualname__}"
        existing = _entries.get(name)
        if existing is not None and not (existing.cls is None and existing.target == target):
            raise RegistryError(
                f"method name '{name}' is already registered by {existing.source} ({existing.target}); "
                f"cannot register {target} under the same name"
            )
        cls.name = name
        check_method_class(
            cls, f"method '{name}' ({existing.source if existing else 'in-process'}, {target})"
        )
        if existing is None:
            _entries[name] = _Entry(name, "in-process", target, cls)
        else:
            existing.cls = cls
        return cls

    return decorate


def _read_entry_points() -> None:
    global _entry_points_read
    if _entry_points_read:
        return
    _entry_points_read = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "unknown"
        source = "built-in" if dist == BUILTIN_DISTRIBUTION else f"plugin {dist} {ep.dist.version}"
        existing = _entries.get(ep.name)
        if existing is not None:
            if existing.target == ep.value:  # the same package seen twice on sys.path
                continue
            raise RegistryError(
                f"method name '{ep.name}' is declared twice: by {existing.source} ({existing.target}) "
                f"and by {source} ({ep.value}); uninstall one of them"
            )
        _entries[ep.name] = _Entry(ep.name, source, ep.value)


def available_methods() -> dict[str, str]:
    """Name → source of every known method, without importing any of them."""
    _read_entry_points()
    return {name: entry.source for name, entry in sorted(_entries.items())}


def get_method(name: str) -> type[Method]:
    """The :class:`Method` class registered as ``name``, importing its module if needed."""
    _read_entry_points()
    base, posthoc = split_method_name(name)
    if posthoc:
        return _composite(name)
    entry = _entries.get(base)
    if entry is None:
        known = sorted(_entries)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise RegistryError(f"unknown method '{name}'.{hint} Known methods: {', '.join(known)}")
    if entry.cls is None:
        module_name, _, attr = entry.target.partition(":")
        try:
            module = importlib.import_module(module_name)
            cls = getattr(module, attr) if attr else None
        except Exception as err:  # a broken plugin must name itself, not crash the harness
            raise RegistryError(
                f"method '{name}' ({entry.source}) failed to import {entry.target}: {err!r}"
            ) from err
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise RegistryError(
                f"method '{name}' ({entry.source}): {entry.target} is not a Method subclass"
            )
        cls.name = name
        if cls is not entry.cls:  # the module's @register_method may have checked it already
            check_method_class(cls, f"method '{name}' ({entry.source}, {entry.target})")
        entry.cls = cls
    return entry.cls


def check_method_class(cls: type[Method], where: str) -> None:
    """What the harness relies on in a method class, checked when it is loaded, so that a
    broken plugin is named with what to fix instead of failing in the middle of a run:
    a ``Config`` dataclass that subclasses MethodConfig with a default for every field
    (and whose ``ranges`` and ``learning_rates`` name its fields), ``fit`` and
    ``predict_proba`` implemented, and prediction modes with distinct names."""
    problems = []
    config = getattr(cls, "Config", None)
    if not (isinstance(config, type) and issubclass(config, MethodConfig)):
        problems.append(
            f"its Config ({config!r}) must be a dataclass subclassing "
            "bayeslora.methods.MethodConfig"
        )
    elif not dataclasses.is_dataclass(config):
        problems.append(f"its Config {config.__qualname__} must be decorated with @dataclass")
    else:
        fields = {f.name: f for f in dataclasses.fields(config)}
        no_default = [
            n
            for n, f in fields.items()
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        if no_default:
            problems.append(f"every Config field needs a default; {no_default} have none")
        for attr in ("ranges", "learning_rates"):
            stray = sorted(set(getattr(config, attr)) - set(fields))
            if stray:
                problems.append(f"Config.{attr} names {stray}, which are not Config fields")
        rates = [n for n in fields if n == "lr" or n.endswith(("_lr", "learning_rate"))]
        if rates and not config.learning_rates:
            warnings.warn(
                f"{where}: its Config has {rates} but declares no learning_rates, so presets "
                "that scale learning rates (the embedded preset: 10x) leave them as they are; "
                f"declare learning_rates = {tuple(rates)!r} if they are",
                stacklevel=3,
            )
    if inspect.isabstract(cls):
        problems.append(f"it does not implement {sorted(cls.__abstractmethods__)}")
    if not problems:
        try:
            names = [m.name for m in cls(cls.Config()).modes()]
        except Exception as err:
            problems.append(f"its default instance cannot declare its prediction modes ({err!r})")
        else:
            if not names or len(set(names)) != len(names):
                problems.append(f"prediction_modes() must declare distinct names, got {names}")
    if problems:
        raise RegistryError(f"{where} cannot be used: " + "; ".join(problems))


def split_method_name(name: str) -> tuple[str, tuple[str, ...]]:
    """``"ivon+temperature"`` -> ``("ivon", ("temperature",))``: a method and the post-hoc
    steps after it. The one place where a user's method name is taken apart."""
    base, *posthoc = name.split("+")
    if not base or not all(posthoc):
        raise RegistryError(
            f"'{name}' is not a method name: a composite is METHOD+POSTHOC, e.g. adamw+temperature"
        )
    return base, tuple(posthoc)


def _composite(name: str) -> type[Method]:
    """``"A+B"``: method A, then the post-hoc method B fitted on held-out data."""
    from bayeslora.methods.posthoc import PostHocMethod

    cls = _composites.get(name)
    if cls is None:
        base, steps = split_method_name(name)
        cls = get_method(base)
        for step in steps:  # "A+B+C" is ("A+B")+C
            posthoc = get_method(step)
            if not issubclass(posthoc, PostHocMethod):
                raise RegistryError(
                    f"'{step}' cannot follow '+' (in '{name}'): only post-hoc methods such as "
                    f"temperature can"
                )
            inner_name = cls.name
            cls = posthoc.wrap(cls)
            cls.name = f"{inner_name}+{step}"
        _composites[name] = cls
    return cls


def describe_methods() -> list[tuple[str, str, str]]:
    """(name, source, one-line description) for every method, importing each.

    A method that fails to import gives a warning and a row saying so; the others are
    listed as usual.
    """
    rows = []
    for name, source in available_methods().items():
        try:
            cls = get_method(name)
            doc = (cls.__doc__ or "").strip().splitlines()
            rows.append((name, source, doc[0] if doc else ""))
        except RegistryError as err:
            warnings.warn(str(err), stacklevel=2)
            rows.append((name, source, f"(failed to import: {err.__cause__!r})"))
    return rows


def unregister_method(name: str) -> None:
    """Remove an in-process registration (for tests and notebooks)."""
    _entries.pop(name, None)
    _composites.clear()  # some may have been built from it
