"""Laplace-LoRA (Yang et al. 2024): a post-hoc Gaussian posterior over the LoRA weights.

Train the MAP adapter with AdamW, then fit a Laplace approximation around it with
laplace-torch: the generalised Gauss-Newton Hessian of the training loss with respect to
the LoRA weights only (the base model is frozen, and laplace-torch treats exactly the
parameters with ``requires_grad`` as the random ones), a Gaussian prior whose precision is
chosen by the marginal likelihood (or by validation NLL), and the linearised (GLM)
predictive over the K answer logits.

laplace-torch is an optional dependency (``pip install 'bayeslora[laplace]'``); it is
imported only when this method is configured, so ``import bayeslora`` never needs it.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from enum import StrEnum

import torch
from torch import Tensor, nn

from bayeslora._optional import require
from bayeslora.methods.adamw import AdamW, AdamWConfig
from bayeslora.methods.modes import ModeKind, PredictionMode
from bayeslora.methods.registry import register_method
from bayeslora.tasks.encoding import make_loader, model_inputs
from bayeslora.training.loop import predict_logits


class HessianStructure(StrEnum):
    KRON = "kron"  # Kronecker-factored GGN per LoRA matrix (K-FAC)
    DIAG = "diag"  # diagonal GGN


class PriorMethod(StrEnum):
    MARGLIK = "marglik"  # maximise the Laplace marginal likelihood on the training data
    GRIDSEARCH = "gridsearch"  # minimise the predictive NLL on held-out data over a log grid
    FIXED = "fixed"  # use ``prior_precision`` as given


class PriorStructure(StrEnum):
    SCALAR = "scalar"  # one precision for all LoRA weights ("homo" in the authors' code)
    LAYERWISE = "layerwise"  # one per LoRA matrix
    DIAG = "diag"  # one per weight


class LinkApprox(StrEnum):
    MC = "mc"  # sample the Gaussian over the K logits, average the softmax
    PROBIT = "probit"  # closed-form multiclass probit approximation


@dataclass
class LaplaceConfig(AdamWConfig):
    """AdamW's fields (the MAP fit) plus the Laplace approximation's.

    Defaults and where they come from (Yang et al. 2024; "code" is the authors'
    ``run_gpt_laplace.py`` / ``run_gpt_laplace.sh`` in github.com/adamxyang/laplace-lora):

    - ``hessian_structure="kron"``: the paper's K-FAC posterior (code: ``--laplace_hessian kron``).
    - ``prior_method="marglik"``, ``prior_structure="scalar"``, ``prior_precision=1.0``,
      ``marglik_steps=100``, ``marglik_lr=0.1``: the paper tunes the prior precision by the
      marginal likelihood on the training data; code: ``Laplace(..., prior_precision=1.)``,
      ``--laplace_prior homo`` (one scalar; laplace-torch 0.3 would default to one per
      weight), ``optimize_prior_precision(method='marglik', lr=1e-1)`` for
      ``--laplace_optim_step 100`` steps. ``prior_precision`` is marglik's starting value,
      and the value used as is for ``prior_method="fixed"``.
    - ``grid_log10_min=-3``, ``grid_log10_max=4``, ``grid_size=50``: the authors' validation
      variant (code: ``log_prior_prec_min=-3, log_prior_prec_max=4, grid_size=50``). Each grid
      point costs one Jacobian pass over the validation data.
    - ``link_approx="mc"``, ``n_samples=100000``: the code samples correlated logits from the
      linearised predictive and averages the softmax (``--laplace_predict mc_corr_100000``).
      Sampling K logits is cheap next to the Jacobians, so we keep the authors' count;
      ``"probit"`` is the closed-form alternative.
    - ``laplace_batch_size=0``: our choice; the batch size of the Hessian fit (0: the
      training batch size).
    - ``jacobian_batch_size=1``: our choice, measured. The GLM predictive (and the grid
      search) take per-example Jacobians with ``torch.func.jacrev``, whose vmap has no
      batching rule for CPU SDPA attention's backward and falls back to a slow path: on
      SmolLM2-135M a batch of 8 needed more than 16 GB (a --quick run was OOM-killed at
      21 GB), a batch of 1 stayed at 2.9 GB peak and took 0.6 s per question.
    """

    hessian_structure: str = HessianStructure.KRON.value
    prior_method: str = PriorMethod.MARGLIK.value
    prior_structure: str = PriorStructure.SCALAR.value
    prior_precision: float = 1.0
    marglik_steps: int = 100
    marglik_lr: float = 0.1
    grid_log10_min: float = -3.0
    grid_log10_max: float = 4.0
    grid_size: int = 50
    link_approx: str = LinkApprox.MC.value
    n_samples: int = 100_000
    laplace_batch_size: int = 0
    jacobian_batch_size: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()  # AdamW's ranges, finite floats
        for name, options in (
            ("hessian_structure", HessianStructure),
            ("prior_method", PriorMethod),
            ("prior_structure", PriorStructure),
            ("link_approx", LinkApprox),
        ):
            value = getattr(self, name)
            try:
                setattr(self, name, options(value).value)  # plain str, so the config logs cleanly
            except ValueError:
                raise ValueError(
                    f"{name}={value!r} is not one of {[o.value for o in options]}"
                ) from None
        if self.prior_precision <= 0:
            raise ValueError(f"prior_precision must be > 0, got {self.prior_precision}")
        for name in ("marglik_steps", "grid_size", "n_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.grid_log10_min >= self.grid_log10_max:
            raise ValueError(
                f"grid_log10_min ({self.grid_log10_min}) must be < grid_log10_max ({self.grid_log10_max})"
            )
        if self.jacobian_batch_size < 1:
            raise ValueError(f"jacobian_batch_size must be >= 1, got {self.jacobian_batch_size}")
        if self.laplace_batch_size < 0:
            raise ValueError(f"laplace_batch_size must be >= 0, got {self.laplace_batch_size}")


def _laplace_torch():
    return require("laplace", extra="laplace", purpose="Laplace-LoRA")


class LogitsView(nn.Module):
    """The classifier as laplace-torch wants it: ``forward(batch) -> [B, K]`` logits.

    laplace-torch passes dict batches (as ``make_loader`` yields them) whole to the model and
    reads the targets from ``batch["labels"]``; it does not move them to the device.

    Only ``peft_model`` is registered as a submodule, so each weight has exactly one name:
    ``torch.func.functional_call`` (laplace-torch's Jacobians) swaps the weights of a module
    reached by two names twice and restores them once, leaving dead functorch tensors.
    """

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.peft_model = classifier.peft_model
        self.__dict__["classifier"] = classifier  # not a submodule, see above

    def forward(self, batch: MutableMapping[str, Tensor]) -> Tensor:
        return self.classifier(**model_inputs(batch, self.classifier.device))

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        # laplace-torch takes its device and dtype from the first parameter: make that a LoRA
        # weight (float32 even on a bf16 base), keeping the LoRA weights in named order.
        params = list(super().parameters(recurse))
        yield from (p for p in params if p.requires_grad)
        yield from (p for p in params if not p.requires_grad)


def _loader(data, batch_size: int):
    return make_loader(data, batch_size, shuffle=False, seed=0)


@contextlib.contextmanager
def _seeded(device: torch.device, seed: int) -> Iterator[None]:
    """Fork and seed the global RNG: laplace-torch's MC grid search draws from it."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def fit_laplace(
    model: nn.Module, train, config: LaplaceConfig, *, batch_size: int, val=None, seed: int = 0
):
    """A fitted laplace-torch posterior over ``model``'s trainable (LoRA) weights.

    ``model`` maps a batch's inputs (``model_inputs``) to ``[B, K]`` logits and has a
    ``device``; ``train``/``val`` are datasets of ``tasks/encoding.py`` (either scoring). Returns (laplace object, timings in seconds).
    """
    laplace = _laplace_torch()
    c = config
    if c.prior_method == PriorMethod.GRIDSEARCH and val is None:
        raise ValueError(_NEEDS_VAL)
    view = LogitsView(model)
    la = laplace.Laplace(
        view,
        "classification",
        subset_of_weights="all",
        hessian_structure=c.hessian_structure,
        prior_precision=c.prior_precision,
    )
    start = time.perf_counter()
    la.fit(_loader(train, batch_size))
    timings = {"laplace_fit_s": time.perf_counter() - start}

    start = time.perf_counter()
    with warnings.catch_warnings(), _seeded(model.device, seed):
        # It reminds us to predict with the link it tuned for, which we do.
        warnings.filterwarnings("ignore", message="By default `link_approx` is `probit`")
        if c.prior_method == PriorMethod.MARGLIK:
            la.optimize_prior_precision(
                pred_type="glm",
                method="marglik",
                n_steps=c.marglik_steps,
                lr=c.marglik_lr,
                init_prior_prec=c.prior_precision,
                prior_structure=c.prior_structure,
            )
        elif c.prior_method == PriorMethod.GRIDSEARCH:
            la.optimize_prior_precision(
                pred_type="glm",
                method="gridsearch",
                val_loader=_loader(val, c.jacobian_batch_size),  # its predictive needs Jacobians
                log_prior_prec_min=c.grid_log10_min,
                log_prior_prec_max=c.grid_log10_max,
                grid_size=c.grid_size,
                link_approx=c.link_approx,
                n_samples=c.n_samples,
            )
    timings["laplace_prior_s"] = time.perf_counter() - start
    return la, timings


