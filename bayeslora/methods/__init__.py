"""Methods: one interface (``Method``), a registry, one module per built-in method.

Write a method as a :class:`Method` subclass with a ``Config`` dataclass; register it with
``@register_method("name")`` in-process, or with an entry point in the group
``bayeslora.methods`` in an installed package (how the built-ins are registered too).
"""

from bayeslora.methods.base import (
    AT_LEAST_ONE,
    NON_NEGATIVE,
    POSITIVE,
    UNIT_OPEN_TOP,
    LogCallback,
    Method,
    MethodConfig,
    Range,
)
from bayeslora.methods.registry import (
    RegistryError,
    available_methods,
    describe_methods,
    get_method,
    register_method,
)

__all__ = [
    "AT_LEAST_ONE",
    "NON_NEGATIVE",
    "POSITIVE",
    "UNIT_OPEN_TOP",
    "LogCallback",
    "Method",
    "MethodConfig",
    "Range",
    "RegistryError",
    "available_methods",
    "describe_methods",
    "get_method",
    "register_method",
]
