"""Model identity: the model part of a cell's key."""

import os

from bayeslora.models.identity import model_identity
from bayeslora.models.loading import ModelSettings


def test_a_local_directory_is_identified_by_its_contents_not_its_path(tmp_path, monkeypatch):
    monkeypatch.setenv("BAYESLORA_CACHE", str(tmp_path / "cache"))
    first, second = tmp_path / "a", tmp_path / "b"
    for directory in (first, second):
        directory.mkdir()
        (directory / "config.json").write_text("{}")
        (directory / "model.safetensors").write_bytes(b"\0" * 4096)
    (first / ".cache").mkdir()
    (first / ".cache" / "meta").write_text("download bookkeeping")

    def identity(path):
        return model_identity(ModelSettings(name=str(path), device="cpu"))

    assert identity(first) == identity(second)
    weights = bytearray(4096)
    weights[2048] = 1  # a change in the middle of the weights, same size
    (second / "model.safetensors").write_bytes(bytes(weights))
    stat = (second / "model.safetensors").stat()  # a later edit: a later modification time
    os.utime(second / "model.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert identity(first)["files"] != identity(second)["files"]
    assert (tmp_path / "cache" / "file-hashes.json").is_file()


def test_dtype_quantization_and_device_are_part_of_the_identity():
    base = model_identity(ModelSettings(name="tiny-random-llama", device="cpu"))
    bf16 = model_identity(ModelSettings(name="tiny-random-llama", device="cpu", dtype="bfloat16"))
    assert base["source"] == "config" and base["device_type"] == "cpu"
    assert base != bf16


def test_the_attention_a_model_runs_with_is_recorded_resolved():
    bf16 = model_identity(ModelSettings(name="tiny-random-llama", device="cpu", dtype="bfloat16"))
    assert bf16["attn_implementation"] == "eager"  # "auto", as it was resolved
    sdpa = ModelSettings(
        name="tiny-random-llama", device="cpu", dtype="bfloat16", attn_implementation="sdpa"
    )
    assert model_identity(sdpa) != bf16
