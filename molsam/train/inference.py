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
    raw: np.ndarray,
    task: str,
    scaler: dict | None,
    num_classes: Sequence[int] | None = None,
    loss: str | None = None,
) -> np.ndarray:
    """Probabilities (classification: sigmoid of logits; multiclass: softmax over each target's
    block of `num_classes` logits, so each block sums to 1) or values in the targets' original
    units (regression: undo the standardization fitted on the training labels).

    raw: [N, O] -> [N, O] float64. An MVE regression head's raw [N, 2T] (loss "mve", or None
    with a scaler of T targets: molsam.train.losses.output_loss) gives its means, [N, T]; its
    sigma comes from mean_and_sigma."""
    raw = np.asarray(raw, dtype=np.float64)
    if task == "regression" and _is_mve(raw, scaler, loss):
        return mean_and_sigma(raw, scaler)[0]
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


def _is_mve(raw: np.ndarray, scaler: dict | None, loss: str | None) -> bool:
    if loss is not None or scaler is None:
        return loss == "mve"
    return raw.ndim == 2 and raw.shape[1] == 2 * len(scaler["mean"]) > 0


def mean_and_sigma(raw: np.ndarray, scaler: dict | None) -> tuple[np.ndarray, np.ndarray]:
    """An MVE head's mean and standard deviation in the targets' original units (Nix &
    Weigend 1994): raw [N, 2T] (standardized means, then variance parameters;
    molsam.train.losses.split_mve) -> (mu [N, T], sigma [N, T]) float64, with
    mu = m * std + mean and sigma = sqrt(softplus(v) + floor) * std."""
    from molsam.train.losses import mve_variance

    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim != 2 or raw.shape[1] % 2:
        raise ValueError(f"an MVE output has 2T columns, got shape {raw.shape}")
    t = raw.shape[1] // 2
    variance = mve_variance(torch.from_numpy(raw[:, t:])).numpy()
    mean, sigma = raw[:, :t], np.sqrt(variance)
    if scaler is None:
        return mean, sigma
    std = np.asarray(scaler["std"], dtype=np.float64)
    return mean * std + np.asarray(scaler["mean"], dtype=np.float64), sigma * std


def _is_dropout(module: nn.Module) -> bool:
    """Dropout layers (nn.Dropout and its kin), and GPS's DenseSelfAttention, which drops
    attention weights (model.attn_dropout) only while training."""
    from molsam.models.gps import DenseSelfAttention

    return isinstance(module, (nn.modules.dropout._DropoutNd, DenseSelfAttention))


@torch.no_grad()
def predict_mc_dropout(
    model: nn.Module,
    source: BatchSource,
    indices: np.ndarray,
    samples: int,
    seed: int = 0,
    batch_size: int = 256,
) -> torch.Tensor:
    """Monte Carlo dropout (Gal & Ghahramani, "Dropout as a Bayesian Approximation", ICML
    2016): `samples` stochastic forward passes with the dropout layers in train mode and every
    other module in eval mode (LayerNorm, attention, the rest: as at inference).

    Seeded: the masks come from torch's RNG seeded with `seed` inside a forked RNG state, so
    the same (model, molecules, batch_size, seed) give the same samples and the caller's RNG
    is left as it was. The model's train/eval flags are restored afterwards. A model without
    dropout (or dropout 0) gives S identical samples.

    Returns raw outputs (logits or standardized values, as predict_raw; turn each sample into
    output units with to_output_units), float32 [S, len(indices), O] on the source's device,
    rows following `indices`. Their spread is the epistemic part: for probabilities,
    molsam.uncertainty.metrics' predictive_entropy / mutual_information /
    pairwise_disagreement take the samples as members.
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples: expected an int >= 1, got {samples!r}")
    indices = np.asarray(indices, dtype=np.int64)
    flags = [(m, m.training) for m in model.modules()]
    device = source.device
    devices = [device] if device.type == "cuda" else []
    out = []
    try:
        model.eval()
        for module in model.modules():
            if _is_dropout(module):
                module.training = True  # this module only: its children keep eval
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            for _ in range(samples):
                rows = []
                for start in range(0, len(indices), batch_size):
                    batch = source.gather(indices[start : start + batch_size])
                    rows.append(model(batch).float())
                outputs = getattr(model, "num_tasks", 0)
                out.append(torch.cat(rows) if rows else torch.zeros((0, outputs), device=device))
    finally:
        for module, flag in flags:
            module.training = flag
    return torch.stack(out)
