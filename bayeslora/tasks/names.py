"""Lookup errors for named things (tasks, templates) with a "did you mean" hint."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UnknownNameError(KeyError):
    """A task or template name that is not registered.

    A KeyError because it is a failed lookup; ``__str__`` is overridden because
    KeyError would otherwise print the message as a quoted repr.
    """

    def __str__(self) -> str:
        return str(self.args[0])


def unknown_name(kind: str, name: str, known: Iterable[str]) -> UnknownNameError:
    """Build the error for an unknown ``name`` of the given ``kind``, listing the known names."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return UnknownNameError(f"Unknown {kind} {name!r}.{hint} Known {kind}s: {', '.join(known)}.")
