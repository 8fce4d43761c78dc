"""Calibration metrics as pure functions of predicted probabilities and labels.

Every metric takes

* ``probs``: float tensor ``[N, K]``, one row of class probabilities per example, and
* ``labels``: integer tensor ``[N]``, the index of the true class of each example,

and returns a 0-dim float64 tensor. :mod:`bayeslora.metrics.registry` lists them (name,
direction, display) and bundles them into the ``dict[str, float]`` that the harness logs
(:func:`~bayeslora.metrics.registry.compute_metrics`).

Conventions, decided once here so that every method in the benchmark is scored alike:

* **No silent fixing of the input.** Rows are used exactly as given: they are not
  renormalised, and (unlike torchmetrics) never softmaxed. Rows that are off from summing
  to one by float rounding (``1 ± 1e-6``, or ``~4e-3`` for bfloat16 softmax outputs) are
  fine; rows that are far off (see :func:`sum_tolerance`) raise ``ValueError``, because
  they almost always mean logits were passed instead of probabilities.
* **Predicted class** is ``probs.argmax(dim=1)``: on a tie the lowest class index wins
  (``torch.argmax`` returns the first maximum), for accuracy and for the calibration
  metrics alike.
* **Arithmetic is float64**, after an exact upcast of the input, so results do not
  depend on the input's precision beyond the values it holds.
* **Calibration bins** (ECE, MCE, reliability diagrams) are ``n_bins`` equal-width bins
  over the top-label confidence ``max_k probs[i, k]``, closed on the right by default as
  in IVON-LoRA's and Laplace-LoRA's code (Guo et al. 2017): ``[0, 1/M], (1/M, 2/M], ...,
  ((M-1)/M, 1]``. ``edges=BinEdges.LEFT`` closes them on the left instead, as torchmetrics
  and ``np.histogram``: ``[0, 1/M), ..., [(M-1)/M, 1]``. The two differ only for a
  confidence exactly on an interior edge (0.5 of a two-way question, say). Either way a
  confidence of exactly 1.0 (common: float softmax saturates) is in the last bin. See
  :func:`reliability_bins` for why we bin ourselves instead of calling torchmetrics'
  ``multiclass_calibration_error``.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import NamedTuple

import torch
from torch import Tensor

DEFAULT_N_BINS = 10
"""Number of calibration bins; 10 as in the Laplace-LoRA and IVON-LoRA papers."""


class BinEdges(StrEnum):
    """Which end of each calibration bin is closed (see the module's conventions)."""

    RIGHT = "right"  # (lo, hi]: IVON-LoRA, Laplace-LoRA and Guo et al. (2017)'s code
    LEFT = "left"  # [lo, hi): torchmetrics, np.histogram


DEFAULT_BIN_EDGES = BinEdges.RIGHT
"""The papers' convention; ``edges=`` of the binned metrics changes it."""

DEFAULT_NLL_EPS = 1e-12
"""Probabilities are clamped to at least this before the log in :func:`nll`.

A model can put probability exactly 0 on the true class (float softmax underflows), and
``-log(0)`` is inf, which would make the mean NLL inf however good the other examples
are. With the clamp one confident wrong answer costs at most ``-log(1e-12) ≈ 27.6``
nats. 1e-12 is far below any probability a model assigns on purpose, so it changes
nothing else.
"""

SUM_TOLERANCE = 1e-3
"""How far a row of ``probs`` may be from summing to one (see :func:`sum_tolerance`)."""


# --------------------------------------------------------------------------- validation


def sum_tolerance(dtype: torch.dtype) -> float:
    """Largest accepted ``|row sum - 1|`` for probabilities stored in ``dtype``.

    ``SUM_TOLERANCE`` (1e-3), widened to the dtype's machine epsilon when that is larger:
    a bfloat16 softmax output is only accurate to ~2**-8 per entry, and its rows miss
    one by up to ~4e-3. Logits or unnormalised scores miss by far more than either.
    """
    return max(SUM_TOLERANCE, torch.finfo(dtype).eps)


def _check_inputs(probs: Tensor, labels: Tensor) -> None:
    """Raise an error that names the problem and the fix if the inputs are not usable."""
    for name, value in (("probs", probs), ("labels", labels)):
        if not isinstance(value, Tensor):
            raise TypeError(
                f"{name} must be a torch.Tensor, got {type(value).__name__}; "
                f"convert it with torch.as_tensor({name})."
            )
    if probs.ndim != 2:
        raise ValueError(
            f"probs must be 2-D [N, K] (one row of class probabilities per example), "
            f"got shape {tuple(probs.shape)}. For a single example use probs.unsqueeze(0)."
        )
    if labels.ndim != 1:
        raise ValueError(
            f"labels must be 1-D [N] (one class index per example), got shape "
            f"{tuple(labels.shape)}. If they are one-hot, use labels.argmax(dim=1)."
        )
    if not probs.is_floating_point():
        raise ValueError(
            f"probs must be a floating-point tensor of probabilities, got dtype {probs.dtype}."
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(
            f"labels must be integer class indices, got dtype {labels.dtype}; use labels.long()."
        )
    n, k = probs.shape
    if labels.shape[0] != n:
        raise ValueError(
            f"probs has N={n} rows but labels has {labels.shape[0]} entries; they must "
            f"describe the same examples, in the same order."
        )
    if n == 0:
        raise ValueError("no examples: probs and labels are empty (N=0), so no metric is defined.")
    if k < 2:
        raise ValueError(f"probs has K={k} column(s); a classification needs at least 2 classes.")
    if probs.device != labels.device:
        raise ValueError(
            f"probs is on {probs.device} but labels is on {labels.device}; move both to "
            f"the same device."
        )
    out_of_range = (labels < 0) | (labels >= k)
    if out_of_range.any():
        raise ValueError(
            f"labels must be class indices in [0, {k}) for K={k} classes, but "
            f"{int(out_of_range.sum())} of {n} are outside it (min {int(labels.min())}, "
            f"max {int(labels.max())})."
        )
    non_finite = ~torch.isfinite(probs)
    if non_finite.any():
        raise ValueError(
            f"probs contains {int(non_finite.sum())} non-finite value(s) (NaN or inf); "
            f"check the model output for overflow before computing metrics."
        )
    if (probs < 0).any():
        raise ValueError(
            f"probs contains negative values (min {float(probs.min()):.4g}); probabilities "
            f"must be >= 0. If these are logits, apply torch.softmax(logits, dim=-1) first."
        )
    # Sum in float64 so that the check itself adds no rounding error.
    deviation = (probs.to(torch.float64).sum(dim=1) - 1.0).abs()
    tolerance = sum_tolerance(probs.dtype)
    bad_rows = deviation > tolerance
    if bad_rows.any():
        raise ValueError(
            f"{int(bad_rows.sum())} of {n} rows of probs do not sum to 1 (largest deviation "
            f"{float(deviation.max()):.4g}, tolerance {tolerance:.4g} for {probs.dtype}). "
            f"These look like logits or unnormalised scores: apply "
            f"torch.softmax(logits, dim=-1) first, or divide each row by its sum."
        )


def _check_n_bins(n_bins: int) -> None:
    # bool is an int subclass; n_bins=True is surely a mistake.
    if not isinstance(n_bins, int) or isinstance(n_bins, bool) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}.")


# --------------------------------------------------------------------------- metrics


def accuracy(probs: Tensor, labels: Tensor) -> Tensor:
    """Fraction of examples whose most probable class (argmax, first on ties) is the label."""
    _check_inputs(probs, labels)
    # Imported here, not at module level: torchmetrics' package __init__ imports all of
    # its domains (transformers, scipy, matplotlib), seconds that `import
    # bayeslora.metrics` should not cost.
    from torchmetrics.functional.classification import multiclass_accuracy

    # average="micro" counts every example once. torchmetrics' default is "macro", the
    # mean of per-class recalls, which is a different number whenever classes are
    # imbalanced; the papers report plain (micro) accuracy.
    value = multiclass_accuracy(probs, labels, num_classes=probs.shape[1], average="micro")
    return value.to(torch.float64)


def nll(probs: Tensor, labels: Tensor, eps: float = DEFAULT_NLL_EPS) -> Tensor:
    """Mean negative log-probability of the true class, in nats.

    Probabilities below ``eps`` are raised to ``eps`` first (see ``DEFAULT_NLL_EPS``),
    so a confident wrong answer gives a large finite value rather than inf.
    """
    _check_inputs(probs, labels)
    if not (isinstance(eps, float | int) and 0 < eps < 1):
        raise ValueError(f"eps must be a number in (0, 1), got {eps!r}.")
    true_class_prob = probs.to(torch.float64).gather(1, labels.long().unsqueeze(1)).squeeze(1)
    return -torch.log(true_class_prob.clamp(min=eps)).mean()


def brier(probs: Tensor, labels: Tensor) -> Tensor:
    """Multiclass Brier score: ``mean_i sum_k (probs[i, k] - onehot(labels)[i, k])**2``.

    Summed over classes, as in the Laplace-LoRA / IVON-LoRA papers, so it ranges over
    [0, 2] (0 for a confident right answer, 2 for a confident wrong one) whatever K is.
    """
    _check_inputs(probs, labels)
    p = probs.to(torch.float64)
    one_hot = torch.nn.functional.one_hot(labels.long(), num_classes=p.shape[1]).to(p.dtype)
    return ((p - one_hot) ** 2).sum(dim=1).mean()


class ReliabilityBins(NamedTuple):
    """Per-bin statistics of the top-label confidence; each field has length ``n_bins``.

    ``confidence`` and ``accuracy`` are NaN for empty bins (no mean exists there;
    matplotlib leaves NaN points out of a plot).
    """

    confidence: Tensor  # float64: mean top-label confidence of the examples in the bin
    accuracy: Tensor  # float64: fraction of those examples whose top label is correct
    count: Tensor  # int64: number of examples in the bin


def reliability_bins(
    probs: Tensor,
    labels: Tensor,
    n_bins: int = DEFAULT_N_BINS,
    edges: BinEdges | str = DEFAULT_BIN_EDGES,
) -> ReliabilityBins:
    """Bin examples by top-label confidence into ``n_bins`` equal-width bins over [0, 1].

    ``edges=RIGHT`` (default): bin ``m`` is ``(m/M, (m+1)/M]``, the first ``[0, 1/M]``; a
    confidence exactly on an interior edge goes to the bin below it, as in the Guo et al.
    (2017) code that IVON-LoRA and Laplace-LoRA evaluate with. ``edges=LEFT``: bin ``m`` is
    ``[m/M, (m+1)/M)``, the last ``[(M-1)/M, 1]``; an edge goes to the bin above, as in
    torchmetrics and ``np.histogram``. The edges are rounded to the dtype of ``probs``,
    so a float32 confidence of 0.7 counts as *on* the 0.7 edge even though float32(0.7)
    is a little below 0.7, as in torchmetrics.

    Why not torchmetrics' ``multiclass_calibration_error``? In torchmetrics 1.9 it
    deviates from the definition in two ways that matter for LLM outputs:

    * A confidence of exactly 1.0 lands in a hidden (M+1)-th bin of its own instead of
      the last bin (``torch.bucketize(..., right=True) - 1`` returns M for the last
      edge; Lightning-AI/torchmetrics#3510). Saturated softmax outputs are common, so
      ECE and MCE change: e.g. confidences {0.95 right, 1.0 wrong} give 0.525, not 0.475.
    * If *any* entry is outside [0, 1], even 1 + 1e-7 from rounding, it takes the whole
      input for logits and softmaxes every row, which silently changes every confidence.

    It also computes in float32. Elsewhere (float32 input, no confidence of 1.0, the
    default 10 bins) our ECE and MCE equal its values up to float32 rounding, so numbers
    stay comparable with papers that used it; the tests check this.
    """
    _check_inputs(probs, labels)
    _check_n_bins(n_bins)
    p = probs.to(torch.float64)  # exact upcast
    predicted = p.argmax(dim=1)  # ties: first (lowest) class index, as torch.argmax
    confidence = p.gather(1, predicted.unsqueeze(1)).squeeze(1)
    correct = (predicted == labels).to(torch.float64)

    # m / n_bins in float64 is the edge correctly rounded (so 3 / 10 == 0.3); rounding it
    # once more to the input dtype makes edges and confidences equally precise.
    edges_ = torch.arange(n_bins + 1, dtype=torch.float64, device=p.device) / n_bins
    edges_ = edges_.to(probs.dtype).to(torch.float64)
    # bucketize(right=True): edges[b] <= c < edges[b+1] gives b + 1 (bins closed on the
    # left); right=False: edges[b] < c <= edges[b+1] gives b + 1 (closed on the right).
    # The clamp puts c == 1.0 (and up to 1 + tolerance, from rounding) into the last bin
    # when closed on the left, and c == 0 into the first when closed on the right.
    left_closed = _bin_edges(edges) is BinEdges.LEFT
    bin_index = torch.bucketize(confidence, edges_, right=left_closed) - 1
    bin_index = bin_index.clamp(0, n_bins - 1)

    count = torch.bincount(bin_index, minlength=n_bins)
    confidence_sum = torch.bincount(bin_index, weights=confidence, minlength=n_bins)
    correct_sum = torch.bincount(bin_index, weights=correct, minlength=n_bins)
    # 0 / 0 = NaN marks the empty bins.
    return ReliabilityBins(
        confidence=confidence_sum / count,
        accuracy=correct_sum / count,
        count=count,
    )


def _bin_edges(edges: BinEdges | str) -> BinEdges:
    try:
        return BinEdges(edges)
    except ValueError:
        choices = ", ".join(repr(e.value) for e in BinEdges)
        raise ValueError(f"edges must be one of {choices}, got {edges!r}") from None


def _bin_gaps(bins: ReliabilityBins) -> tuple[Tensor, Tensor]:
    """|accuracy - confidence| and weight (share of examples) of each non-empty bin."""
    non_empty = bins.count > 0
    gap = (bins.accuracy[non_empty] - bins.confidence[non_empty]).abs()
    weight = bins.count[non_empty].to(torch.float64) / bins.count.sum()
    return gap, weight


def ece(
    probs: Tensor,
    labels: Tensor,
    n_bins: int = DEFAULT_N_BINS,
    edges: BinEdges | str = DEFAULT_BIN_EDGES,
) -> Tensor:
    """Expected calibration error: ``sum_m (n_m / N) * |acc_m - conf_m|`` (L1 norm).

    ``acc_m`` and ``conf_m`` are the accuracy and mean top-label confidence of the
    ``n_m`` examples in bin ``m``; bins as in :func:`reliability_bins`.
    """
    gap, weight = _bin_gaps(reliability_bins(probs, labels, n_bins, edges))
    return (weight * gap).sum()


def mce(
    probs: Tensor,
    labels: Tensor,
    n_bins: int = DEFAULT_N_BINS,
    edges: BinEdges | str = DEFAULT_BIN_EDGES,
) -> Tensor:
    """Maximum calibration error: ``max_m |acc_m - conf_m|`` over the non-empty bins."""
    gap, _ = _bin_gaps(reliability_bins(probs, labels, n_bins, edges))
    return gap.max()  # at least one bin is non-empty, since N > 0


# --------------------------------------------------------------------------- other readings


def adaptive_ece(probs: Tensor, labels: Tensor, n_bins: int = 15) -> Tensor:
    """ECE over equal-mass bins (Nixon et al. 2019; Kumar et al. 2019): the examples sorted
    by top-label confidence (ties by index) and cut into ``n_bins`` groups whose sizes
    differ by at most one (``np.array_split``), so that no bin is nearly empty. Fewer
    examples than bins: one bin per example."""
    _check_inputs(probs, labels)
    _check_n_bins(n_bins)
    confidence, correct = _top_label(probs, labels)
    order = torch.sort(confidence, stable=True).indices
    total = torch.zeros((), dtype=torch.float64)
    for chunk in torch.tensor_split(order, min(n_bins, len(order))):
        total += (correct[chunk].sum() - confidence[chunk].sum()).abs()
    return total / len(order)


def _top_label(probs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Top-label confidence and whether the top label is right, in float64."""
    p = probs.to(torch.float64)
    predicted = p.argmax(dim=1)
    confidence = p.gather(1, predicted.unsqueeze(1)).squeeze(1)
    return confidence, (predicted == labels).to(torch.float64)


def _by_confidence(probs: Tensor, labels: Tensor) -> Tensor:
    """Correctness of each example, most confident first (ties: lower index first)."""
    confidence, correct = _top_label(probs, labels)
    return correct[torch.sort(confidence, descending=True, stable=True).indices]


def accuracy_at_coverage(probs: Tensor, labels: Tensor, coverage: float) -> Tensor:
    """Selective prediction: the accuracy on the ``ceil(coverage * N)`` most confident
    examples (the model abstains on the rest). ``coverage`` in (0, 1]."""
    _check_inputs(probs, labels)
    if not 0.0 < coverage <= 1.0:
        raise ValueError(f"coverage must be in (0, 1], got {coverage!r}")
    correct = _by_confidence(probs, labels)
    kept = max(1, math.ceil(coverage * len(correct) - 1e-9))  # 0.8 * 10 is 8, not 9
    return correct[:kept].mean()


def aurc(probs: Tensor, labels: Tensor) -> Tensor:
    """Area under the risk-coverage curve (Geifman and El-Yaniv 2017): the mean, over
    k = 1..N, of the error rate among the k most confident examples. Lower is better; it
    rewards confidences that rank wrong answers below right ones."""
    _check_inputs(probs, labels)
    errors = 1.0 - _by_confidence(probs, labels)
    k = torch.arange(1, len(errors) + 1, dtype=torch.float64)
    return (errors.cumsum(0) / k).mean()
