"""Post-hoc calibration fitted on a validation split: numpy in, numpy out, no model code.

Every calibrator is fitted per task by a `fit_*` function that returns a small frozen object
with `apply(...)`, `to_dict()` and `from_dict()`. `to_dict()` holds only builtins (str, int,
float incl. inf, bool, None, lists/tuples, dicts), so it goes into a molsam checkpoint as is and
loads with `torch.load(weights_only=True)`; `calibrator_from_dict` rebuilds any of them.
Labels are NaN where missing and those rows are ignored per task (molsam.uncertainty._arrays
states the array layouts). A task left with no usable rows (or, for the classification
calibrators, with a single class among its labels) gets the identity (T = 1, scale 1, the
identity map) and its `counts` entry tells how many rows each task was fitted on; a conformal
quantile that n rows cannot give is +inf (an unbounded interval, every class in the set).

Classification
    fit_temperature: temperature scaling (Guo et al., "On Calibration of Modern Neural
        Networks", ICML 2017): one T > 0 per task minimizing the validation NLL of
        sigmoid(z / T) (binary) or softmax(z / T) (multiclass). Ensembles average
        probabilities; `logits_from_probabilities` turns their mean back into logits.
    fit_isotonic: isotonic regression of the label on the predicted probability (Zadrozny &
        Elkan, KDD 2002), binary tasks, sklearn.isotonic.IsotonicRegression.
    fit_conformal_classification: split-conformal prediction sets with marginal coverage
        >= 1 - alpha: LAC (score 1 - p_y; Sadinle, Lei & Wasserman, JASA 2019) or APS
        (cumulative probability down to the true class, non-randomized, last label included;
        Romano, Sesia & Candes, NeurIPS 2020; Angelopoulos & Bates, arXiv:2107.07511).

Regression (mu and sigma in the targets' units, sigma e.g. the ensemble std)
    fit_sigma_scaling: z-scaling (Levi, Gispan, Giladi & Fetaya, "Evaluating and Calibrating
        Uncertainty Prediction in Regression Tasks", Sensors 2022): sigma' = s * sigma with
        s^2 = mean(z^2), z = (y - mu) / sigma, the s minimizing the Gaussian NLL.
    fit_conformal_regression: split-conformal intervals (Vovk, Gammerman & Shafer 2005; Lei,
        G'Sell, Rinaldo, Tibshirani & Wasserman, JASA 2018): q = the ceil((n+1)(1-alpha))-th
        smallest of |y - mu| (interval mu +- q), or of |y - mu| / sigma when sigma is given
        (normalized: mu +- q sigma; Papadopoulos et al. 2008).

Why molsam's own code rather than MAPIE or crepes at run time: each method is a few lines of
numpy once the model's predictions exist, and the libraries' estimator wrappers and fitted
objects (arrays of calibration scores, sklearn estimators) neither mask missing labels per task
nor pickle under weights_only. tests/unit/test_uncertainty_calibration.py shows the numbers
equal the libraries': conformal quantiles and intervals against crepes' ConformalRegressor
and MAPIE's SplitConformalRegressor, LAC and APS sets against MAPIE's SplitConformalClassifier,
temperature scaling against sklearn's CalibratedClassifierCV(method="temperature"), isotonic
against sklearn's IsotonicRegression.predict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from molsam.uncertainty._arrays import (
    as_tasks,
    binary_as_blocks,
    check_blocks,
    plain_floats,
    same_shape,
)

#: Version of the to_dict layout (bumped on incompatible change).
DICT_VERSION = 1
#: Temperatures searched (log scale, bounded Brent).
TEMPERATURE_BOUNDS = (1e-2, 1e2)
CONFORMAL_METHODS = ("lac", "aps")


# --------------------------------------------------------------------------- shared


def conformal_quantile(scores, alpha: float) -> float:
    """The split-conformal quantile of n calibration scores (NaN dropped): the
    ceil((n+1)(1-alpha))-th smallest, +inf when that rank exceeds n (Lei et al. 2018).

    scores: float [n]. A new exchangeable score is <= it with probability >= 1 - alpha.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha: expected 0 < alpha < 1, got {alpha}")
    values = np.asarray(scores, dtype=np.float64).ravel()
    values = values[~np.isnan(values)]
    n = len(values)
    # The tolerance keeps an exact integer such as 100 * 0.9 from rounding up to the next rank.
    rank = max(1, math.ceil((n + 1) * (1.0 - alpha) - 1e-9))
    if rank > n:
        return math.inf
    return float(np.partition(values, rank - 1)[rank - 1])


