"""molsam.uncertainty.metrics: equal to uncertainty-toolbox, scipy and sklearn where they
compute the same number; properties on seeded synthetic data where no library does."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from molsam.uncertainty.metrics import (
    brier_score,
    classification_report,
    ence,
    ensemble_variance,
    error_by_similarity,
    expected_calibration_error,
    gaussian_nll,
    interval_coverage,
    mean_interval_width,
    miscalibration_area,
    mutual_information,
    pairwise_disagreement,
    per_molecule_error,
    predictive_entropy,
    regression_report,
    spearman_error_sigma,
)


def gaussian_data(n, seed, sigma_factor=1.0):
    """y ~ N(mu, sigma^2); the returned sigma is sigma_factor * the true one."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=n)
    sigma = np.exp(rng.normal(size=n) * 0.5)
    y = mu + sigma * rng.normal(size=n)
    return y, mu, sigma_factor * sigma


# --------------------------------------------------------------------------- regression


@pytest.mark.parametrize("factor", [0.3, 1.0, 2.5])
def test_gaussian_nll_and_miscalibration_area_equal_uncertainty_toolbox(factor):
    uct = pytest.importorskip("uncertainty_toolbox")
    y, mu, sigma = gaussian_data(3000, seed=1, sigma_factor=factor)
    expected_nll = uct.metrics_scoring_rule.nll_gaussian(mu, sigma, y, scaled=True)
    assert gaussian_nll(y, mu, sigma)[0] == pytest.approx(expected_nll, rel=1e-12)
    expected_area = uct.metrics_calibration.miscalibration_area(mu, sigma, y)
    assert miscalibration_area(y, mu, sigma)[0] == pytest.approx(expected_area, abs=1e-12)


def test_miscalibration_area_is_small_when_calibrated_and_large_when_not():
    y, mu, sigma = gaussian_data(20_000, seed=2)
    assert miscalibration_area(y, mu, sigma)[0] < 0.01
    assert miscalibration_area(y, mu, sigma / 3)[0] > 0.2
    assert miscalibration_area(y, mu, sigma * 3)[0] > 0.2


def test_ence_near_zero_when_calibrated_and_large_when_overconfident():
    y, mu, sigma = gaussian_data(50_000, seed=3)
    assert ence(y, mu, sigma)[0] < 0.03
    assert ence(y, mu, sigma / 3)[0] > 1.5  # RMSE is 3x the RMV in every bin: |1 - 3| / 1


def test_ence_by_hand():
    # Two bins by sigma: {0.5, 0.5} with errors {1, 1}; {2, 2} with errors {2, 2}.
    y = np.array([1.0, -1.0, 2.0, -2.0])
    mu = np.zeros(4)
    sigma = np.array([0.5, 0.5, 2.0, 2.0])
    assert ence(y, mu, sigma, num_bins=2)[0] == pytest.approx((abs(0.5 - 1) / 0.5 + 0) / 2)


def test_spearman_equals_scipy_and_tells_informative_sigma():
    from scipy.stats import spearmanr

    y, mu, sigma = gaussian_data(2000, seed=4)
    expected = spearmanr(np.abs(y - mu), sigma).statistic
    assert spearman_error_sigma(y, mu, sigma)[0] == pytest.approx(expected)
    assert spearman_error_sigma(y, mu, sigma)[0] > 0.2
    shuffled = np.random.default_rng(5).permutation(sigma)
    assert abs(spearman_error_sigma(y, mu, shuffled)[0]) < 0.1
    assert math.isnan(spearman_error_sigma(y, mu, np.ones_like(sigma))[0])


def test_regression_metrics_ignore_missing_labels_per_task():
    y, mu, sigma = gaussian_data(600, seed=6)
    labels = np.column_stack([y, y])
    labels[::3, 1] = np.nan
    mus, sigmas = np.column_stack([mu, mu]), np.column_stack([sigma, sigma])
    keep = ~np.isnan(labels[:, 1])
    for metric in (gaussian_nll, spearman_error_sigma, miscalibration_area, ence):
        both = metric(labels, mus, sigmas)
        assert both[0] == pytest.approx(metric(y, mu, sigma)[0])
        assert both[1] == pytest.approx(metric(y[keep], mu[keep], sigma[keep])[0])
    # A zero sigma (a single model's std) is no Gaussian: the row is left out.
    zero = sigma.copy()
    zero[:10] = 0.0
    expected = gaussian_nll(y[10:], mu[10:], sigma[10:])[0]
    assert gaussian_nll(y, mu, zero)[0] == pytest.approx(expected)


