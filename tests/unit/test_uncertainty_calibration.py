"""molsam.uncertainty.calibration: properties on seeded synthetic data, and the numbers of
sklearn, crepes and MAPIE where they compute the same thing."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from molsam.uncertainty import calibration as cal
from molsam.uncertainty.calibration import (
    calibrator_from_dict,
    conformal_quantile,
    fit_conformal_classification,
    fit_conformal_regression,
    fit_isotonic,
    fit_sigma_scaling,
    fit_temperature,
    logits_from_probabilities,
)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def binary_data(n=4000, tasks=2, seed=0):
    """True logits z and labels drawn from sigmoid(z): [n, tasks] each."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, tasks)) * 1.5
    y = (rng.random(z.shape) < sigmoid(z)).astype(np.float64)
    return z, y


def multiclass_data(n=4000, k=4, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * 1.5
    p = softmax(z)
    y = (rng.random((n, 1)) > np.cumsum(p, axis=1)).sum(axis=1).astype(np.float64)
    return z, y[:, None]


def binary_nll(p, y):
    mask = ~np.isnan(y)
    p, y = np.clip(p[mask], 1e-15, 1 - 1e-15), y[mask]
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def roundtrip(calibrator):
    """to_dict -> torch.save -> torch.load(weights_only=True) -> calibrator_from_dict."""
    buffer = io.BytesIO()
    torch.save({"calibration": calibrator.to_dict()}, buffer)
    buffer.seek(0)
    return calibrator_from_dict(torch.load(buffer, weights_only=True)["calibration"])


# --------------------------------------------------------------------------- temperature


def test_temperature_scaling_fixes_overconfident_binary_logits():
    z, y = binary_data()
    y[:300, 1] = np.nan  # missing labels are ignored
    overconfident = 3.0 * z
    scaler = fit_temperature(overconfident, y)
    assert scaler.counts == (4000, 3700)
    for t in range(2):
        assert 2.5 < scaler.temperatures[t] < 3.5  # the true temperature is 3
        before = binary_nll(sigmoid(overconfident[:, t]), y[:, t])
        after = binary_nll(scaler.apply(overconfident)[:, t], y[:, t])
        assert after < before - 0.05


def test_temperature_scaling_multiclass_lowers_nll_and_blocks_sum_to_one():
    z, y = multiclass_data()
    z2, y2 = multiclass_data(k=3, seed=1)
    logits = np.hstack([2.5 * z, 0.5 * z2])  # one overconfident, one underconfident target
    labels = np.hstack([y, y2])
    scaler = fit_temperature(logits, labels, num_classes=[4, 3])
    assert scaler.temperatures[0] > 1.5 and scaler.temperatures[1] < 0.8
    p = scaler.apply(logits)
    np.testing.assert_allclose(p[:, :4].sum(axis=1), 1.0)
    np.testing.assert_allclose(p[:, 4:].sum(axis=1), 1.0)
    rows = np.arange(len(y))

    def nll(probabilities, labels):
        return -np.mean(np.log(probabilities[rows, labels.astype(int)]))

    assert nll(p[:, :4], y[:, 0]) < nll(softmax(logits[:, :4]), y[:, 0])
    assert nll(p[:, 4:], y2[:, 0]) < nll(softmax(logits[:, 4:]), y2[:, 0])


def test_temperature_scaling_equals_sklearn_temperature_calibration():
    sklearn_calibration = pytest.importorskip("sklearn.calibration")
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.frozen import FrozenEstimator

    class Logits(ClassifierMixin, BaseEstimator):
        """A fitted classifier whose decision function is its input: the model's logits."""

        def fit(self, X, y):
            self.classes_ = np.unique(y)
            self.n_features_in_ = X.shape[1]
            return self

        def decision_function(self, X):
            X = np.asarray(X)
            return X[:, 0] if len(self.classes_) == 2 else X

        def predict(self, X):
            return self.classes_[np.asarray(X).argmax(axis=1)]

    def sklearn_probabilities(logits, labels, test):
        frozen = FrozenEstimator(Logits().fit(logits, labels))
        fitted = sklearn_calibration.CalibratedClassifierCV(frozen, method="temperature")
        return fitted.fit(logits, labels).predict_proba(test)

    z, y = binary_data(n=3000, tasks=1, seed=3)
    ours = fit_temperature(3 * z, y).apply(2 * z)[:, 0]
    theirs = sklearn_probabilities(3 * z, y[:, 0].astype(int), 2 * z)[:, 1]
    np.testing.assert_allclose(ours, theirs, atol=1e-6)

    z, y = multiclass_data(n=3000, k=4, seed=4)
    ours = fit_temperature(2.5 * z, y, num_classes=[4]).apply(z)
    theirs = sklearn_probabilities(2.5 * z, y[:, 0].astype(int), z)
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_temperature_of_a_task_without_two_classes_is_one():
    z, y = binary_data(n=50, tasks=3)
    y[:, 1] = 1.0
    y[:, 2] = np.nan
    scaler = fit_temperature(5 * z, y)
    assert scaler.temperatures[1:] == (1.0, 1.0)
    assert scaler.counts == (50, 50, 0)


def test_logits_from_probabilities_invert_sigmoid_and_softmax():
    z, _ = binary_data(n=20)
    np.testing.assert_allclose(logits_from_probabilities(sigmoid(z)), z, atol=1e-9)
    zk, _ = multiclass_data(n=20, k=3)
    back = logits_from_probabilities(softmax(zk), num_classes=[3])
    np.testing.assert_allclose(softmax(back), softmax(zk), atol=1e-12)


# --------------------------------------------------------------------------- isotonic


def test_isotonic_is_monotone_in_unit_interval_and_equals_sklearn():
    from sklearn.isotonic import IsotonicRegression

    z, y = binary_data(n=2000, tasks=2, seed=5)
    p = sigmoid(3 * z)
    y[:100, 0] = np.nan
    iso = fit_isotonic(p, y)
    grid = np.linspace(-0.1, 1.1, 1001)
    mapped = iso.apply(np.column_stack([grid, grid]))
    assert np.all(np.diff(mapped, axis=0) >= 0)
    assert mapped.min() >= 0 and mapped.max() <= 1
    keep = ~np.isnan(y[:, 0])
    reference = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(
        p[keep, 0], y[keep, 0]
    )
    np.testing.assert_allclose(mapped[:, 0], reference.predict(grid), atol=1e-12)
    # On its fit set, isotonic regression cannot do worse than the identity in Brier score.
    calibrated = iso.apply(p)
    assert np.nanmean((calibrated - y) ** 2) < np.nanmean((p - y) ** 2)
    assert np.isnan(iso.apply(np.array([[np.nan, 0.5]]))[0, 0])


# --------------------------------------------------------------------------- sigma scaling


def test_sigma_scaling_makes_mean_squared_z_one_on_the_fit_set():
    rng = np.random.default_rng(6)
    mu = rng.normal(size=(3000, 2))
    sigma = np.exp(rng.normal(size=mu.shape) * 0.4)
    y = mu + sigma * rng.normal(size=mu.shape)
    y[::7, 1] = np.nan
    reported = np.column_stack([sigma[:, 0] * 3.0, sigma[:, 1] * 0.5])  # under-, overconfident
    scaling = fit_sigma_scaling(y, mu, reported)
    scaled = scaling.apply(reported)
    for t in range(2):
        keep = ~np.isnan(y[:, t])
        z = (y[keep, t] - mu[keep, t]) / scaled[keep, t]
        assert np.mean(z**2) == pytest.approx(1.0, abs=1e-12)
    assert scaling.scales[0] == pytest.approx(1 / 3, rel=0.05)
    assert scaling.scales[1] == pytest.approx(2.0, rel=0.05)
    assert scaling.counts == (3000, 3000 - len(range(0, 3000, 7)))


def test_sigma_scaling_minimizes_gaussian_nll():
    from molsam.uncertainty.metrics import gaussian_nll

    rng = np.random.default_rng(7)
    mu = rng.normal(size=500)
    sigma = np.exp(rng.normal(size=500) * 0.3)
    y = mu + 2 * sigma * rng.normal(size=500)
    s = fit_sigma_scaling(y, mu, sigma).scales[0]
    best = gaussian_nll(y, mu, s * sigma)[0]
    for factor in (0.9, 0.99, 1.01, 1.1):
        assert gaussian_nll(y, mu, factor * s * sigma)[0] > best


# --------------------------------------------------------------------------- conformal


def heteroscedastic(n, seed):
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=n)
    sigma = np.exp(rng.normal(size=n) * 0.5)
    y = mu + sigma * rng.normal(size=n)
    return y, mu, sigma


