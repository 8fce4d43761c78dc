"""Settings shared by every method's training loop (the harness sets them, not the method)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainSettings:
    """Steps, not epochs, are the unit: comparable across tasks of different sizes."""

    steps: int = 500
    batch_size: int = 8
    grad_accum: int = 1  # micro-batches per optimizer step
    warmup_steps: int = 0  # linear warmup, then linear decay to 0 (the paper: no warmup)
    eval_every: int = 0  # evaluate on the validation data every N steps (0: never during training)
    eval_batch_size: int = 32
    log_every: int = 10
    seed: int = 0
    progress: bool = True  # a tqdm bar with loss and throughput

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accum", "eval_batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(
                f"warmup_steps must be in [0, steps={self.steps}], got {self.warmup_steps}"
            )
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0, got {self.eval_every}")