def test_interval_coverage_and_width():
    y = np.array([[0.0, 1.0], [2.0, np.nan], [5.0, 3.0]])
    lower = np.array([[-1.0, 0.0], [1.0, 0.0], [0.0, 3.5]])
    upper = np.array([[1.0, 2.0], [3.0, 0.0], [4.0, 4.0]])
    np.testing.assert_allclose(interval_coverage(y, lower, upper), [2 / 3, 1 / 2])
    np.testing.assert_allclose(mean_interval_width(y, lower, upper), [8 / 3, 1.25])


def test_regression_report_is_json_with_none_for_undefined():
    y, mu, sigma = gaussian_data(200, seed=7)
    labels = np.column_stack([y, np.full(200, np.nan)])
    mus, sigmas = np.column_stack([mu, mu]), np.column_stack([sigma, sigma])
    lower, upper = mus - 1.64 * sigmas, mus + np.inf
    report = regression_report(labels, mus, sigmas, lower, upper, ["logS", "empty"])
    json.dumps(report, allow_nan=False)
    assert report["tasks"]["empty"]["nll"] is None
    assert report["tasks"]["logS"]["width"] is None  # infinite
    assert report["mean"]["nll"] == pytest.approx(gaussian_nll(y, mu, sigma)[0])
    assert report["skipped"]["nll"] == 1 and report["n"] == 200
    assert 0.9 < report["tasks"]["logS"]["coverage"] <= 1.0


# --------------------------------------------------------------------------- classification


def test_ece_near_zero_when_calibrated_and_large_when_overconfident():
    rng = np.random.default_rng(8)
    p = rng.random(100_000)
    y = (rng.random(p.shape) < p).astype(np.float64)
    assert expected_calibration_error(y, p)[0] < 0.01
    logit = np.log(p / (1 - p))
    overconfident = 1 / (1 + np.exp(-3 * logit))
    assert expected_calibration_error(y, overconfident)[0] > 0.1


def test_binary_ece_equals_sklearn_calibration_curve():
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(9)
    p = rng.beta(0.5, 0.8, size=5000)
    y = (rng.random(p.shape) < p**1.5).astype(np.float64)
    fraction, mean_predicted = calibration_curve(y, p, n_bins=10, strategy="uniform")
    counts = np.histogram(p, bins=np.linspace(0, 1, 11))[0]
    expected = np.sum(counts[counts > 0] / len(p) * np.abs(fraction - mean_predicted))
    assert expected_calibration_error(y, p, num_bins=10)[0] == pytest.approx(expected)


def test_multiclass_ece_is_top_label():
    p = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.25, 0.35, 0.4]])
    y = np.array([[0.0], [1.0], [2.0], [1.0]])
    # confidences 0.7 (right), 0.6 (wrong), 0.8 (right), 0.4 (wrong), one per bin:
    expected = (abs(1 - 0.7) + abs(0 - 0.6) + abs(1 - 0.8) + abs(0 - 0.4)) / 4
    assert expected_calibration_error(y, p, num_classes=[3])[0] == pytest.approx(expected)


def test_brier_equals_sklearn():
    from sklearn.metrics import brier_score_loss

    rng = np.random.default_rng(10)
    p = rng.random(300)
    y = (rng.random(300) < p).astype(np.float64)
    assert brier_score(y, p)[0] == pytest.approx(brier_score_loss(y, p))
    logits = rng.normal(size=(300, 4))
    pk = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    yk = rng.integers(0, 4, size=300)
    expected = np.mean(np.sum((pk - np.eye(4)[yk]) ** 2, axis=1))
    assert brier_score(yk[:, None].astype(float), pk, num_classes=[4])[0] == pytest.approx(expected)
    assert brier_score_loss(yk, pk, labels=range(4)) == pytest.approx(expected)