def test_conformal_quantile_rank():
    scores = np.arange(1.0, 11.0)  # n = 10
    assert conformal_quantile(np.arange(1.0, 20.0), 0.1) == 18.0  # ceil(20 * 0.9) = 18
    assert conformal_quantile(np.arange(1.0, 10.0), 0.1) == 9.0  # ceil(10 * 0.9) = 9 = n
    assert conformal_quantile(np.arange(1.0, 9.0), 0.1) == math.inf  # ceil(9 * 0.9) = 9 > 8
    assert conformal_quantile([np.nan, 1.0, 2.0, 3.0], 0.5) == 2.0  # NaN dropped: n = 3
    with pytest.raises(ValueError):
        conformal_quantile(scores, 1.0)


def test_conformal_quantile_rank_of_ten_scores():
    # n = 10, alpha = 0.1: ceil(11 * 0.9) = ceil(9.9) = 10 -> the largest score.
    assert conformal_quantile(np.arange(1.0, 11.0), 0.1) == 10.0


@pytest.mark.parametrize("normalized", [False, True])
def test_split_conformal_90_percent_intervals_cover_88_to_92_percent(normalized):
    y_cal, mu_cal, s_cal = heteroscedastic(2000, seed=8)
    y_test, mu_test, s_test = heteroscedastic(100_000, seed=9)
    fitted = fit_conformal_regression(y_cal, mu_cal, s_cal if normalized else None, alpha=0.1)
    lower, upper = fitted.apply(mu_test, s_test if normalized else None)
    coverage = np.mean((lower[:, 0] <= y_test) & (y_test <= upper[:, 0]))
    assert 0.88 <= coverage <= 0.92
    if normalized:  # widths follow sigma; absolute residual intervals all have one width
        assert np.corrcoef(upper[:, 0] - lower[:, 0], s_test)[0, 1] > 0.99
    else:
        assert np.ptp(upper - lower) < 1e-12