def _labels_as_classes(labels: np.ndarray, k: int, where: str) -> np.ndarray:
    classes = labels.astype(np.int64)
    if np.any(classes != labels) or np.any(classes < 0) or np.any(classes >= k):
        raise ValueError(f"{where}: labels must be class indices 0..{k - 1}")
    return classes


def _label_columns(labels: np.ndarray, columns: int, num_classes) -> list:
    """Per task: (column slice of its probabilities/logits, K) with K = None for binary."""
    if num_classes is None:
        if labels.shape[1] != columns:
            raise ValueError(f"labels: {labels.shape[1]} tasks for {columns} columns")
        return [(slice(t, t + 1), None) for t in range(columns)]
    slices = check_blocks(columns, num_classes, labels.shape[1])
    return [(s, s.stop - s.start) for s in slices]


def _check_version(data: dict, kind: str) -> None:
    if not isinstance(data, dict) or data.get("kind") != kind:
        raise ValueError(f"not a {kind!r} calibrator: {str(data)[:80]}")
    if data.get("version") != DICT_VERSION:
        raise ValueError(
            f"{kind} calibrator version {data.get('version')} is not supported (supports "
            f"{DICT_VERSION})"
        )


# --------------------------------------------------------------------------- temperature


def logits_from_probabilities(
    probabilities, num_classes: Sequence[int] | None = None, eps: float = 1e-12
) -> np.ndarray:
    """Logits whose sigmoid (binary: log(p / (1 - p))) or per-block softmax (multiclass: log p)
    gives back `probabilities` [N, O]; p is clipped to [eps, 1 - eps]. For an ensemble's mean
    probabilities, before temperature scaling."""
    p = np.clip(as_tasks(probabilities, "probabilities"), eps, 1.0 - eps)
    if num_classes is None:
        return np.log(p) - np.log1p(-p)
    check_blocks(p.shape[1], num_classes, len(num_classes))
    return np.log(p)


@dataclass(frozen=True)
class TemperatureScaling:
    """One temperature per task: probabilities sigmoid(z / T) (binary) or softmax(z / T) over
    each target's class block (multiclass).

    temperatures: [T]; num_classes: K per target (multiclass) or None (binary);
    counts: [T] labelled validation rows each temperature was fitted on.
    """

    temperatures: tuple[float, ...]
    num_classes: tuple[int, ...] | None
    counts: tuple[int, ...]

    kind = "temperature"

    def _columns(self, columns: int) -> np.ndarray:
        """The temperature of each logit column: [O]."""
        if self.num_classes is None:
            if columns != len(self.temperatures):
                raise ValueError(f"logits: {columns} columns for {len(self.temperatures)} tasks")
            return np.asarray(self.temperatures)
        check_blocks(columns, self.num_classes, len(self.temperatures))
        return np.repeat(self.temperatures, self.num_classes)

    def scale(self, logits) -> np.ndarray:
        """Logits divided by their task's temperature: [N, O] -> [N, O]."""
        z = as_tasks(logits, "logits")
        return z / self._columns(z.shape[1])

    def apply(self, logits) -> np.ndarray:
        """Calibrated probabilities [N, O] from logits [N, O] (NaN rows stay NaN)."""
        z = self.scale(logits)
        if self.num_classes is None:
            return 0.5 * (1.0 + np.tanh(0.5 * z))  # sigmoid without overflow
        from scipy.special import softmax

        out = np.empty_like(z)
        for block in check_blocks(z.shape[1], self.num_classes, len(self.temperatures)):
            out[:, block] = softmax(z[:, block], axis=1)
        return out

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "version": DICT_VERSION,
            "temperatures": plain_floats(self.temperatures),
            "num_classes": None if self.num_classes is None else [int(k) for k in self.num_classes],
            "counts": [int(c) for c in self.counts],
        }

    @classmethod
    def from_dict(cls, data: dict) -> TemperatureScaling:
        _check_version(data, cls.kind)
        k = data["num_classes"]
        return cls(
            tuple(float(t) for t in data["temperatures"]),
            None if k is None else tuple(int(x) for x in k),
            tuple(int(c) for c in data["counts"]),
        )


