"""Optimizers. ``IVON`` is our own implementation of Shen et al. 2024 (see ivon.py for why)."""

from bayeslora.optim.ivon import IVON

__all__ = ["IVON"]