def test_conformal_regression_equals_crepes():
    crepes = pytest.importorskip("crepes")
    # n + 1 = 1234: (n + 1) alpha is no integer for these alphas. Where it is one, crepes
    # computes int((1 - confidence)(n + 1)) with 1 - 0.8 = 0.19999999999999996 and takes the
    # next order statistic (one rank wider); MAPIE and molsam take ceil((n + 1)(1 - alpha)).
    y, mu, sigma = heteroscedastic(1233, seed=10)
    _, mu_test, sigma_test = heteroscedastic(50, seed=11)
    for alpha in (0.05, 0.1, 0.2):
        plain = crepes.ConformalRegressor().fit(y - mu)
        ours = fit_conformal_regression(y, mu, alpha=alpha).apply(mu_test)
        theirs = plain.predict_int(mu_test, confidence=1 - alpha)
        np.testing.assert_allclose(np.column_stack([ours[0][:, 0], ours[1][:, 0]]), theirs)
        normalized = crepes.ConformalRegressor().fit(y - mu, sigmas=sigma)
        ours = fit_conformal_regression(y, mu, sigma, alpha=alpha).apply(mu_test, sigma_test)
        theirs = normalized.predict_int(mu_test, sigmas=sigma_test, confidence=1 - alpha)
        np.testing.assert_allclose(np.column_stack([ours[0][:, 0], ours[1][:, 0]]), theirs)


