"""What the benchmark scripts share: interleaved timing, FLOP counts, memory, batches.

Rules every figure follows (../shared/notes/perf-anchors.md says why):
- A and B run on the same batch in the same round, in an order that rotates each round,
  and the figure is the median of the per-round ratios (the ratio of the medians is
  printed too).
- Warm-ups first on the longest batch: the first step to meet a new maximum sequence
  length is 40-60 % slower, and no timed step may be that one.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass
class Timings:
    """Seconds per round for each variant of one interleaved measurement."""

    seconds: dict[str, list[float]] = field(default_factory=dict)

    def median(self, name: str) -> float:
        return statistics.median(self.seconds[name])

    def ratio(self, a: str, b: str) -> float:
        """The figure: the median of the per-round ratios a/b. Each round runs a and b on
        the same batch, so batch length cancels out; with few rounds the plain ratio of
        medians can compare a long batch with a short one (measured: 1.11 against 0.99)."""
        return statistics.median(
            x / y for x, y in zip(self.seconds[a], self.seconds[b], strict=True)
        )

    def ratio_of_medians(self, a: str, b: str) -> float:
        return self.median(a) / self.median(b)


def interleave(
    variants: dict[str, Callable[[int], float | None]], rounds: int, warmups: int = 1
) -> Timings:
    """Run each variant once per round (rotating order); a variant gets the round index
    (negative for warm-ups) and returns its own elapsed seconds as a float, or anything else
    to be timed whole."""
    names = list(variants)
    timings = Timings({name: [] for name in names})
    for r in range(-warmups, rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            _sync()
            start = time.perf_counter()
            inner = variants[name](r)
            _sync()
            # a float is the variant's own timing; anything else (None, a result) is ignored
            elapsed = inner if isinstance(inner, float) else time.perf_counter() - start
            if r >= 0:
                timings.seconds[name].append(elapsed)
    return timings


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# -- FLOPs ------------------------------------------------------------------------------


def linear_shapes(config, tokens: int) -> dict[str, tuple[int, int, int]]:
    """(M, K, N) of one decoder layer's linear layers for ``tokens`` rows."""
    hidden = config.hidden_size
    kv = config.num_key_value_heads * _head_dim(config)
    q = config.num_attention_heads * _head_dim(config)
    inter = config.intermediate_size
    return {
        "q_proj": (tokens, hidden, q),
        "k_proj": (tokens, hidden, kv),
        "v_proj": (tokens, hidden, kv),
        "o_proj": (tokens, q, hidden),
        "gate_proj": (tokens, hidden, inter),
        "up_proj": (tokens, hidden, inter),
        "down_proj": (tokens, inter, hidden),
    }


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _linear_flops(config, batch: int, length: int) -> float:
    """2 FLOPs per weight per token in every decoder layer's linear layers."""
    layer = sum(2 * m * k * n for m, k, n in linear_shapes(config, batch * length).values())
    return config.num_hidden_layers * layer


def _attention_flops(config, batch: int, length: int) -> float:
    """QK^T and AV over the full square: an explicit padding mask means no causal skipping."""
    heads = config.num_attention_heads * _head_dim(config)
    return config.num_hidden_layers * 4 * batch * length * length * heads


def forward_flops(config, batch: int, length: int) -> float:
    """Forward FLOPs of the decoder over a padded [batch, length] input (the K-row answer
    head is negligible)."""
    return _linear_flops(config, batch, length) + _attention_flops(config, batch, length)


def train_flops(config, batch: int, length: int) -> float:
    """A LoRA training step: the forward plus the backward's activation gradients. The
    frozen base needs no weight gradients, so the backward costs as much as the forward in
    the linear layers and about twice in attention. LoRA's own (rank 8) FLOPs are left out."""
    return 2 * _linear_flops(config, batch, length) + 3 * _attention_flops(config, batch, length)


def matmul_roofline(
    config, tokens: int, dtype: torch.dtype, device: torch.device, reps: int
) -> float:
    """FLOP/s of ``F.linear`` over the layer's shapes, FLOP-weighted harmonic mean (the
    time one layer's linear work takes): the ceiling a step's matmuls can reach."""
    total_flops, total_s = 0.0, 0.0
    for m, k, n in linear_shapes(config, tokens).values():
        x = torch.randn(m, k, device=device, dtype=dtype)
        w = torch.randn(n, k, device=device, dtype=dtype)
        flops = 2 * m * k * n
        calls = max(1, int(2e9 // flops))  # ~2 GFLOP per timed repetition
        torch.nn.functional.linear(x, w)  # warm-up
        times = []
        for _ in range(reps):
            _sync()
            start = time.perf_counter()
            for _ in range(calls):
                torch.nn.functional.linear(x, w)
            _sync()
            times.append((time.perf_counter() - start) / calls)
        total_flops += flops
        total_s += statistics.median(times)
    return total_flops / total_s


# -- memory -----------------------------------------------------------------------------


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, float]]:
    """Peak resident memory (MB) of this process during the block, and peak GPU memory on
    a GPU. Linux resets the peak through /proc/self/clear_refs (value 5)."""
    result: dict[str, float] = {}
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    yield result
    result["rss_mb"] = _vm_hwm_mb()
    if device.type == "cuda":
        result["gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20


def _vm_hwm_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
