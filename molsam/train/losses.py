"""Masked multi-task losses and the regression target scaler (pure)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def fit_scaler(train_labels: np.ndarray) -> dict:
    """Per-task mean and std of the training labels (NaN ignored); a constant task gets std 1.

    Args:
        train_labels: float [N, T] with NaN for missing.
    Returns:
        {"mean": float64 [T], "std": float64 [T]}
    """
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(train_labels, axis=0) if len(train_labels) else np.zeros(train_labels.shape[1])
        std = np.nanstd(train_labels, axis=0) if len(train_labels) else np.ones(train_labels.shape[1])
    mean = np.nan_to_num(mean, nan=0.0)
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    return {"mean": mean.astype(np.float64), "std": std.astype(np.float64)}


#: train.loss values: "mse" (one standardized mean per target) or "mve" (mean and variance).
LOSSES = ("mse", "mve")
#: Smallest variance (standardized units): added to the softplus, and gaussian_nll_loss's eps.
VARIANCE_FLOOR = 1e-6


def outputs_per_target(loss: str | None) -> int:
    """Model outputs per regression target: 2 for an MVE head (mean, variance), else 1."""
    return 2 if loss == "mve" else 1


def output_loss(columns: int, targets: int, task: str, loss: str | None = None) -> str:
    """The loss of a model with `columns` outputs for `targets` targets: `loss` when given
    (checked against the shapes), else "mve" for a regression output with 2T columns, "mse"
    otherwise."""
    if loss is not None:
        if loss not in LOSSES:
            raise ValueError(f"loss: {loss!r} is not one of {', '.join(LOSSES)}")
        if loss == "mve" and (task != "regression" or columns != 2 * targets):
            raise ValueError(f"loss mve: needs a regression output with 2 x {targets} columns, "
                             f"got {task} with {columns}")
        return loss
    return "mve" if task == "regression" and columns == 2 * targets and targets else "mse"


def mve_variance(parameter: torch.Tensor) -> torch.Tensor:
    """Variance from the raw variance outputs: softplus(v) + VARIANCE_FLOOR, positive and
    smooth (softplus rather than exp(log-variance): no overflow for large v, as chemprop's
    MVE head)."""
    return F.softplus(parameter) + VARIANCE_FLOOR


def gaussian_nll(mean: torch.Tensor, target: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """Per-element Gaussian negative log-likelihood without its constant, 0.5 (log var +
    (y - mu)^2 / var): torch.nn.functional.gaussian_nll_loss(mean, target, variance,
    eps=VARIANCE_FLOOR, reduction="none"), term for term (tests/integration/
    test_uncertainty_training.py compares them). Written out because that function asks the
    host whether any variance is negative (`torch.any(var < 0)`), a sync on every step that a
    captured CUDA graph (molsam.train.static) cannot hold; mve_variance is >= VARIANCE_FLOOR
    by construction, so neither its check nor its clamp ever acts here.

    All three float [B, T]; returns [B, T]."""
    return 0.5 * (torch.log(variance) + (target - mean) ** 2 / variance)


def split_mve(output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean [B, T], variance [B, T]) in standardized units from an MVE output [B, 2T]."""
    t = output.shape[1] // 2
    return output[:, :t], mve_variance(output[:, t:])


def masked_loss(
    output: torch.Tensor,
    targets: torch.Tensor,
    task: str,
    num_classes: Sequence[int] | None = None,
    denominator: torch.Tensor | None = None,
    loss: str | None = None,
) -> torch.Tensor:
    """Mean loss over the labels that are present (NaN = missing, masked out).

    Classification: binary cross-entropy on logits. Regression: MSE on standardized targets,
    or (loss "mve") the Gaussian negative log-likelihood of a mean-variance estimation head
    (Nix & Weigend, "Estimating the mean and variance of the target probability distribution",
    ICNN 1994): output [B, 2T] holds the standardized means in columns [:T] and the variance
    parameters in [T:] (variance = mve_variance(...), softplus), and the per-label loss is
    torch.nn.functional.gaussian_nll_loss's 0.5 (log var + (y - mu)^2 / var) (gaussian_nll).
    Multiclass: softmax cross-entropy per target over its own block of logits (target t owns
    columns sum(num_classes[:t]) .. + num_classes[t]), as chemprop's multiclass loss.
    Computed without host syncs: the mask multiplies, it never indexes.

    Args:
        output: float [B, O] logits or standardized predictions; O = T, or sum(num_classes),
            or 2T for an MVE regression head.
        targets: float [B, T] labels (standardized for regression; class indices for
            multiclass), NaN where missing.
        num_classes: [T] classes per target (multiclass only).
        denominator: what the summed loss is divided by; default the labels present here. A
            data-parallel rank passes the label count of the whole global batch, so that the
            ranks' losses (and gradients) add up to the global batch's mean
            (molsam.train.distributed).
        loss: "mse" or "mve" (regression only); None infers it from the shapes (an output
            with twice the targets' columns is an MVE head), for callers that score a
            checkpoint without reading its "loss" (molsam.analysis.objective).
    Returns:
        scalar tensor.
    """
    present = ~torch.isnan(targets)
    filled = torch.where(present, targets, torch.zeros_like(targets))
    if task == "multiclass":
        if num_classes is None:
            raise ValueError("masked_loss: multiclass needs num_classes")
        blocks = torch.split(output, list(num_classes), dim=1)
        losses = torch.stack(
            [F.cross_entropy(block, filled[:, t].long(), reduction="none")
             for t, block in enumerate(blocks)],
            dim=1,
        )  # [B, T]: one loop step per target, never per molecule
    elif task == "classification":
        losses = F.binary_cross_entropy_with_logits(output, filled, reduction="none")
    elif output_loss(output.shape[1], targets.shape[1], task, loss) == "mve":
        mean, variance = split_mve(output)
        losses = gaussian_nll(mean, filled, variance)
    else:
        losses = (output - filled) ** 2
    weights = present.to(losses.dtype)
    if denominator is None:
        denominator = weights.sum()
    return (losses * weights).sum() / denominator.clamp_min(1.0)