def test_conformal_regression_equals_mapie():
    pytest.importorskip("mapie")
    from mapie.regression import SplitConformalRegressor
    from sklearn.base import BaseEstimator, RegressorMixin

    class Passthrough(RegressorMixin, BaseEstimator):
        """A fitted regressor whose prediction is its input: the model's mu."""

        def fit(self, X, y=None):
            self.n_features_in_ = 1
            self.fitted_ = True
            return self

        def predict(self, X):
            return np.asarray(X)[:, 0]

    # n = 999 puts (n + 1)(1 - alpha) on an integer, where rounding could pick the next rank.
    for n in (999, 1234):
        y, mu, _ = heteroscedastic(n, seed=12)
        _, mu_test, _ = heteroscedastic(50, seed=13)
        regressor = Passthrough().fit(mu[:, None])
        mapie = SplitConformalRegressor(regressor, confidence_level=0.9, prefit=True)
        _, intervals = mapie.conformalize(mu[:, None], y).predict_interval(mu_test[:, None])
        lower, upper = fit_conformal_regression(y, mu, alpha=0.1).apply(mu_test)
        np.testing.assert_allclose(lower[:, 0], intervals[:, 0, 0])
        np.testing.assert_allclose(upper[:, 0], intervals[:, 1, 0])


def test_conformal_regression_per_task_with_missing_labels_and_too_few_rows():
    y, mu, _ = heteroscedastic(300, seed=14)
    labels = np.column_stack([y, y, np.full(300, np.nan)])
    labels[:150, 1] = np.nan
    mus = np.column_stack([mu, mu, mu])
    fitted = fit_conformal_regression(labels, mus, alpha=0.1)
    assert fitted.counts == (300, 150, 0)
    assert fitted.quantiles[0] == conformal_quantile(np.abs(y - mu), 0.1)
    assert fitted.quantiles[1] == conformal_quantile(np.abs(y - mu)[150:], 0.1)
    assert fitted.quantiles[2] == math.inf  # no calibration rows: an unbounded interval
    lower, upper = fitted.apply(mus)
    assert np.all(np.isinf(lower[:, 2])) and np.all(np.isinf(upper[:, 2]))


def test_conformal_lac_sets_equal_mapie():
    pytest.importorskip("mapie")
    from mapie.classification import SplitConformalClassifier
    from sklearn.base import BaseEstimator, ClassifierMixin

    class Probabilities(ClassifierMixin, BaseEstimator):
        """A fitted classifier whose predict_proba is its input: the model's probabilities."""

        def __init__(self, k=4):
            self.k = k

        def fit(self, X, y=None):
            self.classes_ = np.arange(self.k)
            self.n_features_in_ = self.k
            return self

        def predict_proba(self, X):
            return np.asarray(X)

        def predict(self, X):
            return np.asarray(X).argmax(axis=1)

    z, y = multiclass_data(n=1500, k=4, seed=15)
    p = softmax(1.5 * z)
    cal_p, cal_y, test_p = p[:1000], y[:1000], p[1000:]
    mapie = SplitConformalClassifier(
        Probabilities(4).fit(cal_p), confidence_level=0.9, conformity_score="lac", prefit=True
    )
    _, sets = mapie.conformalize(cal_p, cal_y[:, 0].astype(int)).predict_set(test_p)
    ours = fit_conformal_classification(cal_p, cal_y, 0.1, "lac", [4]).apply(test_p)
    np.testing.assert_array_equal(ours, sets[:, :, 0])