def _binary_nll(z: np.ndarray, y: np.ndarray):
    def nll(log_t: float) -> float:
        x = z / math.exp(log_t)
        return float(np.mean(np.logaddexp(0.0, x) - y * x))

    return nll


def _multiclass_nll(z: np.ndarray, y: np.ndarray):
    from scipy.special import logsumexp

    true = z[np.arange(len(y)), y]

    def nll(log_t: float) -> float:
        inv = math.exp(-log_t)
        return float(np.mean(logsumexp(z * inv, axis=1) - true * inv))

    return nll


def fit_temperature(
    logits, labels, num_classes: Sequence[int] | None = None
) -> TemperatureScaling:
    """Fit one temperature per task by minimizing the validation NLL (bounded Brent search
    over log T in TEMPERATURE_BOUNDS; the NLL is convex in 1/T, so this is its minimum).

    Args:
        logits: float [N, T] (binary) or [N, sum K_t] (multiclass), the model's raw outputs
            (or logits_from_probabilities of an ensemble's mean).
        labels: float [N, T], 0/1 (binary) or class indices (multiclass), NaN when missing.
        num_classes: K_t per target for multiclass, None for binary tasks.
    """
    from scipy.optimize import minimize_scalar

    z_all = as_tasks(logits, "logits")
    y_all = as_tasks(labels, "labels")
    if len(z_all) != len(y_all):
        raise ValueError(f"labels: {len(y_all)} rows for {len(z_all)} rows of logits")
    temperatures, counts = [], []
    for t, (columns, k) in enumerate(_label_columns(y_all, z_all.shape[1], num_classes)):
        z, y = z_all[:, columns], y_all[:, t]
        keep = ~np.isnan(y) & np.all(np.isfinite(z), axis=1)
        z, y = z[keep], y[keep]
        counts.append(int(keep.sum()))
        if len(np.unique(y)) < 2:
            temperatures.append(1.0)
            continue
        if k is None:
            nll = _binary_nll(z[:, 0], y)
        else:
            nll = _multiclass_nll(z, _labels_as_classes(y, k, "fit_temperature"))
        lo, hi = (math.log(b) for b in TEMPERATURE_BOUNDS)
        found = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-8})
        temperatures.append(float(math.exp(found.x)))
    return TemperatureScaling(
        tuple(temperatures), None if num_classes is None else tuple(int(k) for k in num_classes),
        tuple(counts),
    )


# --------------------------------------------------------------------------- isotonic


@dataclass(frozen=True)
class IsotonicCalibration:
    """Per binary task, a non-decreasing piecewise-linear map of probabilities, constant
    beyond its ends: sklearn IsotonicRegression(out_of_bounds="clip")'s X_thresholds_ and
    y_thresholds_, applied with np.interp (the same numbers as its predict).

    thresholds, values: [T] tuples of knots; counts: [T] labelled rows fitted on.
    """

    thresholds: tuple[tuple[float, ...], ...]
    values: tuple[tuple[float, ...], ...]
    counts: tuple[int, ...]

    kind = "isotonic"

    def apply(self, probabilities) -> np.ndarray:
        """Calibrated probabilities [N, T] from probabilities [N, T] (NaN stays NaN)."""
        p = as_tasks(probabilities, "probabilities")
        if p.shape[1] != len(self.thresholds):
            raise ValueError(f"probabilities: {p.shape[1]} tasks for {len(self.thresholds)}")
        out = np.empty_like(p)
        for t, (x, y) in enumerate(zip(self.thresholds, self.values)):
            out[:, t] = np.interp(p[:, t], x, y)
        return out

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "version": DICT_VERSION,
            "thresholds": [plain_floats(x) for x in self.thresholds],
            "values": [plain_floats(y) for y in self.values],
            "counts": [int(c) for c in self.counts],
        }

    @classmethod
    def from_dict(cls, data: dict) -> IsotonicCalibration:
        _check_version(data, cls.kind)
        return cls(
            tuple(tuple(float(v) for v in x) for x in data["thresholds"]),
            tuple(tuple(float(v) for v in y) for y in data["values"]),
            tuple(int(c) for c in data["counts"]),
        )


