"""Post-hoc calibration of trained checkpoints, stored in the checkpoint (issue 23).

At the end of every replicate `molsam train` fits calibration on the run's validation split
with best.pt's weights and stores it in best.pt under "calibration"; after the last replicate
of a run with several seeds it also fits the ensemble of them and stores that beside
(molsam.train.loop, molsam.train.run). `molsam calibrate` refits on other labelled molecules
(molsam.calibrate). `molsam evaluate` applies it; so does `molsam predict` with --uncertainty
and --interval (molsam.predict_uncertainty).

ckpt["calibration"] (builtins only, so the checkpoint loads with weights_only=True)::

    {"version": 1,
     "model":    ENTRY for this checkpoint alone,
     "ensemble": ENTRY for the ensemble of `members`, or None}

    ENTRY = {"fitted_on": {"data": str, "split": str, "n": int},
             "alpha": 0.1,           # conformal miscoverage: 90% intervals
             "sigma": None | "mve" | "ensemble" | "ensemble_mve",
             "members": [[seed, created], ...]   # ensemble entries: which checkpoints
             "calibrators": {name: molsam.uncertainty calibrator's to_dict()}}

Calibrators per task (molsam.uncertainty.calibration):
    classification (binary): "temperature" (Guo et al., ICML 2017) on the logits (an
        ensemble: logits of its mean probability) and "isotonic" (Zadrozny & Elkan 2002) on
        the probabilities;
    multiclass: "temperature";
    regression: "conformal" split-conformal intervals (Vovk et al. 2005; Lei et al., JASA
        2018), of |y - mu| without a sigma, else of |y - mu| / sigma' with sigma' the
        z-scaled sigma (normalized, Papadopoulos et al. 2008), so intervals are
        mu +- q sigma' (q near 1.645 when sigma' is Gaussian-calibrated), stored with its
        sorted calibration scores ("scores", T lists) so that predict's --interval can give
        another level without refitting (conformal_level_quantiles); with a sigma also
        "sigma_scaling" (z-scaling, Levi et al., Sensors 2022): sigma' = s sigma.

Where a sigma comes from: an MVE head (train.loss: mve; Nix & Weigend 1994) gives one per
model; an ensemble's is the spread of its members' means (population std), or, when every
member has an MVE sigma, the deviation of the equally weighted Gaussian mixture,
sqrt(mean sigma_m^2 + var mu_m) (Lakshminarayanan, Pritzel & Blundell, NeurIPS 2017).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from molsam.train.inference import mean_and_sigma, to_output_units
from molsam.uncertainty import (
    calibrator_from_dict,
    conformal_quantile,
    fit_conformal_regression,
    fit_isotonic,
    fit_sigma_scaling,
    fit_temperature,
    logits_from_probabilities,
)

VERSION = 1
#: Conformal miscoverage of the stored intervals: 90% intervals.
DEFAULT_ALPHA = 0.1


@dataclass
class Outputs:
    """One model's (or an ensemble's) predictions for N molecules.

    values: float64 [N, O] in output units (probabilities, or regression means mu);
    logits: float64 [N, O] (classification and multiclass; None for regression);
    sigma: float64 [N, T] regression standard deviation in the targets' units, or None;
    sigma_kind: None, "mve", "ensemble" or "ensemble_mve" (where sigma comes from).
    """

    values: np.ndarray
    logits: np.ndarray | None = None
    sigma: np.ndarray | None = None
    sigma_kind: str | None = None


def outputs_from_raw(
    raw: np.ndarray,
    task: str,
    scaler: dict | None,
    num_classes: Sequence[int] | None = None,
    loss: str = "mse",
) -> Outputs:
    """Outputs of one model from its raw outputs [N, O_raw] (predict_raw): logits kept for
    classification, an MVE head split into mu and sigma (molsam.train.inference)."""
    raw = np.asarray(raw, dtype=np.float64)
    if task == "regression":
        if loss == "mve":
            mu, sigma = mean_and_sigma(raw, scaler)
            return Outputs(mu, sigma=sigma, sigma_kind="mve")
        return Outputs(to_output_units(raw, task, scaler, num_classes, loss))
    return Outputs(to_output_units(raw, task, scaler, num_classes), logits=raw)


def ensemble_outputs(
    members: Sequence[Outputs], task: str, num_classes: Sequence[int] | None = None
) -> Outputs:
    """The ensemble of M members' Outputs: mean values (probabilities averaged, as predict
    does); classification logits of the mean probability; regression sigma as the module
    docstring says."""
    values = np.stack([m.values for m in members])  # [M, N, O]
    mean = values.mean(axis=0)
    if task != "regression":
        return Outputs(mean, logits=logits_from_probabilities(mean, num_classes))
    spread = values.var(axis=0)  # population variance (ddof=0), as predict's _std
    if all(m.sigma is not None for m in members):
        aleatoric = np.mean([m.sigma ** 2 for m in members], axis=0)
        return Outputs(mean, sigma=np.sqrt(aleatoric + spread), sigma_kind="ensemble_mve")
    return Outputs(mean, sigma=np.sqrt(spread), sigma_kind="ensemble")


def fit_entry(
    outputs: Outputs,
    labels: np.ndarray,
    task: str,
    num_classes: Sequence[int] | None = None,
    *,
    alpha: float = DEFAULT_ALPHA,
    data: str = "",
    split: str = "val",
    members: Sequence[Sequence] | None = None,
) -> dict:
    """Fit the calibrators of `task` on labelled molecules (labels float [N, T], NaN when
    missing; class indices for multiclass) and return an ENTRY (module docstring)."""
    labels = np.asarray(labels, dtype=np.float64)
    calibrators: dict = {}
    if task == "regression":
        sigma = outputs.sigma
        if sigma is not None:
            scaling = fit_sigma_scaling(labels, outputs.values, sigma)
            calibrators["sigma_scaling"] = scaling.to_dict()
            sigma = scaling.apply(sigma)
        calibrators["conformal"] = fit_conformal_regression(
            labels, outputs.values, sigma, alpha=alpha).to_dict()
        # The scores themselves too, so predict can give intervals of another level
        # without refitting (molsam.predict's --interval).
        calibrators["conformal"]["scores"] = conformal_scores(labels, outputs.values, sigma)
    else:
        multiclass = task == "multiclass"
        calibrators["temperature"] = fit_temperature(
            outputs.logits, labels, num_classes if multiclass else None).to_dict()
        if not multiclass:
            calibrators["isotonic"] = fit_isotonic(outputs.values, labels).to_dict()
    entry = {
        "fitted_on": {"data": str(data), "split": str(split), "n": int(len(labels))},
        "alpha": float(alpha),
        "sigma": outputs.sigma_kind if task == "regression" else None,
        "calibrators": calibrators,
    }
    if members is not None:
        entry["members"] = [[int(seed), None if created is None else str(created)]
                            for seed, created in members]
    return entry


def conformal_scores(y, mu, sigma=None) -> list[list[float]]:
    """The calibration scores behind fit_conformal_regression's quantiles, sorted, per task:
    |y - mu| (or |y - mu| / sigma) on the rows it keeps (a label, finite mu, and finite
    sigma > 0 when normalized). y, mu (, sigma): float [N, T] -> T lists of floats.
    conformal_quantile(scores[t], alpha) is the task's quantile at any level 1 - alpha."""
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    mu = np.asarray(mu, dtype=np.float64).reshape(y.shape)
    out = []
    for t in range(y.shape[1]):
        keep = ~np.isnan(y[:, t]) & np.isfinite(mu[:, t])
        scores = np.abs(y[:, t] - mu[:, t])
        if sigma is not None:
            s = np.asarray(sigma, dtype=np.float64).reshape(y.shape)[:, t]
            keep &= np.isfinite(s) & (s > 0)
            scores = scores / np.where(keep, s, 1.0)
        out.append([float(v) for v in np.sort(scores[keep])])
    return out


