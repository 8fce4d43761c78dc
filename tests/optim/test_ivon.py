"""Tests of bayeslora.optim.IVON, including numerical parity with the reference
implementation ivon-opt 0.1.3 (GPL-3.0, a test-only dependency; those tests are skipped
where it is not installed)."""

import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bayeslora.optim import IVON

N_IN, N_CLASSES = 6, 3


class Net(nn.Module):
    """A small MLP plus the two awkward kinds of parameter: a frozen one that is used in
    the forward pass, and a trainable one that never gets a gradient."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(N_IN, 8)
        self.fc2 = nn.Linear(8, 8)
        self.out = nn.Linear(8, N_CLASSES)
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 8), requires_grad=False)
        self.unused = nn.Parameter(torch.randn(5))

    def forward(self, x):
        h = torch.tanh(self.fc1(x)) * self.scale
        return self.out(torch.tanh(self.fc2(h)))


def make_net(seed=0):
    torch.manual_seed(seed)
    return Net()


def make_batches(steps, seed=0, batch=16):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch, N_IN, generator=g), torch.randint(0, N_CLASSES, (batch,), generator=g))
        for _ in range(steps)
    ]


def loss_fn(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def train_step(opt, model, batch, generator, mc_samples=1):
    for _ in range(mc_samples):
        with opt.sampled_params(train=True, generator=generator):
            loss_fn(model, batch).backward()
    opt.step()


def flat_state(opt, key):
    """Our per-parameter state, flattened per group like ivon-opt keeps it."""
    return [
        torch.cat([opt.state[p][key].flatten() for p in group["params"]])
        for group in opt.param_groups
    ]


def param_groups_for(model, two_groups):
    params = list(model.parameters())
    if not two_groups:
        return params
    # Per-group overrides of lr, weight decay, ess and clipping.
    return [
        {"params": params[:4]},
        {"params": params[4:], "lr": 0.05, "weight_decay": 3e-3, "ess": 500.0, "clip_radius": 0.05},
    ]


# ------------------------------------------------------------------ parity with ivon-opt

PARITY_CASES = {
    # ivon-opt's defaults (wd 1e-4, no clipping, rescaled lr, beta2 0.99999).
    "defaults": dict(lr=0.1, wd=1e-4, clip=math.inf, mc=1, rescale=True, beta1=0.9, beta2=0.99999),
    # The project's LoRA setting: wd 0, clip 1e-3, lr not rescaled.
    "lora": dict(lr=0.03, wd=0.0, clip=1e-3, mc=1, rescale=False, beta1=0.9, beta2=0.99999),
    # beta2 0.99 so that the Hessian update is exercised (at 0.99999 h hardly moves).
    "wd_mc2": dict(lr=0.1, wd=1e-2, clip=math.inf, mc=2, rescale=True, beta1=0.9, beta2=0.99),
    "clip_mc2": dict(lr=0.03, wd=0.0, clip=1e-3, mc=2, rescale=False, beta1=0.5, beta2=0.99),
    "wd_clip_rescale": dict(lr=0.2, wd=1e-3, clip=1e-2, mc=1, rescale=True, beta1=0.9, beta2=0.99),
    "two_groups_no_momentum": dict(
        lr=0.1, wd=1e-4, clip=math.inf, mc=2, rescale=True, beta1=0.0, beta2=0.99, groups=True
    ),
}
PARITY_STEPS = 60
TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", PARITY_CASES.values(), ids=PARITY_CASES.keys())
def test_parity_with_ivon_opt(case):
    ivon_ref = pytest.importorskip("ivon")
    two_groups = case.get("groups", False)
    hyper = dict(
        lr=case["lr"],
        ess=1000.0,
        hess_init=0.5,
        beta1=case["beta1"],
        beta2=case["beta2"],
        weight_decay=case["wd"],
        mc_samples=case["mc"],
        clip_radius=case["clip"],
        rescale_lr=case["rescale"],
    )
    ref_model, our_model = make_net(), make_net()
    ref = ivon_ref.IVON(param_groups_for(ref_model, two_groups), **hyper)
    ours = IVON(param_groups_for(our_model, two_groups), **hyper)
    # ivon-opt reads p.grad of every trainable parameter and fails on None: give the
    # never-used one a zero gradient that zero_grad(set_to_none=False) keeps at zero.
    ref_model.unused.grad = torch.zeros_like(ref_model.unused)

    clipped = False
    for t, batch in enumerate(make_batches(PARITY_STEPS)):
        before = [p.detach().clone() for p in our_model.parameters()]
        for s in range(case["mc"]):
            # Same noise in both: ivon-opt draws one flat randn per group from the global
            # RNG, we draw the same from a generator seeded identically.
            seed = 1000 * t + s
            torch.manual_seed(seed)
            with ref.sampled_params(train=True):
                ref.zero_grad(set_to_none=False)  # ivon-opt leaves this to the caller
                loss_fn(ref_model, batch).backward()
            with ours.sampled_params(train=True, generator=torch.Generator().manual_seed(seed)):
                loss_fn(our_model, batch).backward()
        ref.step()
        ours.step()

        # Every step (the first ones check beta1 debiasing, where it matters most).
        for p_ref, p_ours in zip(ref_model.parameters(), our_model.parameters(), strict=True):
            torch.testing.assert_close(p_ours, p_ref, **TOL)
        for group_ref, hess, momentum in zip(
            ref.param_groups, flat_state(ours, "hess"), flat_state(ours, "momentum"), strict=True
        ):
            torch.testing.assert_close(hess, group_ref["hess"], **TOL)
            torch.testing.assert_close(momentum, group_ref["momentum"], **TOL)

        # Make sure the clipped cases do clip: some elementwise step hits lr_eff·radius.
        group = ours.param_groups[0]
        lr_eff = group["lr"] * (
            group["hess_init"] + group["weight_decay"] if case["rescale"] else 1
        )
        steps = [
            (p.detach() - b).abs().max()
            for p, b in zip(our_model.parameters(), before, strict=True)
        ]
        clipped |= bool(max(steps) >= lr_eff * case["clip"] * (1 - 1e-4))
    assert clipped == math.isfinite(case["clip"])
    # Sanity: training moved the mean.
    assert not torch.equal(our_model.fc1.weight, make_net().fc1.weight)


# ------------------------------------------------------------------ sampling and the mean


def test_mean_restored_on_exit_and_on_exception():
    model = make_net()
    opt = IVON(model.parameters(), lr=0.1, ess=100.0)
    mean = [p.detach().clone() for p in model.parameters()]
    batch = make_batches(1)[0]

    with opt.sampled_params(train=False):
        inside = [p.detach().clone() for p in model.parameters()]
    assert all(not torch.equal(a, b) for a, b in zip(inside, mean, strict=True))
    assert all(torch.equal(p, m) for p, m in zip(model.parameters(), mean, strict=True))

    with pytest.raises(KeyError, match="boom"):
        with opt.sampled_params(train=True):
            loss_fn(model, batch).backward()
            raise KeyError("boom")
    assert all(torch.equal(p, m) for p, m in zip(model.parameters(), mean, strict=True))
    # The failed block recorded nothing and left the optimizer usable.
    with pytest.raises(RuntimeError, match="at least one gradient sample"):
        opt.step()
    train_step(opt, model, batch, torch.Generator().manual_seed(0))


def test_train_block_records_each_sample_separately():
    """Grads are reset on entry: a stale .grad must not leak into the sample, and two
    blocks average (not sum) their gradients."""
    model = make_net()
    opt = IVON(model.parameters(), lr=0.1, ess=1e12, weight_decay=0.0, beta1=0.0)
    batch = make_batches(1)[0]
    for p in model.parameters():
        p.grad = torch.full_like(p, 123.0)
    for _ in range(2):  # ess 1e12: the noise is ~1e-6, so both samples see about the mean
        with opt.sampled_params(train=True):
            loss_fn(model, batch).backward()
    expected = torch.autograd.grad(loss_fn(model, batch), model.fc1.weight)[0]
    torch.testing.assert_close(
        opt.state[model.fc1.weight]["grad_sum"] / 2, expected, atol=1e-5, rtol=1e-4
    )


def test_posterior_std_and_tempered_samples():
    model = make_net()
    wd, ess = 1e-2, 400.0
    opt = IVON(model.parameters(), lr=0.1, ess=ess, weight_decay=wd, beta2=0.9)
    gen = torch.Generator().manual_seed(0)
    for batch in make_batches(5):
        train_step(opt, model, batch, gen)
    params = list(model.parameters())
    std = opt.posterior_std()
    assert [s.shape for s in std] == [p.shape for p in params]
    for p, s in zip(params, std, strict=True):
        torch.testing.assert_close(s, 1 / torch.sqrt(ess * (opt.state[p]["hess"] + wd)))
    assert any(not torch.allclose(s, std[0].flatten()[0]) for s in std)  # h has moved

    mean = [p.detach().clone() for p in params]
    with opt.sampled_params(tau=0.0):
        assert all(torch.equal(p, m) for p, m in zip(params, mean, strict=True))

    for tau in (1.0, 0.25):
        z = []  # standardised deviations (θ − m)/σ, pooled over elements and draws
        for _ in range(200):
            with opt.sampled_params(tau=tau, generator=gen):
                z += [((p - m) / s).flatten() for p, m, s in zip(params, mean, std, strict=True)]
        z = torch.cat(z)  # ~36k values: std within ~1% of sqrt(tau)
        assert abs(z.mean().item()) < 0.03 * math.sqrt(tau)
        assert z.std().item() == pytest.approx(math.sqrt(tau), rel=0.03)


# ------------------------------------------------------------------ resuming


@pytest.mark.parametrize("mid_accumulation", [False, True])
def test_state_dict_resume_is_bit_identical(mid_accumulation):
    hyper = dict(lr=0.05, ess=1000.0, weight_decay=1e-3, beta2=0.99, clip_radius=0.1)
    batches = make_batches(8)

    def run(model, opt, gen, batches, first_sample_only=False):
        for batch in batches:
            with opt.sampled_params(train=True, generator=gen):
                loss_fn(model, batch).backward()
            if first_sample_only:
                return
            with opt.sampled_params(train=True, generator=gen):
                loss_fn(model, batch).backward()
            opt.step()

    model_a = make_net()
    opt_a = IVON(model_a.parameters(), **hyper)
    gen_a = torch.Generator().manual_seed(7)
    run(model_a, opt_a, gen_a, batches)

    model_b = make_net()
    opt_b = IVON(model_b.parameters(), **hyper)
    gen_b = torch.Generator().manual_seed(7)
    run(model_b, opt_b, gen_b, batches[:4])
    if mid_accumulation:  # checkpoint between the two samples of step 5
        run(model_b, opt_b, gen_b, batches[4:5], first_sample_only=True)
    buf = io.BytesIO()
    torch.save({"model": model_b.state_dict(), "opt": opt_b.state_dict()}, buf)
    rng = gen_b.get_state()
    del model_b, opt_b, gen_b

    buf.seek(0)
    ckpt = torch.load(buf)
    model_c = make_net(seed=99)  # different init: everything must come from the checkpoint
    opt_c = IVON(model_c.parameters(), **hyper)
    model_c.load_state_dict(ckpt["model"])
    opt_c.load_state_dict(ckpt["opt"])
    gen_c = torch.Generator()
    gen_c.set_state(rng)
    if mid_accumulation:
        with opt_c.sampled_params(train=True, generator=gen_c):
            loss_fn(model_c, batches[4]).backward()
        opt_c.step()
        run(model_c, opt_c, gen_c, batches[5:])
    else:
        run(model_c, opt_c, gen_c, batches[4:])

    for p_a, p_c in zip(model_a.parameters(), model_c.parameters(), strict=True):
        assert torch.equal(p_a, p_c)
    for key in ("hess", "momentum"):
        assert all(
            torch.equal(a, c)
            for a, c in zip(flat_state(opt_a, key), flat_state(opt_c, key), strict=True)
        )
    assert opt_c.param_groups[0]["step"] == opt_a.param_groups[0]["step"] == 8


# ------------------------------------------------------------------ odd parameters


def test_parameters_without_gradient_are_tolerated():
    model = make_net()
    b2, h0 = 0.9, 0.5
    opt = IVON(model.parameters(), lr=0.1, ess=100.0, hess_init=h0, beta2=b2, weight_decay=0.0)
    model.scale.grad = torch.ones_like(model.scale)  # frozen: ignored even if a grad is set
    unused, scale = model.unused.detach().clone(), model.scale.detach().clone()
    gen = torch.Generator().manual_seed(0)
    steps = 3
    for batch in make_batches(steps):
        train_step(opt, model, batch, gen)
        assert model.unused.grad is None
    # Zero gradient and no weight decay: the mean stays, h decays as h·(β2 + ½(1−β2)²).
    assert torch.equal(model.unused, unused) and torch.equal(model.scale, scale)
    expected_h = h0 * (b2 + 0.5 * (1 - b2) ** 2) ** steps
    for p in (model.unused, model.scale):
        torch.testing.assert_close(opt.state[p]["hess"], torch.full_like(p, expected_h))
    assert not torch.equal(model.fc1.weight, make_net().fc1.weight)


def test_step_with_closure_matches_manual_loop():
    hyper = dict(lr=0.1, ess=1000.0, mc_samples=2, beta2=0.99)
    batches = make_batches(4)
    model_a, model_b = make_net(), make_net()
    opt_a, opt_b = IVON(model_a.parameters(), **hyper), IVON(model_b.parameters(), **hyper)
    gen_a, gen_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for batch in batches:
        train_step(opt_a, model_a, batch, gen_a, mc_samples=2)

        def closure(batch=batch):
            loss = loss_fn(model_b, batch)
            loss.backward()
            return loss

        loss = opt_b.step(closure, generator=gen_b)
        assert loss.ndim == 0 and not loss.requires_grad
    assert all(
        torch.equal(a, b) for a, b in zip(model_a.parameters(), model_b.parameters(), strict=True)
    )


def test_follows_parameter_dtype():
    model = make_net().double()
    opt = IVON(model.parameters(), lr=0.1, ess=100.0)
    x, y = make_batches(1)[0]
    with opt.sampled_params(train=True, generator=torch.Generator().manual_seed(0)):
        F.cross_entropy(model(x.double()), y).backward()
    opt.step()
    assert all(opt.state[p]["hess"].dtype == torch.float64 for p in model.parameters())
    assert all(s.dtype == torch.float64 for s in opt.posterior_std())


# ------------------------------------------------------------------ argument checking


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(lr=-0.1), "lr must be"),
        (dict(lr=float("nan")), "lr must be"),
        (dict(ess=0.0), "ess must be"),
        (dict(ess=float("inf")), "ess must be"),
        (dict(hess_init=0.0), "hess_init must be"),
        (dict(beta1=1.0), r"beta1 must be in \[0, 1\)"),
        (dict(beta1=-0.1), "beta1 must be"),
        (dict(beta2=1.5), r"beta2 must be in \[0, 1\]"),
        (dict(weight_decay=-1e-4), "weight_decay must be"),
        (dict(mc_samples=0), "mc_samples must be an integer >= 1"),
        (dict(mc_samples=1.5), "mc_samples must be"),
        (dict(clip_radius=0.0), "clip_radius must be > 0"),
        (dict(hess_approx="gradsq"), "hess_approx must be 'price'"),
        (dict(rescale_lr="yes"), "rescale_lr must be True or False"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = dict(lr=0.1, ess=100.0) | kwargs
    with pytest.raises(ValueError, match=match):
        IVON(make_net().parameters(), **args)


def test_bad_param_groups_and_misuse():
    model = make_net()
    with pytest.raises(ValueError, match="lr must be"):
        IVON([{"params": model.fc1.parameters(), "lr": -1.0}], lr=0.1, ess=100.0)
    with pytest.raises(ValueError, match="share one device and dtype"):
        IVON(
            [model.fc1.weight, nn.Parameter(torch.zeros(3, dtype=torch.float64))], lr=0.1, ess=100.0
        )
    with pytest.raises(TypeError):
        IVON(model.parameters(), lr=0.1)  # ess is required

    opt = IVON(model.parameters(), lr=0.1, ess=100.0)
    with pytest.raises(ValueError, match="tau must be"):
        with opt.sampled_params(tau=-1.0):
            pass
    with pytest.raises(ValueError, match="needs tau=1"):
        with opt.sampled_params(train=True, tau=0.5):
            pass
    with pytest.raises(RuntimeError, match="at least one gradient sample"):
        opt.step()
    with opt.sampled_params(train=True):
        with pytest.raises(RuntimeError, match="cannot be nested"):
            with opt.sampled_params():
                pass
        with pytest.raises(RuntimeError, match="inside a sampled_params block"):
            opt.step()
        loss_fn(model, make_batches(1)[0]).backward()
    opt.step()  # still usable after the misuse above
