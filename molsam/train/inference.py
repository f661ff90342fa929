"""Model outputs over a set of molecules, in order: shared by validation, evaluate and predict.

Never shuffles and never drops a partial batch (the reference GraphSAM code's evaluation loaders
drop the last one, so some molecules are never scored).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import numpy as np
import torch
from torch import nn

from molsam.data.batching import BatchSource


@torch.no_grad()
def predict_raw(
    model: nn.Module,
    source: BatchSource,
    indices: np.ndarray,
    batch_size: int = 256,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Raw model outputs (logits or standardized values) for molecules `indices` of `source`.

    Returns float32 [len(indices), T] on the source's device; rows follow `indices`. Outputs stay
    on the device until the caller needs them: one host transfer for the whole set, not per batch.
    """
    was_training = model.training
    model.eval()
    device = source.device
    context = (
        torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
    )
    outputs = []
    with context:
        for start in range(0, len(indices), batch_size):
            batch = source.gather(indices[start : start + batch_size])
            outputs.append(model(batch).float())
    model.train(was_training)
    if not outputs:
        return torch.zeros((0, getattr(model, "num_tasks", 0)), device=device)
    return torch.cat(outputs)


def to_output_units(
    raw: np.ndarray, task: str, scaler: dict | None, num_classes: Sequence[int] | None = None
) -> np.ndarray:
    """Probabilities (classification: sigmoid of logits; multiclass: softmax over each target's
    block of `num_classes` logits, so each block sums to 1) or values in the targets' original
    units (regression: undo the standardization fitted on the training labels).

    raw: [N, O] -> [N, O] float64."""
    raw = np.asarray(raw, dtype=np.float64)
    if task == "multiclass":
        if num_classes is None:
            raise ValueError("to_output_units: multiclass needs num_classes")
        out = np.empty_like(raw)
        start = 0
        for k in num_classes:
            block = raw[:, start : start + k]
            shifted = np.exp(block - block.max(axis=1, keepdims=True))  # stable softmax
            out[:, start : start + k] = shifted / shifted.sum(axis=1, keepdims=True)
            start += k
        return out
    if task == "classification":
        return 1.0 / (1.0 + np.exp(-raw))
    if scaler is None:
        return raw
    return raw * np.asarray(scaler["std"]) + np.asarray(scaler["mean"])
