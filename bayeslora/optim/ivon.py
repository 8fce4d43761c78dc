"""IVON, the Improved Variational Online Newton optimizer (Shen et al., "Variational
Learning is Effective for Large Deep Networks", ICML 2024, Algorithm 1), used as in
Cong et al. 2024 ("Variational Low-Rank Adaptation Using IVON") to train LoRA adapters.

Why it is written here: the reference implementation (PyPI ``ivon-opt``) is GPL-3.0, which
this Apache-2.0 project cannot depend on at run time. This is an independent implementation
from the paper. ``ivon-opt`` is only a test-time reference: tests/optim/test_ivon.py checks
that both give the same numbers (to float32 rounding) under identical noise.

IVON keeps a diagonal Gaussian posterior over the parameters,

    q(θ) = N(m, diag(σ²)),   σ² = 1 / (ess · (h + weight_decay)),

where m is what the parameters hold outside the blocks below, h is a running estimate of
the loss Hessian diagonal, ess (λ) is the effective sample size (usually the training-set
size) and weight_decay (δ) is the precision of the Gaussian prior. One training step:

    for micro_batch in micro_batches:            # just [batch] without gradient accumulation
        for _ in range(optimizer.mc_samples):
            with optimizer.sampled_params(train=True):   # θ = m + σ·ε is in the params here
                loss_fn(model(micro_batch)).backward()   # the *unscaled* micro-batch loss
    optimizer.step()                                     # averages all recorded samples

To IVON, Monte-Carlo samples and gradient-accumulation micro-batches are the same thing: each
``sampled_params(train=True)`` block records one (gradient, Hessian) sample and ``step()``
takes their plain average. For prediction, ``sampled_params(tau=...)`` draws from the
(tempered) posterior and ``posterior_std()`` returns σ.
"""

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from numbers import Real

import torch
from torch import Tensor
from torch.optim import Optimizer

_INF = float("inf")

