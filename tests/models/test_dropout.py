"""LoraDropout: nn.Dropout's distribution (rate, scale, independence), seeded, on peft's layers."""

import pytest
import torch

from bayeslora.models.classifier import LoraSettings, lora_classifier
from bayeslora.models.dropout import (
    LANE_BITS,
    LoraDropout,
    apply_lanes,
    effective_rate,
    lane_dropout,
    numpy_lanes,
    sampling_lora_dropout,
    torch_lanes,
    use_lora_dropout,
)


def _check_mask(out, x, p):
    dropped = (out == 0).double().mean().item()
    assert abs(dropped - effective_rate(p)) < 5 * (p * (1 - p) / x.numel()) ** 0.5
    kept = out[out != 0].float()
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / (1 - p)), rtol=1e-2, atol=0)


@pytest.mark.parametrize("p", [0.05, 0.1, 0.3, 0.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_drops_at_the_rate_keeps_the_expectation_and_draws_independently(p, dtype):
    first, second = LoraDropout(p), LoraDropout(p)
    x = torch.ones(64, 128, 96, dtype=dtype)  # 786,432 elements: the rate to about 1e-3
    torch.manual_seed(0)
    a, b = first(x), second(x)
    assert a.dtype == dtype and a.shape == x.shape
    _check_mask(a, x, p)
    # independent masks per layer, and neighbouring elements (lanes of one word) too
    both = ((a == 0) & (b == 0)).double().mean().item()
    assert abs(both - effective_rate(p) ** 2) < 0.01
    flat = (a == 0).flatten()
    for step in (1, 2, 3, 4):
        pairs = (flat[:-step] & flat[step:]).double().mean().item()
        assert abs(pairs - effective_rate(p) ** 2) < 0.01


@pytest.mark.parametrize("lanes", [numpy_lanes, lambda n, g: torch_lanes(n, "cpu", g)])
def test_both_lane_sources_are_uniform_16_bit_and_seeded(lanes):
    n = 400_001  # not a multiple of four
    drawn = lanes(n, torch.Generator().manual_seed(3))
    assert drawn.dtype == torch.int16 and drawn.shape == (n,)
    # each of the 16 bits is a fair coin, and so are the words' four lane positions
    bits = (drawn.int()[:, None] >> torch.arange(16)) & 1
    assert (bits.double().mean(0) - 0.5).abs().max() < 5 * (0.25 / n) ** 0.5
    assert torch.equal(drawn, lanes(n, torch.Generator().manual_seed(3)))
    assert not torch.equal(drawn, lanes(n, torch.Generator().manual_seed(4)))


def test_eval_mode_and_rate_zero_pass_the_input_through():
    x = torch.randn(3, 5, 7)
    assert LoraDropout(0.3).eval()(x) is x
    assert LoraDropout(0.0)(x) is x
    assert abs(effective_rate(0.1) - 0.1) <= 2**-17 and effective_rate(0.5) == 0.5


def test_rates_that_round_to_none_or_all_lanes():
    x = torch.randn(3, 5, 7)
    assert effective_rate(1e-6) == 0 and LoraDropout(1e-6)(x) is x  # nothing dropped, no scale
    assert effective_rate(1 - 1e-6) == 1
    assert torch.equal(LoraDropout(1 - 1e-6)(x), torch.zeros_like(x))


def test_the_scale_keeps_the_expectation_at_the_drawn_rate():
    p = 0.3
    out = LoraDropout(p)(torch.ones(100_000))
    kept = out[out != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / (1 - effective_rate(p))))


def test_masks_follow_torch_manual_seed_and_the_gradient_is_the_mask():
    layer = LoraDropout(0.2)
    x = torch.randn(4, 10, 16, requires_grad=True)
    torch.manual_seed(7)
    out = layer(x)
    torch.manual_seed(7)
    assert torch.equal(layer(x), out)
    assert not torch.equal(layer(x), out)  # the global stream moved on
    out.sum().backward()
    torch.testing.assert_close(x.grad, (out != 0).float() / 0.8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("transposed", [False, True])
def test_an_element_is_dropped_when_its_lane_is_below_the_threshold_with_or_without_autograd(
    dtype, transposed
):
    p, shape = 0.1, (3, 50, 16)
    x = torch.randn(shape, dtype=dtype)
    if transposed:  # not contiguous
        x = torch.randn(3, 16, 50, dtype=dtype).transpose(1, 2)
    lanes = numpy_lanes(x.numel(), torch.Generator().manual_seed(5)).view(shape)
    threshold = round(p * 2**LANE_BITS) - 2 ** (LANE_BITS - 1)
    scale = 1 / (1 - effective_rate(p))
    expected = torch.where(lanes < threshold, 0.0, x * scale).to(dtype)
    plain = lane_dropout(x, p, torch.Generator().manual_seed(5))
    x.requires_grad_()
    tracked = lane_dropout(x, p, torch.Generator().manual_seed(5))
    assert torch.equal(plain, expected) and torch.equal(tracked, expected)
    tracked.sum().backward()
    assert torch.equal(x.grad, torch.where(lanes < threshold, 0.0, scale).to(dtype))


def test_vmap_and_forward_mode_ad_without_autograd_take_the_masked_path():
    """The test-time path writes with out= kernels, which torch.func and forward-mode AD do
    not support: under them the mask is applied as in training, with the same values."""
    from torch.autograd import forward_ad
    from torch.func import jvp, vmap

    p, x = 0.1, torch.randn(4, 64)
    lanes = numpy_lanes(x.numel(), torch.Generator().manual_seed(2)).view(x.shape)
    keep = (lanes >= round(p * 2**LANE_BITS) - 2 ** (LANE_BITS - 1)) / (1 - effective_rate(p))
    with torch.no_grad():
        torch.testing.assert_close(vmap(lambda a, b: apply_lanes(a, b, p))(x, lanes), x * keep)
        torch.testing.assert_close(  # only the lanes batched
            vmap(lambda b: apply_lanes(x[0], b, p))(lanes), x[0] * keep
        )
        out, tangent = jvp(lambda a: apply_lanes(a, lanes, p), (x,), (torch.ones_like(x),))
        torch.testing.assert_close(out, x * keep)
        torch.testing.assert_close(tangent, keep)
        with forward_ad.dual_level():
            dual = apply_lanes(forward_ad.make_dual(x, torch.ones_like(x)), lanes, p)
            torch.testing.assert_close(forward_ad.unpack_dual(dual).tangent, keep)


def test_under_vmap_one_mask_serves_the_batch_with_randomness_same_only():
    from torch.func import vmap

    x = torch.randn(3, 4, 64)
    with torch.no_grad():
        out = vmap(lambda a: lane_dropout(a, 0.1), randomness="same")(x)
        assert all(torch.equal(out[0] == 0, out[i] == 0) for i in range(3))
        with pytest.raises(RuntimeError, match="random"):
            vmap(lambda a: lane_dropout(a, 0.1))(x)  # randomness="error", the default


def test_sampling_uses_its_generator_in_eval_mode_and_restores_the_layers():
    layers = [LoraDropout(0.2).eval(), LoraDropout(0.2).eval()]
    x = torch.randn(4, 10, 16)
    runs = []
    for seed in (1, 1, 2):
        with sampling_lora_dropout(layers, torch.Generator().manual_seed(seed)):
            runs.append(layers[0](x))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    assert all(not layer.training and layer.generator is None for layer in layers)
    with pytest.raises(TypeError, match="LoraDropout"):
        with sampling_lora_dropout([torch.nn.Dropout(0.2)], torch.Generator()):
            pass


def test_peft_dropout_layers_are_replaced_by_lora_dropout(tiny_model):
    with lora_classifier(tiny_model, [330, 389], LoraSettings(dropout=0.15)) as clf:
        layers = clf.lora_dropout_modules()
        assert len(layers) == 4 and all(type(m) is LoraDropout and m.p == 0.15 for m in layers)
        assert not any(type(m) is torch.nn.Dropout for m in clf.peft_model.modules())
        assert use_lora_dropout(clf.peft_model) == []  # already replaced: nothing to do
