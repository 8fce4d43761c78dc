"""Which weights a run used, as data: the model part of a cell's key.

Two runs that load the same weights in the same way get the same identity; anything
that changes the weights or how they are held (revision, file contents, dtype,
quantization, device type, attention implementation) changes it.

- The packaged model: its GGUF file's name and sha256.
- A local directory: its resolved path, and per file its name, size and the sha256 of
  its first and last MiB (hashing every byte of a 7B checkpoint would cost a minute per
  start; a changed checkpoint differs in its first tensors in practice).
- A hub id: the commit of the snapshot in the local Hugging Face cache (the tokenizer
  is loaded first, so the snapshot exists), or ``"unresolved"`` when it is not cached.
- The tiny random models: their construction settings.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

from bayeslora.models.loading import ModelSettings, resolve_device
from bayeslora.models.packaged import PACKAGED_MODELS, gguf_path, is_packaged
from bayeslora.models.tiny import TINY_MODELS, TINY_SETTINGS

EDGE_BYTES = 1 << 20  # hashed at each end of a local weight file


def model_identity(settings: ModelSettings) -> dict[str, Any]:
    """What decides the base model's weights and numerics (see the module docstring)."""
    identity: dict[str, Any] = {
        "name": settings.name,
        "dtype": settings.dtype,
        "quantization": settings.quantization.value,
        "device_type": resolve_device(settings.device).type,
        "attn_implementation": settings.attn_implementation,
    }
    if settings.name in TINY_MODELS:
        return {**identity, "source": "config", "settings": TINY_SETTINGS}
    if is_packaged(settings.name):
        spec = PACKAGED_MODELS[settings.name]
        return {
            **identity,
            "source": "packaged",
            "file": spec.gguf_file,
            "sha256": _file_sha256(gguf_path(settings.name)),
        }
    path = Path(settings.name).expanduser()
    if path.is_dir():
        return {
            **identity,
            "source": "local",
            "path": str(path.resolve()),
            "files": _dir_digest(path),
        }
    return {**identity, "source": "hub", "revision": _hub_revision(settings.name)}


@functools.cache
def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def _dir_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        size = file.stat().st_size
        digest.update(f"{file.relative_to(path)}\0{size}\0".encode())
        with open(file, "rb") as f:
            digest.update(f.read(EDGE_BYTES))
            if size > 2 * EDGE_BYTES:
                f.seek(size - EDGE_BYTES)
                digest.update(f.read(EDGE_BYTES))
    return digest.hexdigest()


def _hub_revision(repo_id: str) -> str:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return "unresolved"
    for filename in ("config.json", "tokenizer_config.json"):
        try:
            cached = try_to_load_from_cache(repo_id, filename)
        except Exception:  # not a valid repo id: the loader will say so
            return "unresolved"
        if isinstance(cached, str):
            return Path(cached).parent.name  # .../snapshots/<commit>/config.json
    return "unresolved"