# Allowed range of each per-group hyperparameter: (test, human-readable range). They are
# checked for every param group, so per-group overrides are validated too.
_RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "lr": (lambda v: 0.0 <= v < _INF, "a finite number >= 0"),
    "ess": (lambda v: 0.0 < v < _INF, "a finite number > 0 (usually the training-set size)"),
    "hess_init": (lambda v: 0.0 < v < _INF, "a finite number > 0"),
    "beta1": (lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    "beta2": (lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    "weight_decay": (lambda v: 0.0 <= v < _INF, "a finite number >= 0"),
    "clip_radius": (lambda v: v > 0.0, "> 0 (float('inf') turns clipping off)"),
}


def _check_group(group: dict) -> None:
    for name, (ok, allowed) in _RANGES.items():
        value = group[name]
        # `not ok(...)` rather than `ok(...) is False` so that NaN is rejected too.
        if isinstance(value, bool) or not isinstance(value, Real) or not ok(float(value)):
            raise ValueError(f"IVON: {name} must be {allowed}, got {value!r}")
    if not isinstance(group["rescale_lr"], bool):
        raise ValueError(f"IVON: rescale_lr must be True or False, got {group['rescale_lr']!r}")

    params = group["params"]
    if len(set(params)) != len(params):
        # Would be perturbed twice per sample and updated twice per step.
        raise ValueError("IVON: a parameter appears more than once in a param group")
    for p in params:
        if not p.is_floating_point():
            raise ValueError(f"IVON: parameters must be floating point, got {p.dtype}")
    # Noise is drawn as one flat vector per group (see _perturb), so a group must be homogeneous.
    if len({(p.device, p.dtype) for p in params}) > 1:
        raise ValueError(
            "IVON: all parameters of a param group must share one device and dtype; "
            "put parameters on different devices/dtypes into separate param groups"
        )


class IVON(Optimizer):
    """Improved Variational Online Newton (Shen et al. 2024, Alg. 1).

    Args:
        params: parameters or param groups, as for any torch optimizer.
        lr: learning rate α. With ``rescale_lr`` the step actually taken is scaled by
            (hess_init + weight_decay), see ``step()``.
        ess: effective sample size λ (the posterior precision is λ·(h + δ)).
        hess_init: initial Hessian estimate h0 (sets the initial posterior std).
        beta1: momentum of the gradient (debiased like Adam's first moment).
        beta2: momentum of the Hessian estimate.
        weight_decay: prior precision δ.
        mc_samples: posterior samples per step used by ``step(closure)``; a hand-written
            training loop reads it to know how many ``sampled_params(train=True)`` blocks
            to run per micro-batch.
        hess_approx: only ``"price"`` (the reparameterisation estimator ĝ·(θ−m)/σ²).
        clip_radius: elementwise clip of the preconditioned update direction.
        rescale_lr: multiply lr by (hess_init + weight_decay).

    Every argument except ``mc_samples`` and ``hess_approx`` may be overridden per group.
    """

    def __init__(
        self,
        params,
        lr: float,
        ess: float,
        hess_init: float = 1.0,
        beta1: float = 0.9,
        beta2: float = 0.99999,
        weight_decay: float = 1e-4,
        mc_samples: int = 1,
        hess_approx: str = "price",
        clip_radius: float = _INF,
        rescale_lr: bool = True,
    ):
        if hess_approx != "price":
            raise ValueError(
                f"IVON: hess_approx must be 'price' (the reparameterisation estimator, the "
                f"only one implemented), got {hess_approx!r}"
            )
        if isinstance(mc_samples, bool) or not isinstance(mc_samples, int) or mc_samples < 1:
            raise ValueError(f"IVON: mc_samples must be an integer >= 1, got {mc_samples!r}")
        self.mc_samples = mc_samples
        self.hess_approx = hess_approx
        self._in_block = False  # guards against nesting and against step() inside a block
        defaults = dict(
            lr=lr,
            ess=ess,
            hess_init=hess_init,
            beta1=beta1,
            beta2=beta2,
            weight_decay=weight_decay,
            clip_radius=clip_radius,
            rescale_lr=rescale_lr,
        )
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        if any(g["num_samples"] for g in self.param_groups):
            # The new group would miss the samples already recorded for the others.
            raise RuntimeError("IVON: cannot add a param group between sampling and step()")
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            _check_group(group)
        except ValueError:
            self.param_groups.pop()
            raise
        # Counters live in the group so that state_dict() saves and restores them.
        group.setdefault("step", 0)  # steps taken, for beta1 debiasing
        group.setdefault("num_samples", 0)  # gradient samples recorded since the last step
        # State is created eagerly (not on the first step like Adam) because sampling needs
        # h before the first step, and so that a fresh state_dict() is already complete.
        for p in group["params"]:
            self.state[p] = {
                "momentum": torch.zeros_like(p, memory_format=torch.preserve_format),
                "hess": torch.full_like(p, group["hess_init"], memory_format=torch.preserve_format),
            }

    @staticmethod
    def _precision(group: dict, hess: Tensor) -> Tensor:
        """Posterior precision 1/σ² = λ·(h + δ)."""
        return group["ess"] * (hess + group["weight_decay"])

    @torch.no_grad()
    def posterior_std(self) -> list[Tensor]:
        """Posterior standard deviation σ = 1/sqrt(ess·(h + weight_decay)) of every parameter,
        as new tensors shaped like the parameters, in the order of ``param_groups``."""
        return [
            self._precision(group, self.state[p]["hess"]).sqrt().reciprocal()
            for group in self.param_groups
            for p in group["params"]
        ]

    @contextmanager
    def sampled_params(
        self,
        train: bool = False,
        tau: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Iterator[None]:
        """Put a posterior sample θ = m + sqrt(tau)·σ·ε, ε ~ N(0, I), into the parameters
        for the duration of the block, then put the mean m back.

        train=True: record this sample for the next ``step()``. On entry the parameters'
        ``.grad`` are reset to None, so the gradient found on exit is this sample's alone
        (the block must run the backward pass; ``zero_grad()`` outside is not needed). A
        parameter whose ``.grad`` is still None on exit, or that does not require grad,
        counts as having gradient zero. Needs tau=1: the Hessian estimator assumes the
        noise came from the posterior itself.

        train=False: for prediction. tau scales the posterior variance: 1 is the
        posterior, 0 leaves the parameters at the mean exactly (and draws no noise).

        The mean is restored however the block is left. A block left by an exception
        records nothing (its gradient may be incomplete).

        generator: the source of ε (default: torch's global RNG); it must be on the
        parameters' device. Per param group, ε is one flat draw over the group's
        parameters in order, so a seed fixes the sample.
        """
        if self._in_block:
            raise RuntimeError("IVON: sampled_params blocks cannot be nested")
        if isinstance(tau, bool) or not isinstance(tau, Real) or not 0.0 <= tau < _INF:
            raise ValueError(f"IVON: tau must be a finite number >= 0, got {tau!r}")
        if train and tau != 1.0:
            raise ValueError(f"IVON: sampled_params(train=True) needs tau=1, got {tau!r}")
        if train:
            self.zero_grad(set_to_none=True)

        samples: list[tuple[dict, Tensor, Tensor, Tensor]] = []  # (group, param, mean, noise)
        self._in_block = True
        try:
            if tau > 0.0:
                self._perturb(samples, tau, generator)
            yield
        finally:
            # Restore from a saved copy (not θ − noise) so that the mean comes back bit-exact.
            with torch.no_grad():
                for _, p, mean, _ in samples:
                    p.copy_(mean)
            self._in_block = False
        if train:
            self._record(samples)

    @torch.no_grad()
    def _perturb(self, samples: list, tau: float, generator: torch.Generator | None) -> None:
        for group in self.param_groups:
            params = group["params"]
            if not params:
                continue
            # One flat draw per group, split over the parameters in order. This is also
            # ivon-opt's draw order, which the parity test relies on.
            eps = torch.randn(
                sum(p.numel() for p in params),
                generator=generator,
                device=params[0].device,
                dtype=params[0].dtype,
            )
            for p, e in zip(params, eps.split([p.numel() for p in params]), strict=True):
                noise = e.view(p.shape) / self._precision(group, self.state[p]["hess"]).sqrt()
                if tau != 1.0:
                    noise.mul_(math.sqrt(tau))
                # Appended before p is touched, so that the finally-block above restores
                # every parameter that was perturbed even if this loop fails half-way.
                samples.append((group, p, p.detach().clone(), noise))
                p.add_(noise)

    @torch.no_grad()
    def _record(self, samples: list) -> None:
        for group, p, _, noise in samples:
            state = self.state[p]
            if "grad_sum" not in state:  # first sample since the last step
                state["grad_sum"] = torch.zeros_like(p)
                state["hess_sum"] = torch.zeros_like(p)
            grad = p.grad
            if grad is None or not p.requires_grad:
                continue  # no gradient this sample: it contributes zero to both sums
            if grad.is_sparse:
                raise RuntimeError("IVON does not support sparse gradients")
            state["grad_sum"].add_(grad)
            # Reparameterisation ("price") estimate of the loss Hessian diagonal,
            # ĥ = ĝ·(θ − m)/σ², with θ − m = noise and 1/σ² the precision it was drawn with.
            state["hess_sum"].add_(grad * noise * self._precision(group, state["hess"]))
        for group in self.param_groups:
            group["num_samples"] += 1

    @torch.no_grad()
    def step(
        self,
        closure: Callable[[], Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor | None:
        """Update the posterior from the samples recorded since the last step.

        closure: optional; if given, it is called ``mc_samples`` times, each time inside
        ``sampled_params(train=True, generator=generator)``, and must compute the loss,
        call ``backward()`` and return the loss. Returns the average of those losses.
        """
        if self._in_block:
            raise RuntimeError("IVON: step() called inside a sampled_params block")
        loss = None
        if closure is not None:
            losses = []
            for _ in range(self.mc_samples):
                with torch.enable_grad(), self.sampled_params(train=True, generator=generator):
                    losses.append(closure())
            loss = sum(losses) / len(losses)
        if any(group["num_samples"] == 0 for group in self.param_groups):
            raise RuntimeError(
                "IVON: step() needs at least one gradient sample; run the forward and "
                "backward pass inside `with optimizer.sampled_params(train=True):` first"
            )
        for group in self.param_groups:
            self._update_group(group)
        return loss

    def _update_group(self, group: dict) -> None:
        n = group["num_samples"]
        group["num_samples"] = 0
        group["step"] += 1
        b1, b2, wd = group["beta1"], group["beta2"], group["weight_decay"]
        # rescale_lr makes lr the size of the first steps: at h = hess_init the update
        # below is lr·(ḡ + δm) (before clipping), as with SGD/Adam-style learning rates.
        lr = group["lr"] * (group["hess_init"] + wd) if group["rescale_lr"] else group["lr"]
        debias = 1.0 - b1 ** group["step"]  # undoes the zero initialisation of the momentum

        # The per-parameter update below, written with torch's _foreach ops (what
        # torch.optim uses): one call per operation over all of a group's tensors instead of
        # a Python loop over them; a LoRA adapter has ~100 small tensors, and the loop cost
        # about 1 % of a step. Same operations in the same order, so the same bits.
        params = group["params"]
        states = [self.state[p] for p in params]
        grads = [s.pop("grad_sum") for s in states]  # ĝ and ĥ averaged over the samples
        hess_hats = [s.pop("hess_sum") for s in states]
        torch._foreach_div_(grads, n)
        torch._foreach_div_(hess_hats, n)
        momenta, hess = [s["momentum"] for s in states], [s["hess"] for s in states]

        torch._foreach_mul_(momenta, b1)
        torch._foreach_add_(momenta, grads, alpha=1.0 - b1)
        # h ← β2·h + (1−β2)·ĥ + ½(1−β2)²·(h − ĥ)²/(h + δ). The last term is the
        # Riemannian correction that keeps h + δ positive although ĥ can be negative.
        correction = torch._foreach_sub(hess, hess_hats)
        torch._foreach_mul_(correction, correction)
        torch._foreach_div_(correction, torch._foreach_add(hess, wd))
        torch._foreach_mul_(correction, 0.5 * (1.0 - b2) ** 2)
        torch._foreach_mul_(hess, b2)
        torch._foreach_add_(hess, hess_hats, alpha=1.0 - b2)
        torch._foreach_add_(hess, correction)

        # Newton-like step on the mean with the *updated* h; the prior adds δ·m to the
        # gradient and δ to the Hessian. Clipping is elementwise, on the direction,
        # before the learning rate is applied.
        direction = torch._foreach_div(momenta, debias)
        torch._foreach_add_(direction, torch._foreach_mul(params, wd))
        torch._foreach_div_(direction, torch._foreach_add(hess, wd))
        torch._foreach_clamp_min_(direction, -group["clip_radius"])
        torch._foreach_clamp_max_(direction, group["clip_radius"])
        torch._foreach_sub_(params, direction, alpha=lr)
