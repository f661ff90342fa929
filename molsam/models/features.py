"""Molecule-level features joined to a model's pooled graph representation.

A `FeatureScaler` standardizes the features with the mean and std of the training split
(fitted once by the trainer, then stored as buffers, so a checkpoint carries it and predict
needs nothing else), fills missing values (a descriptor RDKit could not compute: NaN) with the
training mean, i.e. 0 after standardizing, and clips to +-CLIP standard deviations: RDKit's 2-D
descriptors are heavy-tailed (Ipc reaches 1e30 on large molecules), and one such value must not
dominate the head's input. Used by GPSModel and CoMPTModel when built with `mol_features=F`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

#: Standardized features are clipped to [-CLIP, CLIP].
CLIP = 10.0


class FeatureScaler(nn.Module):
    """(x - mean) / std per column, NaN -> 0, clipped: float [B, F] -> [B, F].

    Buffers: mean, std float32 [F] (identity until `fit`), missing int64 [F]: how many training
    values of each column were NaN when it was fitted.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))
        self.register_buffer("missing", torch.zeros(num_features, dtype=torch.long))

    @torch.no_grad()
    def fit(self, features: np.ndarray | Tensor) -> None:
        """Mean and std over rows of the training split [N, F], ignoring NaN; a constant or
        all-missing column gets std 1 (it then contributes 0)."""
        values = torch.as_tensor(np.asarray(features, dtype=np.float64))
        present = ~torch.isnan(values)
        counts = present.sum(0).clamp(min=1)
        filled = torch.where(present, values, torch.zeros_like(values))
        mean = filled.sum(0) / counts
        var = (torch.where(present, values - mean, torch.zeros_like(values)) ** 2).sum(0) / counts
        std = var.sqrt()
        std = torch.where(std > 1e-12, std, torch.ones_like(std))
        self.mean.copy_(mean.float())
        self.std.copy_(std.float())
        self.missing.copy_((~present).sum(0))

    def forward(self, features: Tensor) -> Tensor:
        scaled = (features.to(self.mean.dtype) - self.mean) / self.std
        return torch.nan_to_num(scaled, nan=0.0).clamp(-CLIP, CLIP)


def joined_features(scaler: FeatureScaler | None, pooled: Tensor, batch) -> Tensor:
    """[B, H] pooled graph rows, with the batch's scaled molecule features appended when the
    model reads some: [B, H + F]."""
    if scaler is None:
        return pooled
    features = getattr(batch, "mol_features", None)
    expected = scaler.mean.shape[0]
    if features is None or features.shape[1] != expected:
        got = "none" if features is None else features.shape[1]
        raise ValueError(
            f"this model reads {expected} molecule-level feature columns, the batch has {got}: "
            "featurize with the model's featurizer extras (an RDKit with another descriptor "
            "list gives another count)")
    return torch.cat([pooled, scaler(features).to(pooled.dtype)], dim=1)
