"""LoRA dropout whose masks cost a fraction of ``nn.Dropout``'s on a CPU.

On a CPU, torch's dropout draws one float Bernoulli per element (``bernoulli_``). Measured on
SmolLM2-135M with LoRA on q/v (benchmarks/dropout_masks.py): 16 % of a bf16 training step and
8 % of an fp32 one, and 1.12-1.24x the time of a deterministic pass when MC Dropout samples
at test time. :class:`LoraDropout` draws the same masks from sixteen random bits per element
instead, four elements per 64-bit word: an element is dropped when its 16-bit lane falls below
``p * 2**16``, so the rate is ``p`` rounded to a multiple of 2**-16 (0.1 becomes 0.100006,
:func:`effective_rate`), and every element is dropped independently of all others.

The words come from numpy's SFC64 on a CPU (about 1.4x faster than torch's ``random_``
there, measured in the same script), seeded by one draw from the torch generator, so
``torch.manual_seed`` (and a checkpoint's saved RNG state) still fixes every mask. On other
devices training keeps torch's fused dropout kernel (nothing here was measured on a GPU), and
MC Dropout's seeded sampling draws the words from torch's generator on that device.

:func:`bayeslora.models.classifier.lora_classifier` puts a :class:`LoraDropout` in place of
each of peft's LoRA dropout layers, for training and for MC Dropout's test-time sampling
(which gives the layers a generator of its own, :func:`sampling_lora_dropout`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd import forward_ad

LANE_BITS = 16  # random bits per mask element: the rate is a multiple of 2**-16


def effective_rate(p: float) -> float:
    """The dropout rate :class:`LoraDropout` draws for a layer of rate ``p``."""
    return _dropped_lanes(p) / 2**LANE_BITS


def _dropped_lanes(p: float) -> int:
    """How many of the 2**16 lane values drop an element."""
    return min(max(round(p * 2**LANE_BITS), 0), 2**LANE_BITS)


def lane_threshold(p: float) -> int:
    """The lowest lane value that keeps an element at rate ``p``; for ``0 < q < 1``
    (:func:`effective_rate`) it is in (-2**15, 2**15), an int16."""
    return _dropped_lanes(p) - 2 ** (LANE_BITS - 1)


def random_lanes(n: int, device: torch.device, generator: torch.Generator | None) -> Tensor:
    """``n`` independent 16-bit integers, uniform on [-2**15, 2**15), on ``device``."""
    if torch.device(device).type == "cpu":
        return numpy_lanes(n, generator)
    return torch_lanes(n, device, generator)


def numpy_lanes(n: int, generator: torch.Generator | None = None) -> Tensor:
    """The CPU's lanes: numpy's SFC64 (its raw stream is stable across numpy versions),
    seeded by one draw from ``generator``."""
    device = generator.device if generator is not None else "cpu"
    seed = int(torch.randint(0, 2**63 - 1, (), generator=generator, device=device))
    words = np.random.SFC64(seed).random_raw((n + 3) // 4)  # uint64, four lanes each
    return torch.from_numpy(words.view(np.int16)[:n])


def torch_lanes(n: int, device, generator: torch.Generator | None = None) -> Tensor:
    """Other devices' lanes: torch's generator there (a GPU's draws in parallel)."""
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device)
    return words.random_(-(2**63), None, generator=generator).view(torch.int16)[:n]


def lane_dropout(x: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """``x`` with each element zeroed at rate ``q =`` :func:`effective_rate` ``(p)`` and the
    rest scaled by ``1 / (1 - q)``; masks from ``generator`` (default: torch's global one).
    Under ``vmap`` the seed drawn from the generator is a random op: it works with
    ``randomness="same"`` only, and then one mask serves the whole batch of calls."""
    dropped = _dropped_lanes(p)
    if dropped == 0:
        return x
    if dropped == 2**LANE_BITS:
        return x * 0.0
    return apply_lanes(x, random_lanes(x.numel(), x.device, generator).view(x.shape), p)


def apply_lanes(x: Tensor, lanes: Tensor, p: float) -> Tensor:
    """``x`` with the elements whose 16-bit lane is among the lowest ``p * 2**16`` values
    zeroed, the rest scaled by ``1 / (1 - q)`` (``q =`` :func:`effective_rate` ``(p)``, with
    ``0 < q < 1``: :func:`lane_dropout` handles the two ends without drawing)."""
    threshold = lane_threshold(p)
    scale = 1.0 / (1.0 - effective_rate(p))
    if not _plain(x, lanes):
        # training (autograd keeps the mask for the backward, one byte per element as a
        # bool), forward-mode AD and torch.func transforms
        return torch.mul(x, lanes >= threshold).mul_(scale)
    # Without autograd (MC Dropout's test-time passes), the comparison's result is cast
    # into a tensor of x's dtype, then scale * x * mask is one kernel (added to a broadcast
    # zero) writing into that same memory: torch's CPU kernels that read a bool tensor are
    # not vectorized, and this takes 0.55-0.60 of the time of x * bool * scale
    # (benchmarks/dropout_masks.py, float_mask_over_bool_mask_apply).
    kept = torch.ge(lanes, threshold, out=torch.empty_like(x))
    return torch.addcmul(x.new_zeros(()), x, kept, value=scale, out=kept)


def _plain(*tensors: Tensor) -> bool:
    """Whether the ``out=`` kernels of the test-time path may run on ``tensors``: nothing
    differentiates them (reverse-mode autograd, a forward-mode dual tensor) and no
    ``torch.func`` transform (``vmap``, ``jvp``, ``jacrev``) wraps them; those support no
    ``out=``."""
    return not any(
        (torch.is_grad_enabled() and t.requires_grad)
        or torch._C._functorch.is_functorch_wrapped_tensor(t)  # no public test for this
        or forward_ad.unpack_dual(t).tangent is not None
        for t in tensors
    )


class LoraDropout(nn.Dropout):
    """``nn.Dropout`` with :func:`lane_dropout`'s masks. ``generator`` (None: torch's global
    one) is set by :func:`sampling_lora_dropout`."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__(p)
        self.generator: torch.Generator | None = None

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu" and self.generator is None:
            return F.dropout(x, self.p, training=True)  # a GPU's own kernel is fused
        return lane_dropout(x, self.p, self.generator)


def use_lora_dropout(model: nn.Module) -> list[LoraDropout]:
    """Replace each ``nn.Dropout`` under a ``lora_dropout`` container of ``model`` (peft's
    layout) by a :class:`LoraDropout` of the same rate; returns them."""
    replaced = []
    for name, parent in list(model.named_modules()):
        if not (name.endswith("lora_dropout") and isinstance(parent, nn.ModuleDict)):
            continue
        for key, layer in list(parent.items()):
            if isinstance(layer, nn.Dropout) and not isinstance(layer, LoraDropout):
                lane = LoraDropout(layer.p)
                lane.train(layer.training)
                parent[key] = lane
                replaced.append(lane)
    return replaced


@contextmanager
def sampling_lora_dropout(
    layers: Sequence[LoraDropout], generator: torch.Generator
) -> Iterator[None]:
    """While open, ``layers`` drop (in train or eval mode) with masks from ``generator``."""
    for layer in layers:
        if not isinstance(layer, LoraDropout):
            raise TypeError(f"expected LoraDropout layers, got {type(layer).__name__}")
    saved = [(layer.training, layer.generator) for layer in layers]
    for layer in layers:
        layer.train()
        layer.generator = generator
    try:
        yield
    finally:
        for layer, (training, previous) in zip(layers, saved, strict=True):
            layer.train(training)
            layer.generator = previous
