"""The training loop every gradient-based method shares. Read it top to bottom.

One optimizer step = ``grad_accum`` micro-batches. Methods plug in through three
arguments rather than subclassing:
- ``sample_context``: a context manager entered around each micro-batch's forward and
  backward pass. IVON passes ``optimizer.sampled_params(train=True)``: the weights are a
  posterior sample inside it, and IVON itself averages the micro-batch gradients, so the
  loss is then *not* divided by ``grad_accum``.
- ``samples_per_batch``: forward/backward passes per micro-batch, each under a fresh
  ``sample_context`` (IVON's ``mc_samples``).
- ``after_step(step)``: called after each optimizer step (SWA collects snapshots here).
- ``evaluate()``: returns validation metrics; called every ``eval_every`` steps.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from bayeslora.methods.base import LogCallback
from bayeslora.tasks.encoding import make_loader
from bayeslora.training.settings import TrainSettings


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


def linear_schedule(optimizer, settings: TrainSettings):
    """Linear warmup then linear decay to zero, as the paper (which uses no warmup)."""

    def factor(step: int) -> float:
        if step < settings.warmup_steps:
            return (step + 1) / settings.warmup_steps
        return max(0.0, (settings.steps - step) / max(1, settings.steps - settings.warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def batches_forever(data, settings: TrainSettings) -> Iterator[dict[str, torch.Tensor]]:
    """Shuffled batches, reshuffled each epoch with a seed derived from the run's seed."""
    epoch = 0
    while True:
        yield from make_loader(
            data,
            settings.batch_size,
            shuffle=True,
            seed=settings.seed * 10_000 + epoch,
            pad_token_id=data.pad_token_id,
        )
        epoch += 1


def train_loop(
    model: torch.nn.Module,
    train_data,
    optimizer: torch.optim.Optimizer,
    settings: TrainSettings,
    *,
    sample_context: Callable[[], contextlib.AbstractContextManager] | None = None,
    samples_per_batch: int = 1,
    after_step: Callable[[int], None] | None = None,
    evaluate: Callable[[], dict[str, float]] | None = None,
    on_log: LogCallback | None = None,
) -> list[dict[str, float]]:
    """Train for ``settings.steps`` optimizer steps; returns the logged history."""
    torch.manual_seed(settings.seed)  # LoRA dropout masks and IVON's weight noise
    scheduler = linear_schedule(optimizer, settings)
    batches = batches_forever(train_data, settings)
    device = next(p for p in model.parameters() if p.requires_grad).device
    history: list[dict[str, float]] = []
    progress = _progress_bar(settings)
    window_loss, window_examples, window_tokens, window_start = 0.0, 0, 0, time.perf_counter()

    for step in range(1, settings.steps + 1):
        model.train()
        optimizer.zero_grad(set_to_none=True)
        for _ in range(settings.grad_accum):
            batch = {k: v.to(device) for k, v in next(batches).items()}
            for _ in range(samples_per_batch):  # IVON's MC samples reuse the micro-batch
                with sample_context() if sample_context else contextlib.nullcontext():
                    logits = model(batch["input_ids"], batch["attention_mask"])
                    loss = F.cross_entropy(logits, batch["labels"])
                    if not math.isfinite(loss.item()):
                        raise DivergedError(f"training loss became {loss.item()} at step {step}")
                    (loss if sample_context else loss / settings.grad_accum).backward()
                window_loss += loss.item() / (settings.grad_accum * samples_per_batch)
            window_examples += len(batch["labels"])
            window_tokens += int(batch["attention_mask"].numel())
        optimizer.step()
        scheduler.step()
        if after_step:
            after_step(step)

        if step % settings.log_every == 0 or step == settings.steps:
            steps_in_window = (step - 1) % settings.log_every + 1
            elapsed = time.perf_counter() - window_start
            record = {
                "train_loss": window_loss / steps_in_window,
                "lr": scheduler.get_last_lr()[0],
                "examples_per_s": window_examples / elapsed,
                "padded_tokens_per_s": window_tokens / elapsed,
            }
            _emit(step, record, history, on_log, progress)
            window_loss, window_examples, window_tokens, window_start = (
                0.0,
                0,
                0,
                time.perf_counter(),
            )
        if evaluate and settings.eval_every and step % settings.eval_every == 0:
            val = {f"val_{k}": v for k, v in evaluate().items()}
            _emit(step, val, history, on_log, progress)
            window_start = time.perf_counter()  # evaluation time is not training throughput
        if progress:
            progress.update(1)

    if progress:
        progress.close()
    return history


def _emit(step, record, history, on_log, progress) -> None:
    history.append({"step": step, **record})
    if on_log:
        on_log(step, record)
    if progress:
        progress.set_postfix({k: f"{v:.3g}" for k, v in record.items() if k != "lr"}, refresh=False)


def _progress_bar(settings: TrainSettings):
    if not settings.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=settings.steps, desc="train", unit="step", dynamic_ncols=True)


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, data, batch_size: int = 32) -> torch.Tensor:
    """Logits [N, K] in data order. Leaves train/eval modes to the caller (MC Dropout
    needs dropout on)."""
    device = next(model.parameters()).device
    loader = make_loader(data, batch_size, shuffle=False, seed=0, pad_token_id=data.pad_token_id)
    outputs = [
        model(batch["input_ids"].to(device), batch["attention_mask"].to(device)).float().cpu()
        for batch in loader
    ]
    return torch.cat(outputs)
