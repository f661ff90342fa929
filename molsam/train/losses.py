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


def masked_loss(
    output: torch.Tensor,
    targets: torch.Tensor,
    task: str,
    num_classes: Sequence[int] | None = None,
    denominator: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean loss over the labels that are present (NaN = missing, masked out).

    Classification: binary cross-entropy on logits. Regression: MSE on standardized targets.
    Multiclass: softmax cross-entropy per target over its own block of logits (target t owns
    columns sum(num_classes[:t]) .. + num_classes[t]), as chemprop's multiclass loss.
    Computed without host syncs: the mask multiplies, it never indexes.

    Args:
        output: float [B, O] logits or standardized predictions; O = T, or sum(num_classes).
        targets: float [B, T] labels (standardized for regression; class indices for
            multiclass), NaN where missing.
        num_classes: [T] classes per target (multiclass only).
        denominator: what the summed loss is divided by; default the labels present here. A
            data-parallel rank passes the label count of the whole global batch, so that the
            ranks' losses (and gradients) add up to the global batch's mean
            (molsam.train.distributed).
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
    else:
        losses = (output - filled) ** 2
    weights = present.to(losses.dtype)
    if denominator is None:
        denominator = weights.sum()
    return (losses * weights).sum() / denominator.clamp_min(1.0)
