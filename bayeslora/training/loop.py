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
- ``checkpoint``: a :class:`~bayeslora.training.checkpoint.Checkpointer`. The loop saves
  everything a bit-identical continuation needs (adapter, optimizer and scheduler state,
  RNG states, the position in the data order, the log so far, and ``state``'s own
  ``checkpoint_state()``) every ``checkpoint.every`` steps, and starts from the newest
  checkpoint if there is one.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from bayeslora import threads
from bayeslora.tasks.encoding import length_sorted_batches, make_loader, model_inputs
from bayeslora.training.checkpoint import Checkpointer, rng_state, set_rng_state
from bayeslora.training.settings import TrainSettings

# Called with (step, metrics) for training logs ("train_loss", ...) and for each evaluation
# during training ("val_nll", "val_accuracy", ...); the bench logs them to MLflow and the
# tuner reports them to optuna (and may raise TrialPruned).
LogCallback = Callable[[int, dict[str, float]], None]


class CheckpointState(Protocol):
    """What a method keeps across steps beyond the optimizer (SWA's running mean): any nest
    of dicts, lists, tensors and JSON scalars, or None."""

    def checkpoint_state(self) -> Any: ...

    def load_checkpoint_state(self, state: Any) -> None: ...


class DivergedError(RuntimeError):
    """The training loss, or a method's predictions, became NaN or infinite."""


def check_finite(probs: torch.Tensor, what: str) -> torch.Tensor:
    """``probs`` unchanged, or DivergedError when any entry is NaN or infinite."""
    if not torch.isfinite(probs).all():
        bad = int((~torch.isfinite(probs)).any(dim=-1).sum())
        raise DivergedError(f"{what} became non-finite for {bad} of {len(probs)} examples")
    return probs


