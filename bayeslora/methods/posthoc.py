"""Post-hoc methods: recalibrate another method's predictions on held-out data.

A post-hoc method ``B`` follows another method ``A`` in a composite name, ``"A+B"``
(``get_method("ivon+temperature")``). The composite fits ``A`` on the training part, then
``B`` on the held-out part, once per prediction mode of ``A``; its modes are ``A``'s with
``"+B"`` appended ("ivon+temperature", "ivon@mean+temperature"). Its hyperparameters are
``A``'s (``--hp ivon+temperature.ess=1e7``), with ``A``'s per-task defaults.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from typing import Any, ClassVar

from torch import Tensor

from bayeslora.methods.base import Method, MethodConfig
from bayeslora.methods.modes import PredictionMode


class PostHocMethod(Method):
    """Base of methods that may follow ``+``: fit ``inner``, then :meth:`fit_posthoc` on val.

    Subclasses set ``inner`` (what the bare name means, e.g. AdamW for "temperature") and
    implement :meth:`fit_posthoc` and :meth:`transform` for one inner prediction mode.
    """

    needs_validation = True
    inner: ClassVar[type[Method]]  # the method whose predictions are recalibrated
    posthoc_name: ClassVar[str] = ""  # the suffix in mode names; the registry name if empty

    @classmethod
    def wrap(cls, inner: type[Method]) -> type[Method]:
        """A composite class: ``inner`` followed by this post-hoc method (named by the registry)."""
        suffix = cls.posthoc_name or cls.name
        return type(
            f"{inner.__name__}Then{cls.__name__}",
            (cls,),
            {
                "__doc__": f"{inner.name} followed by {suffix} (post-hoc, fitted on held-out data).",
                "__module__": cls.__module__,
                "inner": inner,
                "Config": inner.Config,
                "task_defaults": inner.task_defaults,
                "checkpointable": inner.checkpointable,
                "trains": inner.trains,
                "key_libraries": (*inner.key_libraries, *cls.key_libraries),
                "quantized_base": inner.quantized_base and cls.quantized_base,
                "quantized_base_reason": inner.quantized_base_reason or cls.quantized_base_reason,
                "posthoc_name": suffix,
            },
        )

    @classmethod
    def make_config(
        cls, task: str | None = None, overrides: dict[str, Any] | None = None
    ) -> MethodConfig:
        return cls.inner.make_config(task, overrides)  # the inner method may check more (extras)

    @classmethod
    def defaults_for(cls, task: str | None) -> dict[str, Any]:
        return cls.inner.defaults_for(task)

    @classmethod
    def search_space(cls, trial) -> dict[str, Any]:
        return cls.inner.search_space(trial)

    @property
    def used_training_loop(self) -> bool:
        return self.inner_method.used_training_loop

    def __init__(self, config=None, *, train=None, on_log=None):
        super().__init__(config, train=train, on_log=on_log)
        self.inner_method = self.inner(self.config, train=self.train_settings, on_log=on_log)

    @property
    def _step_name(self) -> str:
        return self.posthoc_name or self.name

    def prediction_modes(self) -> tuple[PredictionMode, ...]:
        return tuple(mode.then(self._step_name) for mode in self.inner_method.modes())

    def fit(self, model, train, val=None) -> None:
        if val is None or len(val) == 0:
            raise ValueError(
                f"{self.name} needs held-out data to fit {self._step_name} on; the bench holds out "
                f"--val-fraction of the training data for it (needs_validation=True)"
            )
        self.inner_method.checkpointer = self.checkpointer  # the inner fit is the training
        self.inner_method.fit(model, train, val)
        self.history = self.inner_method.history
        for mode in self.inner_method.modes():
            self.fit_posthoc(mode, self._inner_proba(val, mode), val.labels)

    def predict_proba(self, data, mode: PredictionMode | str | None = None) -> Tensor:
        inner_mode = self._check_mode(mode).inner
        return self.transform(inner_mode, self._inner_proba(data, inner_mode))

    def _inner_proba(self, data, inner_mode: PredictionMode) -> Tensor:
        inner = self.inner_method
        return inner.predict_proba(data, inner.declared_mode(inner_mode))

    def extra_metrics(self) -> dict[str, float]:
        return {**self.inner_method.extra_metrics(), **self.posthoc_metrics()}

    def metric_key(self, prefix: str, inner_mode: PredictionMode) -> str:
        """An MLflow-safe metric name per inner mode: the first inner mode ("ivon") gets
        ``prefix``, the others ``prefix_<mode name>`` ("temperature_ivon_mean")."""
        if inner_mode == self.inner_method.modes()[0]:
            return prefix
        return f"{prefix}_" + re.sub(r"[^\w.\- /]", "_", inner_mode.name)  # MLflow refuses '@'

    @abstractmethod
    def fit_posthoc(self, inner_mode: PredictionMode, probs: Tensor, labels: Tensor) -> None:
        """Fit on the inner method's held-out probabilities ``[N, K]`` in ``inner_mode``."""

    @abstractmethod
    def transform(self, inner_mode: PredictionMode, probs: Tensor) -> Tensor:
        """Recalibrated probabilities for the inner method's ``probs`` in ``inner_mode``."""

    def posthoc_metrics(self) -> dict[str, float]:
        """What the post-hoc fit found, for the run's metrics."""
        return {}
