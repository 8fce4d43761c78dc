"""Temperature scaling (Guo et al. 2017): the cheap calibration baseline.

One scalar T per prediction mode, fitted on held-out data by minimising the NLL of
``softmax(log p / T)``; T > 1 softens over-confident predictions, T < 1 sharpens. The
argmax, hence the accuracy, never changes. Every calibration claim should beat it.

Use it after any method: ``--methods ivon+temperature`` (modes "ivon+temperature" and
"ivon@mean+temperature", one T each). ``--methods temperature`` alone means
``adamw+temperature``. The bench holds out ``--val-fraction`` of the training data for it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from bayeslora.methods.adamw import AdamW
from bayeslora.methods.modes import PredictionMode
from bayeslora.methods.posthoc import PostHocMethod
from bayeslora.methods.registry import register_method

# T is kept in [1/100, 100] (our choice): on separable held-out data the NLL keeps falling
# as T -> 0, and a T outside this range says the held-out part is too small to trust.
MIN_TEMPERATURE, MAX_TEMPERATURE = 1e-2, 1e2


def fit_temperature(logits: Tensor, labels: Tensor, *, max_iter: int = 100) -> float:
    """The T minimising ``cross_entropy(logits / T, labels)``.

    L-BFGS as Guo et al. (2017, Sec. 4.2), on log T so that T stays positive.
    """
    if len(logits) == 0:
        raise ValueError("cannot fit a temperature on no examples")
    logits, labels = logits.detach().double().cpu(), labels.cpu()
    bound = math.log(MAX_TEMPERATURE)  # == -log(MIN_TEMPERATURE)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.clamp(-bound, bound).exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return min(max(math.exp(log_t.item()), MIN_TEMPERATURE), MAX_TEMPERATURE)


def log_probs(probs: Tensor) -> Tensor:
    """Logits for probabilities, up to a per-row constant (which softmax ignores)."""
    return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()


def apply_temperature(probs: Tensor, temperature: float) -> Tensor:
    return (log_probs(probs) / temperature).softmax(-1)


@register_method("temperature")
class TemperatureScaling(PostHocMethod):
    """Temperature scaling (Guo et al. 2017) after any method ("ivon+temperature"); alone, after AdamW.

    No hyperparameters of its own: the composite's are the inner method's. The fitted
    temperatures are logged as ``temperature`` (first inner mode) and e.g.
    ``temperature_ivon_mean`` (for "ivon@mean").
    """

    inner = AdamW
    Config = AdamW.Config
    task_defaults = AdamW.task_defaults

    def __init__(self, config=None, *, train=None, on_log=None):
        super().__init__(config, train=train, on_log=on_log)
        self.temperatures: dict[PredictionMode, float] = {}  # inner mode -> T

    def fit_posthoc(self, inner_mode: PredictionMode, probs: Tensor, labels: Tensor) -> None:
        self.temperatures[inner_mode] = fit_temperature(log_probs(probs), labels)

    def transform(self, inner_mode: PredictionMode, probs: Tensor) -> Tensor:
        return apply_temperature(probs, self.temperatures[inner_mode])

    def posthoc_metrics(self) -> dict[str, float]:
        return {self.metric_key("temperature", mode): t for mode, t in self.temperatures.items()}
