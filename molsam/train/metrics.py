"""Masked, per-task metrics (pure functions over numpy arrays).

Missing labels (NaN) are masked per task. A classification task with a single class among its
labels has no ROC-AUC or PRC-AUC: it is skipped for those and counted, never scored as 0.5.
Averages are over the tasks that have a value (as chemprop and MoleculeNet report them).

Multiclass targets (probabilities [N, K] per target, labels are class indices): accuracy,
balanced accuracy, macro_f1 (macro F1 over the classes in labels or predictions, sklearn's default),
cross-entropy (sklearn's log_loss over all K classes), and macro one-vs-rest ROC-AUC: the mean of
each class's ROC-AUC against the rest, over the classes that occur in the labels, neither all nor
none (equal to sklearn's `roc_auc_score(multi_class="ovr", average="macro")` when every class
occurs; that call refuses the common case of a small test set lacking a class).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from sklearn import metrics as skm

CLASSIFICATION_METRICS = ("roc_auc", "prc_auc", "accuracy", "balanced_accuracy", "f1")
REGRESSION_METRICS = ("rmse", "mae", "r2")
MULTICLASS_METRICS = ("cross_entropy", "accuracy", "balanced_accuracy", "roc_auc", "macro_f1")
#: Metrics where lower is better (used to pick the best epoch).
LOWER_IS_BETTER = frozenset({"rmse", "mae", "cross_entropy"})
#: Metrics that need both classes present.
NEEDS_TWO_CLASSES = frozenset({"roc_auc", "prc_auc", "balanced_accuracy"})


def default_metric(task: str) -> str:
    """roc_auc (classification), cross_entropy (multiclass: always defined, as chemprop's
    default), rmse (regression)."""
    return {"classification": "roc_auc", "multiclass": "cross_entropy"}.get(task, "rmse")


def metric_names(task: str) -> tuple[str, ...]:
    if task == "multiclass":
        return MULTICLASS_METRICS
    return CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS


def _multiclass(name: str, y: np.ndarray, p: np.ndarray) -> float | None:
    """One metric of one multiclass target: y int [n] class indices, p float [n, K]."""
    k = p.shape[1]
    predicted = p.argmax(axis=1)
    with warnings.catch_warnings():
        # sklearn warns when predictions hold a class the labels lack; that is no error here.
        warnings.simplefilter("ignore")
        if name == "accuracy":
            return float(skm.accuracy_score(y, predicted))
        if name == "balanced_accuracy":
            return float(skm.balanced_accuracy_score(y, predicted))
        if name == "macro_f1":
            return float(skm.f1_score(y, predicted, average="macro", zero_division=0.0))
        if name == "cross_entropy":
            return float(skm.log_loss(y, p, labels=list(range(k))))
        if name == "roc_auc":
            scores = [
                skm.roc_auc_score(y == c, p[:, c]) for c in range(k) if 0 < (y == c).sum() < len(y)
            ]
            return float(np.mean(scores)) if scores else None
    raise ValueError(f"unknown multiclass metric {name!r}")


def _one(name: str, y: np.ndarray, p: np.ndarray) -> float:
    if name == "roc_auc":
        return float(skm.roc_auc_score(y, p))
    if name == "prc_auc":
        return float(skm.average_precision_score(y, p))
    if name == "accuracy":
        return float(skm.accuracy_score(y, p >= 0.5))
    if name == "balanced_accuracy":
        return float(skm.balanced_accuracy_score(y, p >= 0.5))
    if name == "f1":
        return float(skm.f1_score(y, p >= 0.5, zero_division=0.0))
    if name == "rmse":
        return float(np.sqrt(np.mean((y - p) ** 2)))
    if name == "mae":
        return float(np.mean(np.abs(y - p)))
    if name == "r2":
        return float(skm.r2_score(y, p)) if len(y) > 1 else math.nan
    raise ValueError(f"unknown metric {name!r}")


def task_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    task: str,
    target_names: Sequence[str],
    names: Sequence[str] | None = None,
    classes: Sequence[Sequence[str]] | None = None,
) -> dict:
    """Score predictions per task and averaged over tasks.

    Args:
        y_true: float [N, T], NaN where a label is missing (class indices for multiclass).
        y_pred: float [N, T]: probabilities (classification) or values in original units;
            multiclass: [N, sum K_t], each target's block of class probabilities.
        task: "classification", "regression" or "multiclass".
        names: metrics to compute (default: all for the task type).
        classes: [T] class names per target (multiclass only).

    Returns:
        {"tasks": {target: {metric: value or None}}, "mean": {metric: value or None},
         "skipped": {metric: number of tasks without a value}, "n": N}
    """
    names = tuple(names or metric_names(task))
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    per_task: dict[str, dict] = {}
    if task == "multiclass":
        if classes is None:
            raise ValueError("task_metrics: multiclass needs classes")
        start = 0
        for t, target in enumerate(target_names):
            k = len(classes[t])
            mask = ~np.isnan(y_true[:, t])
            y, p = y_true[mask, t].astype(np.int64), y_pred[mask, start : start + k]
            start += k
            per_task[target] = {
                name: _multiclass(name, y, p) if len(y) else None for name in names
            }
    else:
        for t, target in enumerate(target_names):
            mask = ~np.isnan(y_true[:, t])
            y, p = y_true[mask, t], y_pred[mask, t]
            scores = {}
            for name in names:
                if len(y) == 0 or (name in NEEDS_TWO_CLASSES and len(np.unique(y)) < 2):
                    scores[name] = None
                else:
                    scores[name] = _one(name, y, p)
            per_task[target] = scores
    mean, skipped = {}, {}
    for name in names:
        values = [s[name] for s in per_task.values() if s[name] is not None and not math.isnan(s[name])]
        mean[name] = float(np.mean(values)) if values else None
        skipped[name] = len(per_task) - len(values)
    return {"tasks": per_task, "mean": mean, "skipped": skipped, "n": int(len(y_true))}


def is_better(metric: str, candidate: float | None, best: float | None) -> bool:
    """Whether `candidate` improves on `best` for `metric` (None is never better)."""
    if candidate is None or math.isnan(candidate):
        return False
    if best is None:
        return True
    return candidate < best if metric in LOWER_IS_BETTER else candidate > best


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    """Mean and population std (ddof=0) over replicates, ignoring missing values (None);
    returns (mean, std, count), (None, None, 0) when nothing is present."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return None, None, 0
    return float(np.mean(present)), float(np.std(present)), len(present)