def fit_isotonic(probabilities, labels) -> IsotonicCalibration:
    """Fit sklearn's IsotonicRegression (increasing, outputs in [0, 1], clipped outside the
    fitted range) of the 0/1 label on the predicted probability, per binary task.

    probabilities: float [N, T]; labels: float [N, T], 0/1 or NaN.
    """
    from sklearn.isotonic import IsotonicRegression

    p_all = as_tasks(probabilities, "probabilities")
    y_all = as_tasks(labels, "labels")
    same_shape("probabilities", p_all, ("labels", y_all))
    thresholds, values, counts = [], [], []
    for t in range(p_all.shape[1]):
        keep = ~np.isnan(y_all[:, t]) & np.isfinite(p_all[:, t])
        p, y = p_all[keep, t], y_all[keep, t]
        counts.append(int(keep.sum()))
        if len(np.unique(y)) < 2:
            thresholds.append((0.0, 1.0))
            values.append((0.0, 1.0))
            continue
        model = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
        model.fit(p, y)
        thresholds.append(tuple(plain_floats(model.X_thresholds_)))
        values.append(tuple(plain_floats(model.y_thresholds_)))
    return IsotonicCalibration(tuple(thresholds), tuple(values), tuple(counts))


# --------------------------------------------------------------------------- sigma scaling


def _regression_rows(y, mu, sigma=None):
    y, mu = as_tasks(y, "y"), as_tasks(mu, "mu")
    same_shape("y", y, ("mu", mu))
    if sigma is None:
        return y, mu, None
    sigma = as_tasks(sigma, "sigma")
    same_shape("y", y, ("sigma", sigma))
    return y, mu, sigma


@dataclass(frozen=True)
class SigmaScaling:
    """sigma' = scale_t * sigma per task (z-scaling, Levi et al. 2022).

    scales: [T]; counts: [T] rows fitted on (finite y, mu and sigma > 0).
    """

    scales: tuple[float, ...]
    counts: tuple[int, ...]

    kind = "sigma_scaling"

    def apply(self, sigma) -> np.ndarray:
        """Scaled sigma [N, T] from sigma [N, T]."""
        s = as_tasks(sigma, "sigma")
        if s.shape[1] != len(self.scales):
            raise ValueError(f"sigma: {s.shape[1]} tasks for {len(self.scales)}")
        return s * np.asarray(self.scales)

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "version": DICT_VERSION,
            "scales": plain_floats(self.scales),
            "counts": [int(c) for c in self.counts],
        }

    @classmethod
    def from_dict(cls, data: dict) -> SigmaScaling:
        _check_version(data, cls.kind)
        return cls(tuple(float(s) for s in data["scales"]), tuple(int(c) for c in data["counts"]))


def fit_sigma_scaling(y, mu, sigma) -> SigmaScaling:
    """Fit s per task with s^2 = mean(((y - mu) / sigma)^2), the minimizer of the mean
    Gaussian NLL of y under N(mu, (s sigma)^2). After it, mean(z'^2) = 1 on the fit rows.

    y, mu, sigma: float [N, T]; rows with a NaN label, non-finite mu or sigma <= 0 are left out.
    """
    y, mu, sigma = _regression_rows(y, mu, sigma)
    scales, counts = [], []
    for t in range(y.shape[1]):
        keep = ~np.isnan(y[:, t]) & np.isfinite(mu[:, t]) & np.isfinite(sigma[:, t])
        keep &= sigma[:, t] > 0
        counts.append(int(keep.sum()))
        if not keep.any():
            scales.append(1.0)
            continue
        z = (y[keep, t] - mu[keep, t]) / sigma[keep, t]
        scales.append(float(np.sqrt(np.mean(z * z))))
    return SigmaScaling(tuple(scales), tuple(counts))


# --------------------------------------------------------------------------- conformal