def conformal_level_quantiles(conformal: dict, level: float) -> list[float] | None:
    """The per-task quantiles of a stored conformal calibrator (its to_dict(), as fit_entry
    stores it) for intervals of coverage `level` (0.9: 90%): the stored ones at the stored
    level; at another level, conformal_quantile of its stored scores (nothing refitted);
    None when it holds no scores (calibrated before they were stored)."""
    alpha = 1.0 - float(level)
    if abs(alpha - float(conformal["alpha"])) < 1e-9:
        return [float(q) for q in conformal["quantiles"]]
    scores = conformal.get("scores")
    if scores is None:
        return None
    return [conformal_quantile(s, alpha) for s in scores]


def calibration_record(model: dict | None, ensemble: dict | None = None) -> dict:
    """ckpt["calibration"] from a model ENTRY and an optional ensemble ENTRY."""
    return {"version": VERSION, "model": model, "ensemble": ensemble}


def member_id(ckpt: dict) -> list:
    """How an ensemble ENTRY names a checkpoint: [seed, created] (created: its timestamp)."""
    return [int(ckpt.get("seed", -1)), ckpt.get("created")]


def entry_of(record: dict | None, members: Sequence[Sequence] | None = None) -> dict | None:
    """The ENTRY that applies: the model's (members None) or the ensemble's whose members are
    exactly `members` (in any order); None when the checkpoint holds none that fits (written
    before calibration existed, an unfinished replicate, or another set of members)."""
    if not isinstance(record, dict) or record.get("version") != VERSION:
        return None
    if members is None:
        return record.get("model")
    entry = record.get("ensemble")
    if not isinstance(entry, dict):
        return None
    wanted = sorted((int(s), str(c)) for s, c in members)
    held = sorted((int(s), str(c)) for s, c in entry.get("members", []))
    return entry if wanted == held else None


