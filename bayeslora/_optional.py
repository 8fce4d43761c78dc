"""Optional dependencies that fail only when used.

Importing bayeslora never imports laplace-torch, bitsandbytes or gguf; the code
that needs one calls :func:`require` at the point of use and gets an
:class:`OptionalDependencyError` that names the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class OptionalDependencyError(ImportError):
    """An optional dependency is missing; the message says which extra brings it."""


def require(module: str, *, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise an error naming ``pip install 'bayeslora[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise OptionalDependencyError(
            f"{purpose} needs the optional dependency '{module}', which is not installed "
            f"({err}). Install it with: pip install 'bayeslora[{extra}]'"
        ) from err
