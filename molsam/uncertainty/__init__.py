"""Uncertainty for molsam predictions: calibration, its metrics, and applicability domain.

numpy in, numpy out, below both training and prediction (no model code, no torch). Arrays
follow molsam.train.metrics: [N, T] per task with NaN for a missing label; multiclass targets
own blocks of K_t columns (molsam.uncertainty._arrays). Fitted calibrators and stored
fingerprints turn into builtins with `to_dict()` for a checkpoint (torch.load with
weights_only=True) and back with `calibrator_from_dict` / `Fingerprints.from_dict`.

- calibration: temperature scaling, isotonic regression, z-scaling of sigma, split-conformal
  intervals and prediction sets.
- metrics: Gaussian NLL, Spearman(|error|, sigma), miscalibration area, ENCE, interval
  coverage and width; ECE, Brier, entropy, ensemble disagreement; error by similarity bin.
- domain: Morgan fingerprints packed to 256 bytes, nearest-neighbour Tanimoto similarity to
  the training set by popcounts in bounded memory (RDKit only to make fingerprints).
"""

from molsam.uncertainty.calibration import (
    ConformalClassification,
    ConformalRegression,
    IsotonicCalibration,
    SigmaScaling,
    TemperatureScaling,
    calibrator_from_dict,
    conformal_quantile,
    fit_conformal_classification,
    fit_conformal_regression,
    fit_isotonic,
    fit_sigma_scaling,
    fit_temperature,
    logits_from_probabilities,
)
from molsam.uncertainty.domain import (
    Fingerprints,
    Neighbors,
    morgan_fingerprints,
    nearest_neighbors,
    tanimoto_matrix,
)
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

__all__ = [
    "ConformalClassification",
    "ConformalRegression",
    "Fingerprints",
    "IsotonicCalibration",
    "Neighbors",
    "SigmaScaling",
    "TemperatureScaling",
    "brier_score",
    "calibrator_from_dict",
    "classification_report",
    "conformal_quantile",
    "ence",
    "ensemble_variance",
    "error_by_similarity",
    "expected_calibration_error",
    "fit_conformal_classification",
    "fit_conformal_regression",
    "fit_isotonic",
    "fit_sigma_scaling",
    "fit_temperature",
    "gaussian_nll",
    "interval_coverage",
    "logits_from_probabilities",
    "mean_interval_width",
    "miscalibration_area",
    "morgan_fingerprints",
    "mutual_information",
    "nearest_neighbors",
    "pairwise_disagreement",
    "per_molecule_error",
    "predictive_entropy",
    "regression_report",
    "spearman_error_sigma",
    "tanimoto_matrix",
]
