"""Which weights a run used, as data: the model part of a cell's key.

Two runs that load the same weights in the same way get the same identity; anything
that changes the weights or how they are held (revision, file contents, dtype,
quantization, device type, attention implementation) changes it.

- The packaged model: its GGUF file's name and sha256.
- A local directory: the sha256 of every file in it (names and contents; dot-files and
  dot-directories such as ``.cache`` left out), not its path, so a copy elsewhere is the
  same model. Hashing a 7B checkpoint takes tens of seconds, so each file's hash is cached
  in ``<bayeslora cache>/file-hashes.json`` under its path, size and modification time.
- A hub id: the commit of the snapshot in the local Hugging Face cache (the tokenizer
  is loaded first, so the snapshot exists), or ``"unresolved"`` when it is not cached.
- The tiny random models: their construction settings.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from bayeslora.models.loading import (
    ModelSettings,
    attn_implementation_for,
    local_model_path,
    resolve_device,
)
from bayeslora.models.packaged import PACKAGED_MODELS, cache_dir, gguf_path, is_packaged
from bayeslora.models.tiny import TINY_MODELS, config_model_settings

HASH_CACHE = "file-hashes.json"


def model_identity(settings: ModelSettings) -> dict[str, Any]:
    """What decides the base model's weights and numerics (see the module docstring)."""
    identity: dict[str, Any] = {
        "name": settings.name,
        "dtype": settings.dtype,
        "quantization": settings.quantization.value,
        "device_type": resolve_device(settings.device).type,
        "attn_implementation": attn_implementation_for(settings),
    }
    if settings.name in TINY_MODELS:
        return {**identity, "source": "config", "settings": config_model_settings(settings.name)}
    if is_packaged(settings.name):
        spec = PACKAGED_MODELS[settings.name]
        return {
            **identity,
            "source": "packaged",
            "file": spec.gguf_file,
            "sha256": _cached_sha256(gguf_path(settings.name)),
        }
    path = local_model_path(settings.name)
    if path.is_dir():
        del identity["name"]  # where the directory is does not matter, only what it holds
        return {**identity, "source": "local", "files": _dir_digest(path)}
    return {**identity, "source": "hub", "revision": _hub_revision(settings.name)}


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def _cached_sha256(path: Path) -> str:
    """sha256 of a file, remembered across processes by (path, size, mtime)."""
    stat = path.stat()
    entry = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    cache_file = cache_dir() / HASH_CACHE
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if entry not in cache:
        cache[entry] = _file_sha256(path)
        try:  # best effort: a read-only cache only costs the hashing again
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cache))
            tmp.replace(cache_file)
        except OSError:
            pass
    return cache[entry]


def _dir_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        relative = file.relative_to(path)
        if any(part.startswith(".") for part in relative.parts):
            continue
        digest.update(f"{relative}\0{_cached_sha256(file)}\n".encode())
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
