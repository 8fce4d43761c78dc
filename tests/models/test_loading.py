import pytest
import torch

from bayeslora._optional import OptionalDependencyError
from bayeslora.models import loading
from bayeslora.models.classifier import LoraSettings, lora_classifier
from bayeslora.models.loading import ModelSettings, load_causal_lm, load_tokenizer, resolve_device


def test_tiny_random_model_loads_with_the_packaged_tokenizer():
    settings = ModelSettings(name="tiny-random-llama")
    tokenizer = load_tokenizer(settings)
    model = load_causal_lm(settings)
    assert model.config.vocab_size == len(tokenizer)
    assert not any(p.requires_grad for p in model.parameters())


def test_local_directory_loads_offline(tmp_path, tiny_model, tokenizer):
    tiny_model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model = load_causal_lm(ModelSettings(name=str(tmp_path), dtype="bfloat16"))
    assert model.dtype == torch.bfloat16
    assert load_tokenizer(ModelSettings(name=str(tmp_path))).pad_token_id is not None


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="dtype"):
        ModelSettings(dtype="float33")
    with pytest.raises(ValueError):
        ModelSettings(quantization="3bit")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_quantization_without_bitsandbytes_names_the_extra(monkeypatch):
    def missing(module, *, extra, purpose):
        raise OptionalDependencyError(
            f"{purpose} needs '{module}'. Install it with: pip install 'bayeslora[{extra}]'"
        )

    monkeypatch.setattr(loading, "require", missing)
    with pytest.raises(OptionalDependencyError, match=r"bayeslora\[quant\]"):
        loading.quantization_config(ModelSettings(quantization="4bit-nf4"))


@pytest.mark.parametrize("quantization", ["8bit", "4bit-nf4"])
def test_quantized_lora_still_trains_after_an_eval_forward(
    tmp_path, tiny_model, tokenizer, quantization
):
    """The bitsandbytes CPU trap: an eval-mode forward must not stop later 4-bit training."""
    pytest.importorskip("bitsandbytes")
    tiny_model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model = load_causal_lm(
        ModelSettings(name=str(tmp_path), quantization=quantization, device="cpu")
    )
    ids = torch.randint(0, 1000, (2, 7))
    mask = torch.ones_like(ids)
    with lora_classifier(model, [330, 389], LoraSettings()) as clf:
        with torch.no_grad():  # lora_B starts at zero, which would zero lora_A's gradient
            for p in clf.lora_parameters():
                p.add_(0.01)
        clf.eval()
        with torch.no_grad():
            clf(ids, mask)  # the eval forward that used to repack 4-bit weights
        clf.train()
        torch.nn.functional.cross_entropy(clf(ids, mask), torch.tensor([0, 1])).backward()
        with_grad = [
            p for p in clf.lora_parameters() if p.grad is not None and p.grad.abs().sum() > 0
        ]
        assert len(with_grad) == len(clf.lora_parameters()) > 0
    # what a run logs as used is read from the model: bitsandbytes' quantization
    settings = ModelSettings(name=str(tmp_path), quantization=quantization, device="cpu")
    assert loading.loaded_as(model)["quantization"] == settings.quantization.value
    loading.check_loaded_as(settings, loading.loaded_as(model))


@pytest.mark.parametrize(
    ("dtype", "device", "asked", "expected"),
    [
        ("bfloat16", "cpu", "auto", "eager"),  # bf16 SDPA backward is slow on CPUs
        ("float16", "cpu", "auto", "eager"),
        ("float32", "cpu", "auto", None),  # transformers' own choice
        ("bfloat16", "cpu", "sdpa", "sdpa"),  # what is asked for wins
    ],
)
def test_attention_is_chosen_per_dtype_and_device(dtype, device, asked, expected):
    settings = ModelSettings(
        name="tiny-random-llama", dtype=dtype, device=device, attn_implementation=asked
    )
    assert loading.attn_implementation_for(settings) == expected
    assert load_causal_lm(settings).config._attn_implementation == (expected or "sdpa")


def test_what_was_used_is_read_from_the_model_and_checked_against_what_was_asked():
    settings = ModelSettings(name="tiny-random-llama", dtype="bfloat16")
    used = loading.loaded_as(load_causal_lm(settings))
    assert used == {
        "device": "cpu",
        "dtype": "bfloat16",
        "attn_implementation": "eager",  # chosen for bf16 on a CPU
        "quantization": "none",
    }
    loading.check_loaded_as(settings, used)
    # a loader that ignored a setting stops the run instead of logging the wish
    for ignored in ({"dtype": "float32"}, {"quantization": "none"}):
        asked = ModelSettings(name="tiny-random-llama", dtype="bfloat16")
        if "quantization" in ignored:
            asked.quantization = loading.Quantization.INT8
        with pytest.raises(ValueError, match="ignored the setting"):
            loading.check_loaded_as(asked, {**used, **ignored})


def test_bf16_base_trains_fp32_lora_weights(tiny_model):
    """The bf16 path: frozen base in bf16; LoRA weights (so optimizer state) in fp32."""
    model = load_causal_lm(ModelSettings(name="tiny-random-llama", dtype="bfloat16"))
    ids = torch.randint(0, 1000, (2, 7))
    mask = torch.ones_like(ids)
    with lora_classifier(model, [330, 389], LoraSettings()) as clf:
        assert {p.dtype for p in clf.lora_parameters()} == {torch.float32}
        base = [p for p in model.parameters() if not p.requires_grad]
        assert {p.dtype for p in base} == {torch.bfloat16}
        optimizer = torch.optim.AdamW(clf.lora_parameters(), lr=1e-2)
        logits = clf(ids, mask)
        assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
        torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1])).backward()
        optimizer.step()
        assert all(s["exp_avg"].dtype == torch.float32 for s in optimizer.state.values())


def test_auto_dtype_is_bf16_only_where_the_hardware_has_it(monkeypatch):
    monkeypatch.setattr(loading, "fast_bf16", lambda device: True)
    assert ModelSettings(dtype="auto", device="cpu").dtype == "bfloat16"
    monkeypatch.setattr(loading, "fast_bf16", lambda device: False)
    assert ModelSettings(dtype="auto", device="cpu").dtype == "float32"


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("fpu avx512f avx512_bf16 sse", True),
        ("fpu amx_bf16 amx_tile", True),
        ("fpu avx512f", False),
    ],
)
def test_fast_bf16_reads_the_cpu_flags(tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n")
    assert loading.fast_bf16(torch.device("cpu"), str(cpuinfo)) is expected
    assert loading.fast_bf16(torch.device("cpu"), str(tmp_path / "missing")) is False
