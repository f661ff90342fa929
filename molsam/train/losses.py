"""Masked multi-task losses and the regression target scaler (pure)."""

from __future__ import annotations

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


def masked_loss(output: torch.Tensor, targets: torch.Tensor, task: str) -> torch.Tensor:
    """Mean loss over the labels that are present (NaN = missing, masked out).

    Classification: binary cross-entropy on logits. Regression: MSE on standardized targets.
    Computed without host syncs: the mask multiplies, it never indexes.

    Args:
        output: float [B, T] logits or standardized predictions.
        targets: float [B, T] labels (standardized for regression), NaN where missing.
    Returns:
        scalar tensor.
    """
    present = ~torch.isnan(targets)
    filled = torch.where(present, targets, torch.zeros_like(targets))
    if task == "classification":
        losses = F.binary_cross_entropy_with_logits(output, filled, reduction="none")
    else:
        losses = (output - filled) ** 2
    weights = present.to(losses.dtype)
    return (losses * weights).sum() / weights.sum().clamp_min(1.0)
