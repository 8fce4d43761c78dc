"""Training-step time, measured side by side in one process (A/B interleaved, medians).

  python benchmarks/step_time.py                    # packaged SmolLM2, real ARC-Easy batches
  python benchmarks/step_time.py --model tiny-random-llama --reps 5

Prints, per variant, the median seconds per optimizer step and the ratio to the baseline
(AdamW with the answer-token head). Variants:
- adamw / answer-head:  our classifier, last hidden state x K output rows (the baseline)
- adamw / full-logits:  the same loss read from the LM's full [B, T, V] logits
- ivon  / answer-head:  IVON with one posterior sample per step (the paper's "almost no
  extra cost" claim: the ratio should be close to 1)
Each round runs every variant once on the same batch, in rotating order, after warm-ups on
the longest and the median batch (a new maximum length is slow the first time).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from bayeslora.models.classifier import LoraSettings, lora_classifier, position_ids_from_mask
from bayeslora.models.loading import ModelSettings, load_causal_lm, load_tokenizer
from bayeslora.optim import IVON
from bayeslora.tasks import answer_token_ids, load_task
from bayeslora.tasks.encoding import TokenizedDataset, make_loader


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--reps", type=int, default=9, help="timed rounds (each runs every variant once)"
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    settings = ModelSettings(name=args.model, device="cpu")
    tokenizer, base = load_tokenizer(settings), load_causal_lm(settings)
    splits = load_task("arc_easy")
    ids = answer_token_ids(tokenizer, splits.task.answer_labels)
    data = TokenizedDataset(splits.train, tokenizer)
    batches = list(
        make_loader(data, args.batch_size, shuffle=True, seed=0, pad_token_id=data.pad_token_id)
    )
    by_length = sorted(batches, key=lambda b: b["input_ids"].shape[1])
    warmups = [by_length[-1], by_length[len(by_length) // 2]]
    timed = batches[: args.reps]

    with lora_classifier(base, ids, LoraSettings(), seed=0) as clf:
        params = clf.lora_parameters()
        adamw = torch.optim.AdamW(params, lr=0.0)  # lr 0: every variant sees the same weights
        ivon = IVON(
            params,
            lr=0.0,
            ess=1e6,
            hess_init=1e-3,
            weight_decay=0.0,
            clip_radius=1e-3,
            rescale_lr=False,
        )

        def head_loss(batch):
            return F.cross_entropy(
                clf(batch["input_ids"], batch["attention_mask"]), batch["labels"]
            )

        def full_logits_loss(batch):
            mask = batch["attention_mask"]
            logits = clf.peft_model(
                input_ids=batch["input_ids"],
                attention_mask=mask,
                position_ids=position_ids_from_mask(mask),
            ).logits[:, -1, ids]
            return F.cross_entropy(logits, batch["labels"])

        def adamw_step(loss_fn):
            def step(batch):
                adamw.zero_grad()
                loss_fn(batch).backward()
                adamw.step()

            return step

        def ivon_step(batch):
            with ivon.sampled_params(train=True):
                head_loss(batch).backward()
            ivon.step()

        variants = {
            "adamw / answer-head": adamw_step(head_loss),
            "adamw / full-logits": adamw_step(full_logits_loss),
            "ivon / answer-head": ivon_step,
        }
        clf.train()
        for batch in warmups:
            for step in variants.values():
                step(batch)
        times = {name: [] for name in variants}
        names = list(variants)
        for r, batch in enumerate(timed):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                start = time.perf_counter()
                variants[name](batch)
                times[name].append(time.perf_counter() - start)

    base_name = names[0]
    tokens = statistics.median(b["attention_mask"].numel() for b in timed)
    print(
        f"model {args.model}, batch {args.batch_size}, median padded tokens/step {tokens:.0f}, "
        f"{args.reps} interleaved rounds, {args.threads} threads"
    )
    print(
        f"{'variant':<22} {'median s/step':>14} {'ratio of medians':>17} {'paired ratio (median)':>22}"
    )
    for name in names:
        paired = statistics.median(
            a / b for a, b in zip(times[name], times[base_name], strict=True)
        )
        ratio = statistics.median(times[name]) / statistics.median(times[base_name])
        print(f"{name:<22} {statistics.median(times[name]):>14.3f} {ratio:>17.3f} {paired:>22.3f}")


if __name__ == "__main__":
    main()