def linear_schedule(optimizer, settings: TrainSettings):
    """Linear warmup then linear decay to zero, as the paper (which uses no warmup)."""

    def factor(step: int) -> float:
        if step < settings.warmup_steps:
            return (step + 1) / settings.warmup_steps
        return max(0.0, (settings.steps - step) / max(1, settings.steps - settings.warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def batches_forever(
    data, settings: TrainSettings, skip: int = 0
) -> Iterator[dict[str, torch.Tensor]]:
    """Shuffled batches, reshuffled each epoch with a seed derived from the run's seed.

    ``skip``: batches already consumed (a resumed run); each epoch's order depends only on
    the seed and the epoch, so the stream continues exactly where it stopped.
    """
    per_epoch = math.ceil(len(data) / settings.batch_size)
    epoch, offset = divmod(skip, per_epoch)
    while True:
        loader = make_loader(
            data,
            settings.batch_size,
            shuffle=True,
            seed=settings.seed * 10_000 + epoch,
            pad_token_id=data.pad_token_id,
        )
        yield from itertools.islice(loader, offset, None)
        epoch, offset = epoch + 1, 0


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
    checkpoint: Checkpointer | None = None,
    state: CheckpointState | None = None,
) -> list[dict[str, float]]:
    """Train for ``settings.steps`` optimizer steps; returns the logged history."""
    torch.manual_seed(settings.seed)  # LoRA dropout masks and IVON's weight noise
    scheduler = linear_schedule(optimizer, settings)
    history: list[dict[str, float]] = []
    window = {"loss": 0.0, "examples": 0, "tokens": 0}
    start_step = 0
    if checkpoint is not None and not checkpoint.claim():
        checkpoint = None  # a second loop in one fit: only the first one checkpoints
    saved = checkpoint.load() if checkpoint else None
    if saved is not None:
        start_step = saved.step
        _restore(saved.state, model, optimizer, scheduler, state, settings)
        window = saved.state["window"]
        for record in saved.state["history"]:  # the log before the checkpoint, once more
            history.append(record)
            if on_log:
                on_log(record["step"], {k: v for k, v in record.items() if k != "step"})
    batches = batches_forever(train_data, settings, skip=start_step * settings.grad_accum)
    device = next(p for p in model.parameters() if p.requires_grad).device
    progress = _progress_bar(settings, initial=start_step)
    window_start = time.perf_counter()

    for step in range(start_step + 1, settings.steps + 1):
        threads.rebalance()  # another worker may have started or ended on this machine
        model.train()
        optimizer.zero_grad(set_to_none=True)
        for _ in range(settings.grad_accum):
            batch = next(batches)
            inputs, labels = model_inputs(batch, device), batch["labels"].to(device)
            for _ in range(samples_per_batch):  # IVON's MC samples reuse the micro-batch
                with sample_context() if sample_context else contextlib.nullcontext():
                    logits = model(**inputs)
                    loss = F.cross_entropy(logits, labels)
                    if not math.isfinite(loss.item()):
                        raise DivergedError(f"training loss became {loss.item()} at step {step}")
                    (loss if sample_context else loss / settings.grad_accum).backward()
                window["loss"] += loss.item() / (settings.grad_accum * samples_per_batch)
            window["examples"] += len(labels)
            window["tokens"] += int(batch["attention_mask"].numel())
        optimizer.step()
        scheduler.step()
        if after_step:
            after_step(step)

        if step % settings.log_every == 0 or step == settings.steps:
            steps_in_window = (step - 1) % settings.log_every + 1
            elapsed = time.perf_counter() - window_start
            record = {
                "train_loss": window["loss"] / steps_in_window,
                # the optimizer's, not the schedule's: after_step may set its own (SWALR)
                "lr": optimizer.param_groups[0]["lr"],
                "examples_per_s": window["examples"] / elapsed,
                "padded_tokens_per_s": window["tokens"] / elapsed,
            }
            _emit(step, record, history, on_log, progress)
            window = {"loss": 0.0, "examples": 0, "tokens": 0}
            window_start = time.perf_counter()
        if evaluate and settings.eval_every and step % settings.eval_every == 0:
            val = {f"val_{k}": v for k, v in evaluate().items()}
            _emit(step, val, history, on_log, progress)
            window_start = time.perf_counter()  # evaluation time is not training throughput
        if checkpoint and checkpoint.due(step, settings.steps):
            checkpoint.save(
                step, _snapshot(model, optimizer, scheduler, state, settings, window, history)
            )
            window_start = time.perf_counter()  # nor is saving
        if progress:
            progress.update(1)

    if progress:
        progress.close()
    return history


def _snapshot(model, optimizer, scheduler, state, settings, window, history) -> dict[str, Any]:
    """Everything a continuation from this step needs, as :func:`checkpoint.pack` takes it."""
    return {
        "adapter": model.lora_state(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
        "method": state.checkpoint_state() if state is not None else None,
        "window": dict(window),
        "history": list(history),
        "settings": {"steps": settings.steps, "seed": settings.seed},
    }


def _restore(saved, model, optimizer, scheduler, state, settings) -> None:
    expected = {"steps": settings.steps, "seed": settings.seed}
    if saved["settings"] != expected:
        raise ValueError(
            f"checkpoint was written by a run with {saved['settings']}, this run has {expected}; "
            "remove it (or use another --output-dir) to start afresh"
        )
    model.load_lora_state(saved["adapter"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    if state is not None:
        state.load_checkpoint_state(saved["method"])
    set_rng_state(saved["rng"])


def _emit(step, record, history, on_log, progress) -> None:
    history.append({"step": step, **record})
    if on_log:
        on_log(step, record)
    if progress:
        progress.set_postfix({k: f"{v:.3g}" for k, v in record.items() if k != "lr"}, refresh=False)


def _progress_bar(settings: TrainSettings, initial: int = 0):
    if not settings.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=settings.steps, initial=initial, desc="train", unit="step", dynamic_ncols=True
    )


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, data, batch_size: int = 32) -> torch.Tensor:
    """Logits [N, K] in data order, computed over length-sorted batches (less padding).
    Leaves train/eval modes to the caller (MC Dropout needs dropout on)."""
    device = next(model.parameters()).device
    logits = None
    for indices, batch in length_sorted_batches(data, batch_size):
        threads.rebalance()
        out = model(**model_inputs(batch, device)).float()
        if logits is None:
            logits = torch.empty(len(data), out.shape[-1])
        logits[indices] = out.cpu()
    return logits if logits is not None else torch.empty(0, 0)
