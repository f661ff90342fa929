"""Calibration plots as PNGs (matplotlib's Agg backend: no display needed), numpy in.

Layouts as in molsam.uncertainty.metrics: y float [N, T] (NaN when unlabelled; class indices
for multiclass), binary probabilities [N, T], multiclass [N, sum K_t], mu and sigma [N, T].
Every plot pools the tasks (each task's labelled, finite rows), so one figure holds a model of
any number of tasks; the per-task numbers are in the evaluation's JSON.

- reliability_diagram: predicted probability (binary: of class 1; multiclass: the top-label
  confidence) against the observed frequency (accuracy) in 10 equal-width bins, the curves
  before and after calibration, with the count of molecules per bin below (Niculescu-Mizil &
  Caruana, ICML 2005; Guo et al., ICML 2017).
- regression_calibration_plot: the regression reliability diagram: expected against observed
  proportion of labels inside centred Gaussian intervals mu +- Phi^-1(0.5 + p / 2) sigma
  (Kuleshov et al., ICML 2018; the curve whose area to the diagonal is miscalibration_area).
- error_sigma_plot: |y - mu| against sigma per molecule, and per equal-count bin of sigma the
  RMSE against the RMV (the bins of ENCE, Levi et al. 2022): on the diagonal when sigma is
  calibrated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from molsam.outputs import save_figure
from molsam.uncertainty._arrays import as_tasks, check_blocks

NUM_BINS = 10


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _confidence(y: np.ndarray, p: np.ndarray, num_classes) -> tuple[np.ndarray, np.ndarray]:
    """Pooled (confidence, outcome) over labelled rows: binary p(class 1) and the label;
    multiclass the top-label probability and whether the argmax is right."""
    y, p = as_tasks(y, "labels"), as_tasks(p, "probabilities")
    if num_classes is None:
        keep = ~np.isnan(y) & np.isfinite(p)
        return p[keep], y[keep]
    slices = check_blocks(p.shape[1], num_classes, y.shape[1])
    confidence, outcome = [], []
    for t, block in enumerate(slices):
        pb = p[:, block]
        keep = ~np.isnan(y[:, t]) & np.all(np.isfinite(pb), axis=1)
        confidence.append(pb[keep].max(axis=1))
        outcome.append((pb[keep].argmax(axis=1) == y[keep, t]).astype(np.float64))
    return np.concatenate(confidence), np.concatenate(outcome)


def reliability_diagram(
    path: str | Path,
    y,
    curves: Mapping[str, np.ndarray],
    num_classes: Sequence[int] | None = None,
    target_names: Sequence[str] | None = None,
    num_bins: int = NUM_BINS,
) -> Path:
    """Write a reliability diagram of each named set of probabilities in `curves` (e.g.
    {"uncalibrated": p, "temperature": p_T}) to `path`; returns `path`."""
    plt = _pyplot()
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(5.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]},
        constrained_layout=True)
    top.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    for name, p in curves.items():
        confidence, outcome = _confidence(y, p, num_classes)
        if not len(confidence):
            continue
        index = np.searchsorted(edges[1:-1], confidence, side="left")
        counts = np.bincount(index, minlength=num_bins)
        filled = counts > 0
        mean_p = np.bincount(index, weights=confidence, minlength=num_bins)[filled] / counts[filled]
        mean_y = np.bincount(index, weights=outcome, minlength=num_bins)[filled] / counts[filled]
        ece = float(np.sum(np.abs(mean_y - mean_p) * counts[filled]) / len(confidence))
        top.plot(mean_p, mean_y, "o-", label=f"{name} (ECE {ece:.3f})")
        bottom.step(edges[:-1], counts, where="post", label=name)
    binary = num_classes is None
    top.set(ylabel="fraction of positives" if binary else "accuracy", xlim=(0, 1), ylim=(0, 1),
            title="reliability diagram" + _tasks_title(target_names))
    bottom.set(xlabel="predicted probability" if binary else "confidence (top class)",
               ylabel="molecules")
    top.legend(fontsize="small", loc="upper left")
    save_figure(figure, path, dpi=100)  # atomic: a full disk keeps an earlier plot
    plt.close(figure)
    return Path(path)


def _regression_rows(y, mu, sigma) -> tuple[np.ndarray, np.ndarray]:
    """Pooled (|y - mu|, sigma) over rows with a label, finite mu and sigma > 0."""
    y, mu, sigma = as_tasks(y, "y"), as_tasks(mu, "mu"), as_tasks(sigma, "sigma")
    keep = ~np.isnan(y) & np.isfinite(mu) & np.isfinite(sigma) & (sigma > 0)
    return np.abs(y - mu)[keep], sigma[keep]


def regression_calibration_plot(
    path: str | Path,
    y,
    mu,
    sigmas: Mapping[str, np.ndarray],
    target_names: Sequence[str] | None = None,
    levels: int = 100,
) -> Path:
    """Write expected against observed coverage of centred Gaussian intervals for each named
    sigma in `sigmas` to `path`; returns `path`."""
    from scipy.stats import norm

    from molsam.uncertainty.metrics import miscalibration_area

    plt = _pyplot()
    expected = np.linspace(0.0, 1.0, levels)
    multiples = norm.ppf(0.5 + expected / 2.0)
    figure, axis = plt.subplots(figsize=(5.5, 5), constrained_layout=True)
    axis.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    for name, sigma in sigmas.items():
        error, s = _regression_rows(y, mu, sigma)
        if not len(error):
            continue
        z = np.sort(error / s)
        observed = np.searchsorted(z, multiples, side="right") / len(z)
        area = float(miscalibration_area(error, np.zeros_like(error), s, levels)[0])
        axis.plot(expected, observed, label=f"{name} (area {area:.3f})")
    axis.set(xlabel="expected proportion in interval", ylabel="observed proportion",
             xlim=(0, 1), ylim=(0, 1), title="regression calibration" + _tasks_title(target_names))
    axis.legend(fontsize="small", loc="upper left")
    save_figure(figure, path, dpi=100)  # atomic: a full disk keeps an earlier plot
    plt.close(figure)
    return Path(path)


def error_sigma_plot(
    path: str | Path,
    y,
    mu,
    sigmas: Mapping[str, np.ndarray],
    target_names: Sequence[str] | None = None,
    num_bins: int = NUM_BINS,
) -> Path:
    """Write |error| against sigma (left: per molecule; right: RMSE against RMV per
    equal-count bin of sigma) for each named sigma in `sigmas` to `path`; returns `path`."""
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4.5), constrained_layout=True)
    top = 0.0
    for name, sigma in sigmas.items():
        error, s = _regression_rows(y, mu, sigma)
        if not len(error):
            continue
        left.scatter(s, error, s=8, alpha=0.5, label=name)
        order = np.argsort(s, kind="stable")
        bins = np.array_split(order, min(num_bins, len(order)))
        rmv = np.array([np.sqrt(np.mean(s[b] ** 2)) for b in bins])
        rmse = np.array([np.sqrt(np.mean(error[b] ** 2)) for b in bins])
        right.plot(rmv, rmse, "o-", label=name)
        top = max(top, float(rmv.max()), float(rmse.max()))
    right.plot([0, top or 1.0], [0, top or 1.0], ":", color="grey", label="calibrated")
    left.set(xlabel="sigma", ylabel="|y - mu|",
             title="error against sigma" + _tasks_title(target_names))
    right.set(xlabel="RMV (root mean sigma^2) per bin", ylabel="RMSE per bin",
              title=f"{num_bins} equal-count bins of sigma")
    for axis in (left, right):
        axis.legend(fontsize="small")
    save_figure(figure, path, dpi=100)  # atomic: a full disk keeps an earlier plot
    plt.close(figure)
    return Path(path)


def _tasks_title(target_names: Sequence[str] | None) -> str:
    if not target_names:
        return ""
    if len(target_names) == 1:
        return f": {target_names[0]}"
    return f": {len(target_names)} tasks pooled"


__all__ = ["error_sigma_plot", "regression_calibration_plot", "reliability_diagram"]
