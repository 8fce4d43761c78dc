"""Every built-in method on a base quantized by bitsandbytes: it works, or the harness
refuses it at once with the reason (the paper's setting is an 8-bit Llama-2-7B)."""

import dataclasses

import pytest
import torch

from bayeslora.bench.config import BenchConfig
from bayeslora.bench.runner import check_methods
from bayeslora.cell import run_cell
from bayeslora.methods.registry import describe_methods, get_method
from bayeslora.models.loading import ModelSettings, load_causal_lm
from tests.cell.conftest import make_cell

pytest.importorskip("bitsandbytes")
BUILTIN = [name for name, source, _ in describe_methods() if source == "built-in"]
HPARAMS = {  # small and fast
    "ivon": {"test_samples": 2},
    "mcdropout": {"test_samples": 2},
    "swag": {"test_samples": 2, "swa_start": 0.25},  # 3 steps: snapshots from step 1
    "ensemble": {"members": 2},
    "laplace": {"marglik_steps": 2, "n_samples": 100},
}


@pytest.fixture(scope="module", params=["8bit", "4bit-nf4"])
def quantized(request):
    settings = ModelSettings(name="tiny-random-llama", quantization=request.param, device="cpu")
    return request.param, load_causal_lm(settings)


def test_the_builtin_methods_are_found():
    assert {"adamw", "ivon", "mcdropout", "laplace", "swa", "swag"} <= set(BUILTIN)


@pytest.mark.parametrize("method", BUILTIN)
def test_each_builtin_method_runs_on_a_quantized_base_or_is_refused(method, quantized, toy_data):
    quantization, base = quantized
    cls = get_method(method)
    hparams = {k: v for k, v in HPARAMS.get(method, {}).items() if hasattr(cls.Config(), k)}
    cfg = BenchConfig(methods=[method], quantization=quantization, hparams={method: hparams})
    if not cls.quantized_base:
        with pytest.raises(ValueError, match=f"'{method}' does not work on a base quantized"):
            check_methods(cfg)
        return
    check_methods(cfg)
    if cls.needs_validation:  # temperature scaling fits on held-out data
        toy_data = dataclasses.replace(toy_data, val=toy_data.eval)
    result = run_cell(make_cell(method, steps=3, hparams=hparams), base, toy_data)
    for mode in result.modes:
        assert torch.isfinite(mode.probs).all() and mode.probs.shape == (12, 2)


def test_a_quantized_config_model_is_really_quantized(quantized):
    import bitsandbytes as bnb

    quantization, base = quantized
    kind = bnb.nn.Linear8bitLt if quantization == "8bit" else bnb.nn.Linear4bit
    assert isinstance(base.model.layers[0].self_attn.q_proj, kind)


def test_a_method_that_cannot_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    from bayeslora.bench import runner
    from bayeslora.methods.adamw import AdamW
    from bayeslora.methods.registry import register_method, unregister_method

    class FullPrecisionOnly(AdamW):
        """A plugin that needs float weights."""

        quantized_base = False
        quantized_base_reason = "it differentiates through the base weights"

    register_method("fp-only-test")(FullPrecisionOnly)
    loads = []
    monkeypatch.setattr(runner, "load_causal_lm", lambda settings: loads.append(settings))
    try:
        for methods in (["fp-only-test"], ["fp-only-test+temperature"]):
            cfg = BenchConfig(
                methods=methods,
                model="tiny-random-llama",
                quantization="8bit",
                output_dir=str(tmp_path),
            )
            with pytest.raises(ValueError, match="differentiates through the base weights"):
                runner.run_bench(cfg)
        assert loads == []
    finally:
        unregister_method("fp-only-test")