def predict_laplace(la, data, config: LaplaceConfig, *, batch_size: int, seed: int = 0) -> Tensor:
    """GLM predictive probabilities ``[N, K]`` in data order."""
    device = la.model.classifier.device
    generator = torch.Generator(device=device).manual_seed(seed)  # the same samples every call
    probs = []
    for batch in _loader(data, batch_size):
        if config.link_approx == LinkApprox.MC:
            # predictive_samples, unlike la(...), takes a generator.
            p = la.predictive_samples(
                batch, pred_type="glm", n_samples=config.n_samples, generator=generator
            )
            p = p.mean(0)
        else:
            p = la(batch, pred_type="glm", link_approx=config.link_approx)
        probs.append(p.detach().float().cpu())
    probs = torch.cat(probs)
    return probs / probs.sum(-1, keepdim=True)  # an average of softmaxes may drift by float eps


_NEEDS_VAL = (
    "Laplace-LoRA with prior_method=gridsearch needs held-out data, but got none. Either run "
    "the bench with --eval-every N (it then holds out --val-fraction of the training data), or "
    "use prior_method=marglik (the paper's default, which needs no held-out data)."
)


@register_method("laplace")
class LaplaceLoRA(AdamW):
    """Laplace-LoRA: AdamW MAP, then a Laplace posterior over the LoRA weights (laplace-torch).

    Modes: "laplace" (linearised predictive) and "laplace@map" (the same adapter's MAP
    prediction, free: the paired baseline). Defaults follow Yang et al. 2024 and their code
    (K-FAC Hessian, marginal-likelihood scalar prior, GLM predictive with sampled logits);
    see :class:`LaplaceConfig`.

    Held-out data: only ``prior_method=gridsearch`` uses it, so ``needs_validation`` stays
    False — otherwise every marglik run (the default) would lose a tenth of its training
    data and its "laplace@map" row would no longer match "adamw". A gridsearch run without
    held-out data fails before training, saying how to get it.

    Cost: the K-FAC factors of a LoRA matrix are d x d for its full side, so memory grows
    with d^2 per adapted module (the paper's low-rank K-FAC factors are not in laplace-torch).
    Prediction needs per-example Jacobians (K backward passes per batch). ``extra_metrics``
    reports times and memory.
    """

    Config = LaplaceConfig
    key_libraries = ("laplace-torch",)
    # Measured (bitsandbytes 0.50.2, torch 2.13): the GLM predictive's torch.func.jacrev
    # fails on bitsandbytes' matmuls, autograd Functions without functorch support
    # ("must override the setup_context staticmethod"), in 8-bit and in 4-bit.
    quantized_base = False
    quantized_base_reason = (
        "its GLM predictive takes per-example Jacobians with torch.func.jacrev, which "
        "bitsandbytes' quantized matmuls do not support"
    )

    def __init__(self, config=None, *, train=None, on_log=None):
        super().__init__(config, train=train, on_log=on_log)
        self.la = None
        self.costs: dict[str, float] = {}

    def prediction_modes(self) -> tuple[PredictionMode, ...]:
        return (
            PredictionMode(self.name, ModeKind.POSTERIOR),
            PredictionMode(f"{self.name}@map", ModeKind.POINT),
        )

    @classmethod
    def make_config(cls, task=None, overrides=None):
        _laplace_torch()  # a missing extra fails here, before the harness loads any model
        return super().make_config(task, overrides)

    @property
    def _batch_size(self) -> int:
        return self.config.laplace_batch_size or self.train_settings.batch_size

    def fit(self, model, train, val=None) -> None:
        _laplace_torch()
        if self.config.prior_method == PriorMethod.GRIDSEARCH and val is None:
            raise ValueError(_NEEDS_VAL)  # before training, not after
        super().fit(model, train, val)
        device = model.device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        self.la, timings = fit_laplace(
            model,
            train,
            self.config,
            batch_size=self._batch_size,
            val=val,
            seed=self.train_settings.seed,
        )
        prior = self.la.prior_precision
        self.costs = {
            **timings,
            "laplace_fit_peak_rss_mb": _peak_rss_mb(),
            "laplace_posterior_mb": _posterior_bytes(self.la) / 2**20,
            "laplace_n_params": float(self.la.n_params),
            "laplace_prior_precision": prior.mean().item(),
            "laplace_log_marglik": self.la.log_marginal_likelihood().item(),
        }
        if device.type == "cuda":
            self.costs["laplace_fit_peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20

    def predict_proba(self, data, mode=None) -> Tensor:
        mode = self._check_mode(mode)
        self.model.eval()
        if mode.kind is ModeKind.POINT:
            return predict_logits(self.model, data, self.train_settings.eval_batch_size).softmax(-1)
        if self.la is None:
            raise RuntimeError(
                f"{self.name}: call fit() before predicting with the Laplace posterior"
            )
        start = time.perf_counter()
        probs = predict_laplace(
            self.la,
            data,
            self.config,
            batch_size=self.config.jacobian_batch_size,
            seed=self.train_settings.seed,
        )
        self.costs["laplace_predict_s"] = time.perf_counter() - start
        return probs

    def validation_metrics(self, data) -> dict[str, float]:

        # During AdamW training (--eval-every) there is no posterior yet: score the MAP.
        posterior, map_mode = self.modes()
        mode = posterior if self.la is not None else map_mode
        return self.score_validation(self.predict_proba(data, mode), data)

    @classmethod
    def search_space(cls, trial) -> dict:
        """AdamW's MAP settings plus the Laplace choices (issue: prior method, Hessian structure).

        ``gridsearch`` is left out: it needs held-out data that the final runs do not get.
        """
        values = {
            **super().search_space(trial),
            "hessian_structure": trial.suggest_categorical("hessian_structure", ["kron", "diag"]),
            "prior_method": trial.suggest_categorical("prior_method", ["marglik", "fixed"]),
        }
        if values["prior_method"] == "fixed":  # define-by-run: only then does the value matter
            values["prior_precision"] = trial.suggest_float("prior_precision", 1e-2, 1e4, log=True)
        return values

    def extra_metrics(self) -> dict[str, float]:
        return dict(self.costs)


def _peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB): an upper bound for the fit's."""
    try:
        import resource
    except ImportError:  # not on Windows
        return float("nan")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _posterior_bytes(la) -> int:
    """Bytes held by the fitted curvature: the diagonal, or the K-FAC factors (kron keeps
    them both raw, ``H_facs``, and eigendecomposed, ``H``)."""
    seen: dict[int, int] = {}

    def walk(obj) -> None:
        if isinstance(obj, Tensor):
            seen[obj.data_ptr()] = obj.numel() * obj.element_size()
        elif isinstance(obj, (list, tuple)):
            for o in obj:
                walk(o)
        elif hasattr(obj, "__dict__"):  # Kron / KronDecomposed
            for o in vars(obj).values():
                walk(o)

    walk([la.H, getattr(la, "H_facs", None)])
    return sum(seen.values())