@dataclass
class Calibrated:
    """Calibrated predictions of N molecules.

    probabilities: {"temperature": [N, O], "isotonic": [N, T]} (those the entry holds;
        classification);
    sigma: float64 [N, T] z-scaled sigma (regression with a sigma), else None;
    lower, upper: float64 [N, T] conformal interval (regression), else None; alpha: its
        miscoverage.
    """

    probabilities: dict
    sigma: np.ndarray | None = None
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    alpha: float | None = None


def apply_entry(entry: dict, outputs: Outputs, task: str) -> Calibrated:
    """Apply an ENTRY's calibrators to Outputs of the same model (or ensemble)."""
    calibrators = {name: calibrator_from_dict(data)
                   for name, data in entry.get("calibrators", {}).items()}
    alpha = entry.get("alpha")
    if task != "regression":
        found = {}
        if "temperature" in calibrators:
            found["temperature"] = calibrators["temperature"].apply(outputs.logits)
        if "isotonic" in calibrators:
            found["isotonic"] = calibrators["isotonic"].apply(outputs.values)
        return Calibrated(found, alpha=alpha)
    sigma = outputs.sigma
    if sigma is not None and "sigma_scaling" in calibrators:
        sigma = calibrators["sigma_scaling"].apply(sigma)
    lower = upper = None
    conformal = calibrators.get("conformal")
    if conformal is not None and (sigma is not None or not conformal.normalized):
        lower, upper = conformal.apply(outputs.values, sigma if conformal.normalized else None)
    return Calibrated({}, sigma if outputs.sigma is not None else None, lower, upper,
                      None if alpha is None else float(alpha))


def describe_entry(entry: dict | None) -> str:
    """One line: what an ENTRY holds and where it was fitted."""
    if not entry:
        return "no calibration"
    fitted = entry.get("fitted_on", {})
    names = ", ".join(entry.get("calibrators", {}))
    alpha = entry.get("alpha")
    level = "" if alpha is None else f", {100 * (1 - alpha):g}% intervals"
    return (f"{names} fitted on {fitted.get('n', '?')} molecules ({fitted.get('split', '?')} of "
            f"{fitted.get('data', '?')}){level if 'conformal' in names else ''}")