@dataclass(frozen=True)
class ConformalRegression:
    """Split-conformal intervals per task: mu +- q_t (absolute residuals) or mu +- q_t sigma
    (normalized, when fitted with sigma), marginal coverage >= 1 - alpha on exchangeable data.

    quantiles: [T] (+inf when too few rows for 1 - alpha); counts: [T] calibration rows.
    """

    alpha: float
    quantiles: tuple[float, ...]
    normalized: bool
    counts: tuple[int, ...]

    kind = "conformal_regression"

    def apply(self, mu, sigma=None) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper), each float [N, T], from mu [N, T] (and sigma [N, T] if normalized)."""
        mu = as_tasks(mu, "mu")
        if mu.shape[1] != len(self.quantiles):
            raise ValueError(f"mu: {mu.shape[1]} tasks for {len(self.quantiles)}")
        half = np.broadcast_to(np.asarray(self.quantiles), mu.shape)
        if self.normalized:
            if sigma is None:
                raise ValueError("a normalized conformal interval needs sigma")
            s = as_tasks(sigma, "sigma")
            same_shape("mu", mu, ("sigma", s))
            with np.errstate(invalid="ignore"):  # inf * 0 -> NaN: an unknown width
                half = half * s
        return mu - half, mu + half

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "version": DICT_VERSION,
            "alpha": float(self.alpha),
            "quantiles": plain_floats(self.quantiles),
            "normalized": bool(self.normalized),
            "counts": [int(c) for c in self.counts],
        }

    @classmethod
    def from_dict(cls, data: dict) -> ConformalRegression:
        _check_version(data, cls.kind)
        return cls(
            float(data["alpha"]),
            tuple(float(q) for q in data["quantiles"]),
            bool(data["normalized"]),
            tuple(int(c) for c in data["counts"]),
        )


def fit_conformal_regression(y, mu, sigma=None, alpha: float = 0.1) -> ConformalRegression:
    """Split-conformal quantile per task of |y - mu| (or |y - mu| / sigma with sigma).

    y, mu (, sigma): float [N, T] on a calibration split the model never trained on; rows with
    a NaN label, non-finite mu or (normalized) sigma <= 0 are left out. alpha: miscoverage,
    0.1 for 90% intervals.
    """
    y, mu, sigma = _regression_rows(y, mu, sigma)
    quantiles, counts = [], []
    for t in range(y.shape[1]):
        keep = ~np.isnan(y[:, t]) & np.isfinite(mu[:, t])
        scores = np.abs(y[:, t] - mu[:, t])
        if sigma is not None:
            keep &= np.isfinite(sigma[:, t]) & (sigma[:, t] > 0)
            scores = scores / np.where(keep, sigma[:, t], 1.0)
        counts.append(int(keep.sum()))
        quantiles.append(conformal_quantile(scores[keep], alpha))
    return ConformalRegression(float(alpha), tuple(quantiles), sigma is not None, tuple(counts))


def _lac_scores(p: np.ndarray) -> np.ndarray:
    """LAC non-conformity of every class: 1 - p, [n, K]."""
    return 1.0 - p


def _aps_scores(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """APS per class: cumulative probability of the classes ranked above it, with (score) and
    without (before) itself, classes ranked by decreasing p (stable): two [n, K]."""
    order = np.argsort(-p, axis=1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=1)
    cumulative = np.cumsum(ranked, axis=1)
    score = np.empty_like(p)
    np.put_along_axis(score, order, cumulative, axis=1)
    return score, score - p


@dataclass(frozen=True)
class ConformalClassification:
    """Split-conformal prediction sets per target, marginal coverage >= 1 - alpha.

    method: "lac" (class k in the set when 1 - p_k <= q) or "aps" (classes by decreasing p
    while the probability ranked above them is < q, so the set is never empty unless q <= 0).
    quantiles: [T]; num_classes: K per target (multiclass) or None (binary tasks, K = 2);
    counts: [T] calibration rows.
    """

    alpha: float
    method: str
    quantiles: tuple[float, ...]
    num_classes: tuple[int, ...] | None
    counts: tuple[int, ...]

    kind = "conformal_classification"

    def apply(self, probabilities) -> np.ndarray:
        """Set membership, bool [N, sum K_t]: multiclass columns as the probabilities';
        binary tasks [N, T] give [N, 2T], columns (class 0, class 1) per task. A row with NaN
        probabilities gets an empty set."""
        p = as_tasks(probabilities, "probabilities")
        if self.num_classes is None:
            if p.shape[1] != len(self.quantiles):
                raise ValueError(f"probabilities: {p.shape[1]} tasks for {len(self.quantiles)}")
            p, slices = binary_as_blocks(p)
        else:
            slices = check_blocks(p.shape[1], self.num_classes, len(self.quantiles))
        member = np.zeros(p.shape, dtype=bool)
        for block, q in zip(slices, self.quantiles):
            pb = p[:, block]
            ok = np.all(np.isfinite(pb), axis=1)
            if self.method == "lac":
                inside = _lac_scores(pb[ok]) <= q
            else:
                inside = _aps_scores(pb[ok])[1] < q
            member[np.flatnonzero(ok)[:, None], np.arange(block.start, block.stop)] = inside
        return member

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "version": DICT_VERSION,
            "alpha": float(self.alpha),
            "method": self.method,
            "quantiles": plain_floats(self.quantiles),
            "num_classes": None if self.num_classes is None else [int(k) for k in self.num_classes],
            "counts": [int(c) for c in self.counts],
        }

    @classmethod
    def from_dict(cls, data: dict) -> ConformalClassification:
        _check_version(data, cls.kind)
        k = data["num_classes"]
        return cls(
            float(data["alpha"]),
            str(data["method"]),
            tuple(float(q) for q in data["quantiles"]),
            None if k is None else tuple(int(x) for x in k),
            tuple(int(c) for c in data["counts"]),
        )


def fit_conformal_classification(
    probabilities,
    labels,
    alpha: float = 0.1,
    method: str = "lac",
    num_classes: Sequence[int] | None = None,
) -> ConformalClassification:
    """Split-conformal quantile per target of the true class's LAC or APS score.

    Args:
        probabilities: float [N, T] (binary: p of class 1) or [N, sum K_t] (multiclass).
        labels: float [N, T], 0/1 or class indices, NaN when missing (left out).
        alpha: miscoverage (0.1: the set holds the true class for >= 90% of molecules).
        method: "lac" (smallest sets on average) or "aps" (adapts the set size to the
            molecule's difficulty).
        num_classes: K_t per target for multiclass, None for binary tasks.
    """
    if method not in CONFORMAL_METHODS:
        raise ValueError(f"method: {method!r} is not one of {', '.join(CONFORMAL_METHODS)}")
    p_all = as_tasks(probabilities, "probabilities")
    y_all = as_tasks(labels, "labels")
    if len(p_all) != len(y_all):
        raise ValueError(f"labels: {len(y_all)} rows for {len(p_all)} rows of probabilities")
    if num_classes is None:
        same_shape("probabilities", p_all, ("labels", y_all))
        p_all, slices = binary_as_blocks(p_all)
    else:
        slices = check_blocks(p_all.shape[1], num_classes, y_all.shape[1])
    quantiles, counts = [], []
    for t, block in enumerate(slices):
        p, y = p_all[:, block], y_all[:, t]
        keep = ~np.isnan(y) & np.all(np.isfinite(p), axis=1)
        p = p[keep]
        y = _labels_as_classes(y[keep], block.stop - block.start, "fit_conformal_classification")
        scores = _lac_scores(p) if method == "lac" else _aps_scores(p)[0]
        counts.append(int(keep.sum()))
        quantiles.append(conformal_quantile(scores[np.arange(len(y)), y], alpha))
    return ConformalClassification(
        float(alpha),
        method,
        tuple(quantiles),
        None if num_classes is None else tuple(int(k) for k in num_classes),
        tuple(counts),
    )


# --------------------------------------------------------------------------- loading

CALIBRATORS = {
    cls.kind: cls
    for cls in (
        TemperatureScaling,
        IsotonicCalibration,
        SigmaScaling,
        ConformalRegression,
        ConformalClassification,
    )
}


def calibrator_from_dict(data: dict):
    """Rebuild any calibrator from its to_dict() (dispatch on data["kind"])."""
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind not in CALIBRATORS:
        raise ValueError(f"unknown calibrator kind {kind!r} (known: {', '.join(CALIBRATORS)})")
    return CALIBRATORS[kind].from_dict(data)
