"""Array conventions shared by molsam.uncertainty (private helpers).

The package follows molsam.train.metrics: N molecules, T tasks (targets), labels float [N, T]
with NaN where a label is missing. Binary classification and regression have one column per
task; a multiclass target t owns a block of K_t probability (or logit) columns, the blocks in
target order ([N, sum K_t], as molsam.train.inference.to_output_units writes them), and its
labels are class indices 0..K_t-1 (float, NaN when missing). A 1-D array is one task.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def as_tasks(values, name: str = "array") -> np.ndarray:
    """float64 [N, T] from [N, T] or [N] (one task)."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"{name}: expected a [N] or [N, T] array, got shape {array.shape}")
    return array


def same_shape(name: str, reference: np.ndarray, *others: tuple[str, np.ndarray]) -> None:
    for other_name, other in others:
        if other.shape != reference.shape:
            raise ValueError(
                f"{other_name}: shape {other.shape} differs from {name}'s {reference.shape}"
            )


def blocks(num_classes: Sequence[int]) -> list[slice]:
    """Column slices of each target's class block."""
    out, start = [], 0
    for k in num_classes:
        k = int(k)
        if k < 2:
            raise ValueError(f"num_classes: every target needs at least 2 classes, got {k}")
        out.append(slice(start, start + k))
        start += k
    return out


def check_blocks(columns: int, num_classes: Sequence[int] | None, tasks: int) -> list[slice]:
    """Slices for a multiclass layout, checked against the number of columns and targets."""
    if num_classes is None:
        raise ValueError("num_classes is needed for multiclass arrays")
    slices = blocks(num_classes)
    if sum(int(k) for k in num_classes) != columns:
        raise ValueError(
            f"num_classes: {sum(int(k) for k in num_classes)} classes in all for {columns} columns"
        )
    if len(slices) != tasks:
        raise ValueError(f"num_classes: {len(slices)} targets for labels with {tasks} columns")
    return slices


def binary_as_blocks(probabilities: np.ndarray) -> tuple[np.ndarray, list[slice]]:
    """Binary tasks [N, T] as two-class blocks [N, 2T]: columns (1 - p_t, p_t) per task."""
    n, t = probabilities.shape
    out = np.empty((n, 2 * t))
    out[:, 0::2] = 1.0 - probabilities
    out[:, 1::2] = probabilities
    return out, blocks([2] * t)


def plain_floats(values) -> list[float]:
    """Python floats (inf and NaN kept), for checkpoints loaded with weights_only=True."""
    return [float(v) for v in np.asarray(values, dtype=np.float64).ravel()]


def nan_to_none(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)
