"""The experiment cell: one (task, method, seed), fully resolved, with a stable key.

The unit of work of the bench, the tuner and anything that spreads work over machines:
:class:`Cell` (``spec.py``) says what to compute and hashes it into ``cell.key``;
:func:`run_cell` (``run.py``) computes it and returns a :class:`CellResult`.
"""

from bayeslora.cell.run import CellData, CellResult, ModeResult, OodResult, run_cell
from bayeslora.cell.spec import Cell

__all__ = ["Cell", "CellData", "CellResult", "ModeResult", "OodResult", "run_cell"]
