"""Randomly initialised causal LMs built from a config: no weights, no download.

- ``tiny-random-llama``: a few 10k parameters, for the test suite and smoke runs of the
  whole pipeline in seconds (``--model tiny-random-llama``).
- ``llama-2-7b-shapes``: Llama-2-7B's shapes (4096 hidden, 32 layers, 11008 MLP), for
  timing and memory on a GPU with no hub access (benchmarks/gpu.sh).

Both use the packaged model's tokenizer (and its vocabulary size). Numbers from such a
model say nothing about any method, only about speed and memory.
"""

from __future__ import annotations

import torch

# name -> the LlamaConfig fields that differ from the tiny defaults below
CONFIG_MODELS: dict[str, dict[str, int]] = {
    "tiny-random-llama": {},
    "llama-2-7b-shapes": {
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
    },
}
TINY_MODELS = tuple(CONFIG_MODELS)  # every name load_causal_lm builds from a config
# What --model tiny-random-llama builds (with the packaged tokenizer's vocabulary).
TINY_SETTINGS = {"hidden_size": 32, "num_layers": 2, "seed": 0}


def config_model_settings(name: str) -> dict[str, int]:
    """What decides a config-built model's weights (part of its identity)."""
    return {**TINY_SETTINGS, **CONFIG_MODELS[name]}


def tiny_llama(
    vocab_size: int,
    *,
    hidden_size: int = TINY_SETTINGS["hidden_size"],
    num_layers: int = TINY_SETTINGS["num_layers"],
    seed: int = TINY_SETTINGS["seed"],
    attn_implementation: str = "sdpa",
    intermediate_size: int | None = None,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
):
    """A ``LlamaForCausalLM`` with q_proj/v_proj like the real thing, random weights.

    Built on ``device`` in ``dtype`` (a 7B model is initialised on the GPU in seconds, and
    in bf16 it never needs fp32's 27 GB).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        attn_implementation=attn_implementation,
    )
    previous = torch.get_default_dtype()
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        torch.set_default_dtype(dtype)  # the parameters are created in it
        try:
            model = LlamaForCausalLM(config)
        finally:
            torch.set_default_dtype(previous)
    model.requires_grad_(False)
    return model.eval()


def config_model(name: str, vocab_size: int, **kwargs):
    """The config-built model ``name`` (see CONFIG_MODELS)."""
    return tiny_llama(vocab_size, **{**config_model_settings(name), **kwargs})
