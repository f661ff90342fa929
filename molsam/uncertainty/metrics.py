"""How good are the uncertainties? Masked, per-task metrics over numpy arrays.

Layouts as in molsam.train.metrics (molsam.uncertainty._arrays): y float [N, T] with NaN for a
missing label; mu, sigma, lower, upper float [N, T]; binary probabilities [N, T]; multiclass
probabilities [N, sum K_t] with labels as class indices; ensemble members [M, N, O]. Every
per-task function returns float64 [T] and leaves a task without usable rows NaN; regression
rows need a label, a finite mu and a finite sigma > 0 (a single model's std of 0 gives no
Gaussian), classification rows a label and finite probabilities. `regression_report` and
`classification_report` collect them in task_metrics' {"tasks", "mean", "skipped", "n"} form.

Regression
    gaussian_nll: mean -log N(y; mu, sigma^2) (equal to uncertainty-toolbox's
        metrics_scoring_rule.nll_gaussian).
    spearman_error_sigma: Spearman rank correlation of |y - mu| with sigma (scipy.stats).
    miscalibration_area: area between the observed and expected proportions of centred
        Gaussian intervals, 100 levels (Tran et al. 2020; Chung et al., "Uncertainty
        Toolbox", arXiv:2109.10254): the numbers of uncertainty_toolbox.metrics_calibration.
        miscalibration_area with its defaults, computed here (the toolbox is not a molsam
        dependency; tests/unit/test_uncertainty_metrics.py compares the two).
    ence: expected normalized calibration error (Levi et al., Sensors 2022): rows binned by
        sigma into equal-count bins, mean over bins of |RMV - RMSE| / RMV.
    interval_coverage, mean_interval_width: of (lower, upper) intervals, e.g. conformal.

Classification
    expected_calibration_error: equal-width bins (Naeini et al., AAAI 2015; Guo et al., ICML
        2017): binary tasks bin p(class 1) and compare with the fraction of positives (the
        reliability diagram of sklearn.calibration.calibration_curve, strategy="uniform");
        multiclass targets bin the top-label confidence max_k p_k against accuracy.
    brier_score: mean squared error of the probabilities (binary: (p - y)^2; multiclass: sum
        over classes of (p_k - [y = k])^2, Brier 1950).
    predictive_entropy: entropy of the (mean) predictive distribution per molecule, in nats.
    ensemble_variance, mutual_information, pairwise_disagreement: how much ensemble members
        disagree per molecule (mutual information: Houlsby et al. 2011, BALD; Depeweg et al.,
        ICML 2018).

By training similarity
    error_by_similarity: mean per-molecule error per bin of nearest-neighbour similarity to
        the training set (terciles by default; molsam.uncertainty.domain gives the similarity).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from molsam.uncertainty._arrays import (
    as_tasks,
    binary_as_blocks,
    check_blocks,
    nan_to_none,
    same_shape,
)

REGRESSION_UNCERTAINTY_METRICS = (
    "nll", "spearman", "miscalibration_area", "ence", "coverage", "width",
)
CLASSIFICATION_UNCERTAINTY_METRICS = ("ece", "brier", "entropy")
#: Metrics where lower is better (the others, spearman and coverage, are judged against a
#: target: higher spearman, coverage close to 1 - alpha).
LOWER_IS_BETTER = frozenset({"nll", "miscalibration_area", "ence", "width", "ece", "brier"})


# --------------------------------------------------------------------------- regression


def _regression_columns(y, mu, sigma):
    """Per task the usable rows of (y, mu, sigma): a label, finite mu, finite sigma > 0."""
    y, mu, sigma = as_tasks(y, "y"), as_tasks(mu, "mu"), as_tasks(sigma, "sigma")
    same_shape("y", y, ("mu", mu), ("sigma", sigma))
    for t in range(y.shape[1]):
        keep = ~np.isnan(y[:, t]) & np.isfinite(mu[:, t]) & np.isfinite(sigma[:, t])
        keep &= sigma[:, t] > 0
        yield y[keep, t], mu[keep, t], sigma[keep, t]


def _per_task(values) -> np.ndarray:
    return np.asarray(list(values), dtype=np.float64)


def gaussian_nll(y, mu, sigma) -> np.ndarray:
    """Mean Gaussian negative log-likelihood per task, [T]:
    mean(0.5 log(2 pi sigma^2) + (y - mu)^2 / (2 sigma^2))."""

    def one(y, mu, s):
        if not len(y):
            return math.nan
        z = (y - mu) / s
        return float(np.mean(0.5 * math.log(2 * math.pi) + np.log(s) + 0.5 * z * z))

    return _per_task(one(*cols) for cols in _regression_columns(y, mu, sigma))


def spearman_error_sigma(y, mu, sigma) -> np.ndarray:
    """Spearman's rho between |y - mu| and sigma per task, [T] (NaN for < 2 rows or a
    constant column): does a larger sigma mean a larger error?"""
    from scipy.stats import spearmanr

    def one(y, mu, s):
        error = np.abs(y - mu)
        if len(y) < 2 or np.all(s == s[0]) or np.all(error == error[0]):
            return math.nan
        return float(spearmanr(error, s).statistic)

    return _per_task(one(*cols) for cols in _regression_columns(y, mu, sigma))


def _area_between(expected: np.ndarray, observed: np.ndarray) -> float:
    """Area between the polyline (expected, observed) and the diagonal, segments that cross
    it split at the crossing (uncertainty-toolbox's trapezoid_area with absolute=True)."""
    d = observed - expected
    left, right, width = d[:-1], d[1:], np.diff(expected)
    cross = left * right < 0
    same_side = 0.5 * width * np.abs(left + right)
    with np.errstate(invalid="ignore", divide="ignore"):
        split = 0.5 * width * (left * left + right * right) / (np.abs(left) + np.abs(right))
    return float(np.sum(np.where(cross, split, same_side)))


def miscalibration_area(y, mu, sigma, num_bins: int = 100) -> np.ndarray:
    """Miscalibration area per task, [T], in [0, 0.5]: for expected proportions
    p = linspace(0, 1, num_bins), the observed fraction with |y - mu| / sigma <=
    Phi^-1(0.5 + p / 2) (the centred Gaussian interval holding p), the area between observed
    and expected; 0 for perfectly calibrated Gaussian sigma."""
    from scipy.stats import norm

    expected = np.linspace(0.0, 1.0, num_bins)
    multiples = norm.ppf(0.5 + expected / 2.0)

    def one(y, mu, s):
        if not len(y):
            return math.nan
        z = np.sort(np.abs(y - mu) / s)
        observed = np.searchsorted(z, multiples, side="right") / len(z)
        return _area_between(expected, observed)

    return _per_task(one(*cols) for cols in _regression_columns(y, mu, sigma))


def ence(y, mu, sigma, num_bins: int = 10) -> np.ndarray:
    """Expected normalized calibration error per task, [T] (Levi et al. 2022): rows sorted by
    sigma and split into `num_bins` bins of (nearly) equal count (fewer when rows are fewer);
    per bin RMV = sqrt(mean sigma^2) and RMSE = sqrt(mean (y - mu)^2); ENCE = mean over bins
    of |RMV - RMSE| / RMV. 0 when sigma matches the error scale bin by bin."""

    def one(y, mu, s):
        if not len(y):
            return math.nan
        order = np.argsort(s, kind="stable")
        terms = []
        for rows in np.array_split(order, min(num_bins, len(order))):
            rmv = math.sqrt(float(np.mean(s[rows] ** 2)))
            rmse = math.sqrt(float(np.mean((y[rows] - mu[rows]) ** 2)))
            terms.append(abs(rmv - rmse) / rmv)
        return float(np.mean(terms))

    return _per_task(one(*cols) for cols in _regression_columns(y, mu, sigma))


def _interval_rows(y, lower, upper):
    y, lower, upper = as_tasks(y, "y"), as_tasks(lower, "lower"), as_tasks(upper, "upper")
    same_shape("y", y, ("lower", lower), ("upper", upper))
    for t in range(y.shape[1]):
        keep = ~np.isnan(y[:, t]) & ~np.isnan(lower[:, t]) & ~np.isnan(upper[:, t])
        yield y[keep, t], lower[keep, t], upper[keep, t]


def interval_coverage(y, lower, upper) -> np.ndarray:
    """Fraction of labels with lower <= y <= upper per task, [T]."""
    return _per_task(
        float(np.mean((lo <= y) & (y <= hi))) if len(y) else math.nan
        for y, lo, hi in _interval_rows(y, lower, upper)
    )


def mean_interval_width(y, lower, upper) -> np.ndarray:
    """Mean upper - lower over the labelled rows per task, [T] (inf for unbounded ones)."""
    return _per_task(
        float(np.mean(hi - lo)) if len(y) else math.nan
        for y, lo, hi in _interval_rows(y, lower, upper)
    )


# --------------------------------------------------------------------------- classification


def _class_blocks(y, p, num_classes):
    """Per target: (labels as class indices [n], probabilities [n, K]) on its usable rows."""
    y, p = as_tasks(y, "labels"), as_tasks(p, "probabilities")
    if len(y) != len(p):
        raise ValueError(f"labels: {len(y)} rows for {len(p)} rows of probabilities")
    if num_classes is None:
        same_shape("probabilities", p, ("labels", y))
        p, slices = binary_as_blocks(p)
    else:
        slices = check_blocks(p.shape[1], num_classes, y.shape[1])
    for t, block in enumerate(slices):
        pb = p[:, block]
        keep = ~np.isnan(y[:, t]) & np.all(np.isfinite(pb), axis=1)
        labels = y[keep, t].astype(np.int64)
        if np.any(labels != y[keep, t]) or np.any((labels < 0) | (labels >= pb.shape[1])):
            raise ValueError(f"labels: task {t} has values that are not class indices")
        yield labels, pb[keep]


def _ece(confidence: np.ndarray, correct: np.ndarray, num_bins: int) -> float:
    # Bins (0, 1/B], (1/B, 2/B], ..., the first closed at 0: calibration_curve's binning.
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    index = np.searchsorted(edges[1:-1], confidence, side="left")
    gap = np.bincount(index, weights=correct - confidence, minlength=num_bins)
    return float(np.sum(np.abs(gap)) / len(confidence))


def expected_calibration_error(
    y, p, num_bins: int = 10, num_classes: Sequence[int] | None = None
) -> np.ndarray:
    """ECE per task, [T]: sum over equal-width bins of (n_bin / n) |mean outcome - mean
    prediction|. Binary (num_classes None): p(class 1) against the fraction of positives;
    multiclass: the top-label confidence max_k p_k against the accuracy of the argmax."""

    def one(labels, pb):
        if not len(labels):
            return math.nan
        if num_classes is None:
            return _ece(pb[:, 1], (labels == 1).astype(np.float64), num_bins)
        top = pb.argmax(axis=1)
        return _ece(pb.max(axis=1), (top == labels).astype(np.float64), num_bins)

    return _per_task(one(*cols) for cols in _class_blocks(y, p, num_classes))


def brier_score(y, p, num_classes: Sequence[int] | None = None) -> np.ndarray:
    """Brier score per task, [T]: binary mean (p - y)^2; multiclass mean over molecules of
    sum_k (p_k - [y = k])^2 (the multiclass form is twice the binary one for K = 2)."""

    def one(labels, pb):
        if not len(labels):
            return math.nan
        onehot = np.zeros_like(pb)
        onehot[np.arange(len(labels)), labels] = 1.0
        total = np.sum((pb - onehot) ** 2, axis=1)
        return float(np.mean(total) / (2.0 if num_classes is None else 1.0))

    return _per_task(one(*cols) for cols in _class_blocks(y, p, num_classes))


def _entropy_blocks(p: np.ndarray, num_classes) -> tuple[np.ndarray, list[slice]]:
    p = np.asarray(p, dtype=np.float64)
    if num_classes is None:
        return binary_as_blocks(p)
    return p, check_blocks(p.shape[1], num_classes, len(num_classes))


def _entropy(p: np.ndarray) -> np.ndarray:
    """Entropy in nats over the last axis (0 log 0 = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    out = terms.sum(axis=-1)
    return np.where(np.all(np.isfinite(p), axis=-1), out, np.nan)


def predictive_entropy(p, num_classes: Sequence[int] | None = None) -> np.ndarray:
    """Entropy of each molecule's predictive distribution in nats, [N, T] (binary: of
    (1 - p, p), at most log 2; multiclass: at most log K). NaN rows stay NaN."""
    full, slices = _entropy_blocks(as_tasks(p, "probabilities"), num_classes)
    return np.stack([_entropy(full[:, block]) for block in slices], axis=1)


def _members(members) -> np.ndarray:
    m = np.asarray(members, dtype=np.float64)
    if m.ndim == 2:
        m = m[:, :, None]
    if m.ndim != 3:
        raise ValueError(f"members: expected [M, N, O], got shape {m.shape}")
    return m


def ensemble_variance(members, num_classes: Sequence[int] | None = None) -> np.ndarray:
    """Population variance (ddof=0, the square of predict's `_std`) of the members'
    probabilities per molecule, [N, T]; multiclass: the mean over each target's classes.

    members: float [M, N, O] (M members' probabilities)."""
    m = _members(members)
    variance = m.var(axis=0)
    if num_classes is None:
        return variance
    slices = check_blocks(m.shape[2], num_classes, len(num_classes))
    return np.stack([variance[:, block].mean(axis=1) for block in slices], axis=1)


def mutual_information(members, num_classes: Sequence[int] | None = None) -> np.ndarray:
    """Mutual information between the prediction and the member, [N, T] in nats: entropy of
    the mean prediction minus the mean of the members' entropies (>= 0; 0 when all members
    agree). The ensemble's disagreement part of predictive_entropy (BALD)."""
    m = _members(members)
    mean = m.mean(axis=0)
    full, slices = _entropy_blocks(mean, num_classes)
    each = [_entropy_blocks(member, num_classes)[0] for member in m]
    out = []
    for block in slices:
        total = _entropy(full[:, block])
        expected = np.mean([_entropy(member[:, block]) for member in each], axis=0)
        out.append(np.maximum(total - expected, 0.0))
    return np.stack(out, axis=1)


def pairwise_disagreement(members, num_classes: Sequence[int] | None = None) -> np.ndarray:
    """Fraction of member pairs whose predicted classes differ (binary: at p = 0.5), per
    molecule, [N, T]; 0 for one member."""
    m = _members(members)
    count = m.shape[0]
    if num_classes is None:
        labels = (m >= 0.5).astype(np.int64)  # [M, N, T]
        k_max = 2
    else:
        slices = check_blocks(m.shape[2], num_classes, len(num_classes))
        labels = np.stack([m[:, :, block].argmax(axis=2) for block in slices], axis=2)
        k_max = max(int(k) for k in num_classes)
    pairs = count * (count - 1) / 2
    if pairs == 0:
        return np.zeros(labels.shape[1:])
    # Agreeing pairs: sum over classes of C(votes, 2).
    agree = np.zeros(labels.shape[1:])
    for k in range(k_max):
        votes = (labels == k).sum(axis=0)
        agree += votes * (votes - 1) / 2
    disagree = 1.0 - agree / pairs
    valid = np.all(np.isfinite(m), axis=0)
    if num_classes is None:
        return np.where(valid, disagree, np.nan)
    valid_t = np.stack([valid[:, block].all(axis=1) for block in slices], axis=1)
    return np.where(valid_t, disagree, np.nan)


# --------------------------------------------------------------------------- by similarity


def per_molecule_error(y, prediction, task: str) -> np.ndarray:
    """Error of each molecule and task, [N, T], NaN where the label is missing: |y - mu|
    (regression) or (p - y)^2 (binary classification)."""
    y, prediction = as_tasks(y, "y"), as_tasks(prediction, "prediction")
    same_shape("y", y, ("prediction", prediction))
    if task == "regression":
        return np.abs(y - prediction)
    if task == "classification":
        return (prediction - y) ** 2
    raise ValueError(f"per_molecule_error: task {task!r} is not regression or classification")


def error_by_similarity(
    similarity, errors, num_bins: int = 3, edges: Sequence[float] | None = None
) -> dict:
    """Mean error per bin of nearest-neighbour training similarity.

    Args:
        similarity: float [N], NaN for molecules without one (left out).
        errors: float [N, T] per-molecule errors (per_molecule_error), NaN when unlabelled.
        num_bins: quantile bins (3: terciles of the given similarities) when `edges` is None.
        edges: explicit inner bin edges instead, e.g. (0.3, 0.5, 0.7) for 4 bins.

    Returns:
        {"edges": [num_bins + 1 floats], "bins": [{"low", "high", "n", "mean": [T] (None
         where a task has no labelled molecule in the bin), "mean_over_tasks"}]}; bins are
        (low, high] except the first, which includes its low end.
    """
    s = np.asarray(similarity, dtype=np.float64).ravel()
    e = as_tasks(errors, "errors")
    if len(s) != len(e):
        raise ValueError(f"errors: {len(e)} rows for {len(s)} similarities")
    present = ~np.isnan(s)
    if edges is None:
        inner = (
            np.quantile(s[present], np.arange(1, num_bins) / num_bins)
            if present.any() else np.full(num_bins - 1, np.nan)
        )
    else:
        inner = np.asarray(sorted(edges), dtype=np.float64)
    lo = float(np.min(s[present])) if present.any() else math.nan
    hi = float(np.max(s[present])) if present.any() else math.nan
    all_edges = [lo, *(float(x) for x in inner), hi]
    index = np.searchsorted(inner, s, side="left")
    bins = []
    for b in range(len(inner) + 1):
        rows = present & (index == b)
        sub = e[rows]
        means = [
            nan_to_none(float(np.mean(col[~np.isnan(col)]))) if np.any(~np.isnan(col)) else None
            for col in sub.T
        ]
        values = [m for m in means if m is not None]
        bins.append({
            "low": nan_to_none(all_edges[b]),
            "high": nan_to_none(all_edges[b + 1]),
            "n": int(rows.sum()),
            "mean": means,
            "mean_over_tasks": float(np.mean(values)) if values else None,
        })
    return {"edges": [nan_to_none(x) for x in all_edges], "bins": bins}


# --------------------------------------------------------------------------- reports


def _report(per_task: dict[str, np.ndarray], target_names: Sequence[str], n: int) -> dict:
    tasks = {
        name: {
            metric: float(values[t]) if np.isfinite(values[t]) else None
            for metric, values in per_task.items()
        }
        for t, name in enumerate(target_names)
    }
    mean, skipped = {}, {}
    for metric, values in per_task.items():
        present = values[np.isfinite(values)]
        mean[metric] = float(np.mean(present)) if len(present) else None
        skipped[metric] = len(values) - len(present)
    return {"tasks": tasks, "mean": mean, "skipped": skipped, "n": int(n)}


def regression_report(
    y, mu, sigma=None, lower=None, upper=None, target_names: Sequence[str] | None = None
) -> dict:
    """nll, spearman, miscalibration_area and ence (with sigma), coverage and width (with
    lower and upper) per task and averaged over the tasks that have a value, in
    molsam.train.metrics.task_metrics' form: {"tasks": {target: {metric: value or None}},
    "mean": {metric: value or None}, "skipped": {metric: tasks without a value}, "n": N}.
    Values that are NaN or infinite (an unbounded interval's width) are None, so the report
    is plain JSON."""
    y = as_tasks(y, "y")
    names = list(target_names) if target_names is not None else [str(t) for t in range(y.shape[1])]
    per_task: dict[str, np.ndarray] = {}
    if sigma is not None:
        per_task["nll"] = gaussian_nll(y, mu, sigma)
        per_task["spearman"] = spearman_error_sigma(y, mu, sigma)
        per_task["miscalibration_area"] = miscalibration_area(y, mu, sigma)
        per_task["ence"] = ence(y, mu, sigma)
    if lower is not None and upper is not None:
        per_task["coverage"] = interval_coverage(y, lower, upper)
        per_task["width"] = mean_interval_width(y, lower, upper)
    return _report(per_task, names, len(y))


def classification_report(
    y,
    p,
    num_classes: Sequence[int] | None = None,
    members=None,
    target_names: Sequence[str] | None = None,
    num_bins: int = 10,
) -> dict:
    """ece, brier and entropy (mean predictive entropy over labelled molecules), plus
    mutual_information and disagreement (means over labelled molecules) when `members`
    [M, N, O] are given; task_metrics' form (see regression_report)."""
    y = as_tasks(y, "labels")
    names = list(target_names) if target_names is not None else [str(t) for t in range(y.shape[1])]
    labelled = ~np.isnan(y)

    def labelled_mean(values: np.ndarray) -> np.ndarray:
        out = []
        for t in range(values.shape[1]):
            v = values[labelled[:, t], t]
            v = v[np.isfinite(v)]
            out.append(float(np.mean(v)) if len(v) else math.nan)
        return np.asarray(out)

    per_task = {
        "ece": expected_calibration_error(y, p, num_bins, num_classes),
        "brier": brier_score(y, p, num_classes),
        "entropy": labelled_mean(predictive_entropy(p, num_classes)),
    }
    if members is not None:
        per_task["mutual_information"] = labelled_mean(mutual_information(members, num_classes))
        per_task["disagreement"] = labelled_mean(pairwise_disagreement(members, num_classes))
    return _report(per_task, names, len(y))
