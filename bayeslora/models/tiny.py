"""Tiny randomly initialised causal LMs built from a config: no weights, no download.

Used by the test suite and by ``--model tiny-random-llama`` for smoke runs of the whole
pipeline in seconds. Numbers from such a model say nothing about any method.
"""

from __future__ import annotations

import torch

TINY_MODELS = ("tiny-random-llama",)
# What --model tiny-random-llama builds (with the packaged tokenizer's vocabulary).
TINY_SETTINGS = {"hidden_size": 32, "num_layers": 2, "seed": 0}


def tiny_llama(
    vocab_size: int,
    *,
    hidden_size: int = TINY_SETTINGS["hidden_size"],
    num_layers: int = TINY_SETTINGS["num_layers"],
    seed: int = TINY_SETTINGS["seed"],
):
    """A ``LlamaForCausalLM`` with q_proj/v_proj like the real thing, a few 10k parameters."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.requires_grad_(False)
    return model.eval()