@pytest.mark.parametrize("method", ["lac", "aps"])
def test_conformal_sets_cover_at_least_90_percent(method):
    z, y = multiclass_data(n=60_000, k=5, seed=16)
    p = softmax(z)  # calibrated probabilities
    fitted = fit_conformal_classification(p[:3000], y[:3000], 0.1, method, [5])
    sets = fitted.apply(p[3000:])
    covered = sets[np.arange(len(sets)), y[3000:, 0].astype(int)]
    assert covered.mean() >= 0.88
    assert sets.sum(axis=1).mean() < 5
    if method == "lac":  # LAC is exact up to the finite-sample rank
        assert covered.mean() <= 0.92
    else:  # APS adapts: flat (uncertain) predictions get larger sets than peaked ones
        entropy = -(p[3000:] * np.log(p[3000:])).sum(axis=1)
        assert np.corrcoef(entropy, sets.sum(axis=1))[0, 1] > 0.5
        assert sets.sum(axis=1).min() >= 1


def test_aps_set_by_hand():
    probabilities = np.array([[0.5, 0.3, 0.15, 0.05]])
    fitted = cal.ConformalClassification(0.1, "aps", (0.7,), (4,), (10,))
    # probability ranked above: 0, 0.5, 0.8, 0.95 -> classes with < 0.7 above them
    np.testing.assert_array_equal(fitted.apply(probabilities), [[True, True, False, False]])
    fitted = cal.ConformalClassification(0.1, "lac", (0.7,), (4,), (10,))
    np.testing.assert_array_equal(fitted.apply(probabilities), [[True, True, False, False]])


def test_binary_conformal_sets_have_two_columns_per_task():
    z, y = binary_data(n=3000, tasks=2, seed=17)
    p = sigmoid(z)
    fitted = fit_conformal_classification(p[:1000], y[:1000], alpha=0.2)
    sets = fitted.apply(p[1000:])
    assert sets.shape == (2000, 4)
    for t in range(2):
        labels = y[1000:, t].astype(int)
        covered = sets[np.arange(2000), 2 * t + labels]
        assert 0.77 <= covered.mean() <= 0.83
    nan_row = fitted.apply(np.array([[np.nan, 0.9]]))
    np.testing.assert_array_equal(nan_row[0, :2], [False, False])


# --------------------------------------------------------------------------- round trips


def test_every_calibrator_round_trips_through_a_weights_only_checkpoint():
    z, y = binary_data(n=500, tasks=2, seed=18)
    zk, yk = multiclass_data(n=500, k=3, seed=19)
    yr, mu, sigma = heteroscedastic(500, seed=20)
    calibrators = [
        fit_temperature(z, y),
        fit_temperature(zk, yk, num_classes=[3]),
        fit_isotonic(sigmoid(z), y),
        fit_sigma_scaling(yr, mu, sigma),
        fit_conformal_regression(yr, mu, alpha=0.1),
        fit_conformal_regression(yr, mu, sigma, alpha=0.05),
        fit_conformal_regression(yr[:5], mu[:5], alpha=0.1),  # +inf quantile
        fit_conformal_classification(sigmoid(z), y, method="aps"),
        fit_conformal_classification(softmax(zk), yk, num_classes=[3]),
    ]
    for fitted in calibrators:
        back = roundtrip(fitted)
        assert type(back) is type(fitted) and back == fitted
    assert calibrators[0].apply(z).tolist() == roundtrip(calibrators[0]).apply(z).tolist()


def test_from_dict_refuses_other_kinds_and_versions():
    data = fit_sigma_scaling([1.0, 2.0], [1.5, 1.5], [1.0, 1.0]).to_dict()
    with pytest.raises(ValueError, match="unknown calibrator"):
        calibrator_from_dict({**data, "kind": "nope"})
    with pytest.raises(ValueError, match="version"):
        calibrator_from_dict({**data, "version": 99})
    with pytest.raises(ValueError, match="not a 'temperature'"):
        cal.TemperatureScaling.from_dict(data)