def test_entropy_equals_scipy():
    from scipy.stats import entropy

    rng = np.random.default_rng(11)
    p = rng.random((50, 2))
    p[0, 0] = 0.0
    np.testing.assert_allclose(
        predictive_entropy(p), entropy(np.stack([1 - p, p]), axis=0), atol=1e-12
    )
    logits = rng.normal(size=(50, 3))
    pk = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(predictive_entropy(pk, [3])[:, 0], entropy(pk, axis=1))
    assert np.isnan(predictive_entropy(np.array([[np.nan]]))[0, 0])


def test_ensemble_disagreement():
    members = np.array([[[0.9], [0.2]], [[0.8], [0.7]], [[0.85], [0.1]]])  # [M=3, N=2, T=1]
    same = np.repeat(members[:1], 3, axis=0)
    np.testing.assert_allclose(mutual_information(same), 0.0, atol=1e-15)
    np.testing.assert_allclose(ensemble_variance(same), 0.0, atol=1e-15)
    mi = mutual_information(members)
    assert mi[1, 0] > mi[0, 0] > 0  # molecule 1's members disagree
    np.testing.assert_allclose(ensemble_variance(members)[:, 0], members[:, :, 0].var(axis=0))
    # Votes: molecule 0 all positive; molecule 1 one positive of three -> 2 of 3 pairs differ.
    np.testing.assert_allclose(pairwise_disagreement(members)[:, 0], [0.0, 2 / 3])
    k3 = np.array([[[0.6, 0.3, 0.1]], [[0.1, 0.7, 0.2]], [[0.2, 0.2, 0.6]], [[0.5, 0.4, 0.1]]])
    np.testing.assert_allclose(pairwise_disagreement(k3, [3]), [[1 - 1 / 6]])
    assert mutual_information(k3, [3])[0, 0] > 0


def test_classification_report_per_task_with_missing_labels():
    rng = np.random.default_rng(12)
    p = rng.random((400, 2))
    y = (rng.random(p.shape) < p).astype(np.float64)
    y[:, 1] = np.nan
    members = np.stack([p, np.clip(p + 0.1, 0, 1)])
    report = classification_report(y, p, members=members, target_names=["a", "b"])
    json.dumps(report, allow_nan=False)
    assert report["tasks"]["b"] == {
        "ece": None, "brier": None, "entropy": None, "mutual_information": None,
        "disagreement": None,
    }
    assert report["mean"]["ece"] == pytest.approx(expected_calibration_error(y[:, 0], p[:, 0])[0])


# --------------------------------------------------------------------------- by similarity


def test_error_by_similarity_terciles():
    rng = np.random.default_rng(13)
    similarity = rng.random(900)
    errors = np.column_stack([1.0 - similarity + 0.05 * rng.random(900), np.full(900, np.nan)])
    similarity[:3] = np.nan  # molecules without a fingerprint are left out
    result = error_by_similarity(similarity, errors)
    bins = result["bins"]
    assert [b["n"] for b in bins] == [299, 299, 299]
    means = [b["mean"][0] for b in bins]
    assert means[0] > means[1] > means[2]
    assert all(b["mean"][1] is None for b in bins)
    assert result["edges"][0] == pytest.approx(np.nanmin(similarity))
    fixed = error_by_similarity(similarity, errors, edges=[0.5])
    assert len(fixed["bins"]) == 2 and fixed["edges"][1] == 0.5
    assert fixed["bins"][0]["n"] == int(np.sum(similarity <= 0.5))
    json.dumps(result, allow_nan=False)


def test_per_molecule_error():
    y = np.array([[1.0, np.nan], [0.0, 1.0]])
    pred = np.array([[0.8, 0.5], [0.3, 0.4]])
    np.testing.assert_allclose(
        per_molecule_error(y, pred, "classification"), [[0.04, np.nan], [0.09, 0.36]]
    )
    np.testing.assert_allclose(
        per_molecule_error(y, pred, "regression"), [[0.2, np.nan], [0.3, 0.6]]
    )
