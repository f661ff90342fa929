"""What `molsam predict` adds beside each prediction (issue 23): uncertainty, calibrated
probabilities, conformal intervals and the applicability domain.

PredictOptions (the command line's --uncertainty, --samples, --seed, --no-calibration,
--interval, --no-domain) and the checkpoints give one Plan per run (plan_for: every refusal is
a one-line ConfigError before any row is read); each block of valid molecules then gets its
BlockExtras (block_extras), which molsam.predict writes as columns.

Point predictions (values, probabilities) are always those of the models in eval mode,
averaged over an ensemble: the numbers the stored calibration was fitted on. Where the spread
comes from (`--uncertainty`):

- ensemble: the members' spread, population std of their means (Lakshminarayanan, Pritzel &
  Blundell, NeurIPS 2017); needs two or more checkpoints;
- mve: the model's own sigma (mean-variance estimation, Nix & Weigend 1994; train.loss: mve);
  for several MVE members the root mean of their variances;
- dropout: Monte Carlo dropout (Gal & Ghahramani, ICML 2016): --samples stochastic passes per
  member (molsam.train.inference.predict_mc_dropout), seeded from --seed, the member and the
  block, so the same input, block size and seed give the same numbers; the population std of
  the samples' means (all members' samples pooled);
- auto: several members: their spread, or, when all are MVE, the deviation of their Gaussian
  mixture sqrt(mean sigma_m^2 + var mu_m) (Lakshminarayanan et al. 2017); one MVE model: its
  sigma; one model with dropout: MC dropout; else no spread (a note says so).

Columns, per task (molsam.predict._output_layout):

- regression: `<task>_std`, the sigma above in the targets' units, z-scaled (Levi et al.,
  Sensors 2022) when the stored calibration was fitted on that very sigma (an MVE model's, an
  ensemble's spread or mixture) and --no-calibration is not given;
- classification (binary and multiclass): probabilities calibrated by the stored temperature
  (Guo et al., ICML 2017: a single model's logits, an ensemble's logits of its mean
  probability; temperature keeps the predicted class), `<task>_entropy`, the predictive
  entropy in nats of the probabilities written, and with several members or samples
  `<task>_disagreement`, the fraction of member (or sample) pairs whose predicted classes differ
  (molsam.uncertainty.metrics.pairwise_disagreement);
- --interval LEVEL (regression): `<task>_lower`, `<task>_upper`, split-conformal intervals
  (Lei et al., JASA 2018) from the stored calibration: mu +- q, or mu +- q sigma' normalized
  by the calibration's own z-scaled sigma (Papadopoulos et al. 2008) whatever --uncertainty
  says; the stored quantile at the stored level, another level from the stored calibration
  scores (molsam.train.calibration.conformal_level_quantiles), never refitted;
- domain (default): `molsam_train_similarity`, the Tanimoto similarity of the molecule's
  Morgan fingerprint (radius 2, 2048 bits) to the nearest training molecule, and
  `molsam_train_neighbors`, the number of training molecules with similarity strictly above
  0.4 (Sheridan et al., J. Chem. Inf. Comput. Sci. 2004), from the fingerprints `molsam train`
  stores in best.pt (molsam.train.domain), by bit-parallel popcounts
  (molsam.uncertainty.domain.nearest_neighbors). An ensemble searches one set: the members'
  (which share a split) or, when they differ, their union.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from molsam.errors import ConfigError

if TYPE_CHECKING:
    from molsam.data.batching import BatchSource
    from molsam.predict import Ensemble

METHODS = ("ensemble", "dropout", "mve", "auto")
#: MC-dropout passes per member when --samples is not given.
DEFAULT_SAMPLES = 20
#: molsam_train_neighbors counts training molecules with Tanimoto similarity above this.
NEIGHBOR_THRESHOLD = 0.4
#: Working memory of one similarity search block: 16 MiB ran 1.7x faster than the 64 MiB
#: default of nearest_neighbors (8,192 library molecules x 813 training molecules, 2 shared
#: cores: 26 against 16 million pairs/s), its buffers staying closer to the caches.
DOMAIN_BLOCK_BYTES = 16 << 20
SIMILARITY_COLUMN = "molsam_train_similarity"
NEIGHBORS_COLUMN = "molsam_train_neighbors"


@dataclass(frozen=True)
class PredictOptions:
    """What predict writes beside the predictions (module docstring).

    uncertainty: None (plain predictions) or one of METHODS; samples: MC-dropout passes per
    member (None: DEFAULT_SAMPLES); seed: MC-dropout seed; calibration: apply the stored
    calibration (--no-calibration: False); interval: conformal coverage level, e.g. 0.9, or
    None; domain: the applicability-domain columns (--no-domain: False).
    """

    uncertainty: str | None = None
    samples: int | None = None
    seed: int = 0
    calibration: bool = True
    interval: float | None = None
    domain: bool = True


DEFAULT_OPTIONS = PredictOptions()


@dataclass(frozen=True)
class Plan:
    """PredictOptions resolved against an ensemble's checkpoints.

    source: where the spread comes from: None, "ensemble", "ensemble_mve", "mve" or "dropout";
    samples: MC-dropout passes per member (0 unless source is "dropout");
    std / entropy / disagreement: which of those columns are written (std: regression with
        --uncertainty; the ensemble's own `_std` columns of plain predict are not counted);
    temperature: the stored temperature calibrator (to_dict) applied to probabilities, or None;
    sigma_scaling: the stored z-scaling (to_dict) applied to the written sigma, or None;
    interval: (level, quantiles [T], the calibration's sigma kind or None, its z-scaling
        to_dict or None) for --interval, else None;
    domain: the domain columns are written; notes: lines for the user (what was used, why a
        column or the calibration is missing).
    """

    source: str | None = None
    samples: int = 0
    seed: int = 0
    std: bool = False
    entropy: bool = False
    disagreement: bool = False
    temperature: dict | None = None
    sigma_scaling: dict | None = None
    interval: tuple | None = None
    domain: bool = False
    notes: tuple[str, ...] = ()


def has_dropout(model: torch.nn.Module) -> bool:
    """True when MC dropout would vary the model's outputs: a dropout layer with p > 0, or
    GPS attention dropout > 0."""
    from molsam.models.gps import DenseSelfAttention

    for module in model.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd) and module.p > 0:
            return True
        if isinstance(module, DenseSelfAttention) and getattr(module, "attn_dropout", 0) > 0:
            return True
    return False


def calibration_entry(ensemble: Ensemble) -> dict | None:
    """The stored calibration ENTRY that applies (molsam.train.calibration.entry_of): one
    checkpoint's own, or the ensemble entry fitted on exactly these members."""
    from molsam.train.calibration import entry_of

    if not ensemble.calibrations:
        return None
    if len(ensemble) == 1:
        return entry_of(ensemble.calibrations[0])
    return entry_of(ensemble.calibrations[0], ensemble.member_ids)


def _models_text(ensemble: Ensemble) -> str:
    return (str(ensemble.paths[0]) if len(ensemble) == 1
            else " ".join(str(p) for p in ensemble.paths))


def plan_for(ensemble: Ensemble, options: PredictOptions = DEFAULT_OPTIONS) -> Plan:
    """Resolve `options` against the checkpoints (module docstring).

    Raises:
        ConfigError: one line: an unknown method, a method the checkpoints cannot offer
            (ensemble of one, mve without an MVE head, dropout without dropout), --samples
            below 2 or without MC dropout, --interval outside (0, 1), on a classifier, with
            --no-calibration, without stored conformal calibration or at a level the stored
            calibration cannot give.
    """
    task, m = ensemble.task, len(ensemble)
    regression = task == "regression"
    method = options.uncertainty
    notes: list[str] = []
    if method is not None and method not in METHODS:
        raise ConfigError(f"--uncertainty: {method!r} is not one of {', '.join(METHODS)}")
    if options.samples is not None and (isinstance(options.samples, bool)
                                        or int(options.samples) < 2):
        raise ConfigError(f"--samples: MC dropout needs 2 or more passes, got {options.samples}")
    losses = ensemble.losses or ["mse"] * m
    all_mve = regression and all(loss == "mve" for loss in losses)
    dropout = any(has_dropout(model) for model in ensemble.models)

    source = None
    if method == "ensemble":
        if m < 2:
            raise ConfigError("--uncertainty ensemble needs two or more models (a run directory "
                              "with several seeds, or several checkpoints); this is one")
        source = "ensemble"
    elif method == "mve":
        if not all_mve:
            raise ConfigError("--uncertainty mve needs regression models trained with "
                              "train.loss: mve (a mean and a variance per target); these are not")
        source = "mve"
    elif method == "dropout":
        if not dropout:
            raise ConfigError("--uncertainty dropout: the model has no dropout (model.dropout "
                              "0), so every MC-dropout pass would give the same prediction")
        source = "dropout"
    elif method == "auto":
        if m > 1:
            source = "ensemble_mve" if all_mve else "ensemble"
        elif all_mve:
            source = "mve"
        elif dropout:
            source = "dropout"
        else:
            notes.append("uncertainty: one model without an MVE head or dropout gives no "
                         "spread" + (" (no _std column)" if regression else
                                     " (no _disagreement column)"))
    if options.samples is not None and source != "dropout":
        if method in ("ensemble", "mve") or method is None:
            raise ConfigError("--samples is for MC dropout (--uncertainty dropout, or auto on "
                              "one model with dropout)")
        notes.append(f"--samples {options.samples} unused: auto uses the {source or 'no'} spread")
    samples = (options.samples or DEFAULT_SAMPLES) if source == "dropout" else 0

    entry = calibration_entry(ensemble) if options.calibration else None
    calibrators = (entry or {}).get("calibrators", {})
    temperature = sigma_scaling = None
    if method is not None:
        if source is not None:
            what = {"ensemble": f"spread of {m} models", "ensemble_mve":
                    f"Gaussian mixture of {m} MVE models", "mve": "MVE sigma" if m == 1 else
                    f"MVE sigma of {m} models", "dropout": f"MC dropout, {samples} passes per "
                    f"model, seed {options.seed}"}[source]
            notes.append(f"uncertainty: {what}")
        if not options.calibration:
            notes.append("calibration: off (--no-calibration)")
        elif entry is None:
            notes.append("calibration: none stored for " + (
                f"{ensemble.paths[0]} (run `molsam calibrate`)" if m == 1 else
                f"this ensemble of {m} checkpoints (calibrate them together with "
                "`molsam calibrate`)") + "; uncalibrated")
        elif regression:
            if source is not None and entry.get("sigma") == source and \
                    "sigma_scaling" in calibrators:
                sigma_scaling = calibrators["sigma_scaling"]
                notes.append(f"calibration: _std z-scaled ({_fitted(entry)})")
            elif source is not None:
                fitted = entry.get("sigma")
                notes.append("calibration: _std not z-scaled (the stored calibration was "
                             f"fitted {f'on the {fitted} sigma' if fitted else 'without a sigma'}"
                             f", not on the {source} one)")
        elif "temperature" in calibrators:
            temperature = calibrators["temperature"]
            notes.append(f"calibration: probabilities temperature-scaled ({_fitted(entry)})")

    interval = None
    if options.interval is not None:
        interval = _interval(ensemble, options, entry if options.calibration else None)

    domain = False
    if options.domain:
        if ensemble.domain is not None:
            domain = True
        else:
            notes.append(f"no {SIMILARITY_COLUMN}, {NEIGHBORS_COLUMN} columns: "
                         f"{ensemble.domain_note}")
    return Plan(
        source=source, samples=samples, seed=int(options.seed),
        std=method is not None and regression and source is not None,
        entropy=method is not None and not regression,
        disagreement=(method is not None and not regression
                      and (source == "ensemble" or source == "dropout")),
        temperature=temperature, sigma_scaling=sigma_scaling, interval=interval,
        domain=domain, notes=tuple(notes),
    )


def _fitted(entry: dict) -> str:
    fitted = entry.get("fitted_on", {})
    return f"fitted on {fitted.get('n', '?')} molecules, {fitted.get('split', '?')}"


def _interval(ensemble: Ensemble, options: PredictOptions, entry: dict | None) -> tuple:
    from molsam.train.calibration import conformal_level_quantiles

    level = options.interval
    if isinstance(level, bool) or not 0.0 < float(level) < 1.0:
        raise ConfigError(f"--interval: expected a coverage level in (0, 1), e.g. 0.9 for 90% "
                          f"intervals, got {level!r}")
    level = float(level)
    if ensemble.task != "regression":
        raise ConfigError(f"--interval: conformal intervals are for regression models; this "
                          f"one is {ensemble.task} (its probabilities are calibrated with "
                          "--uncertainty)")
    if not options.calibration:
        raise ConfigError("--interval comes from the stored calibration: drop --no-calibration")
    models = _models_text(ensemble)
    conformal = None if entry is None else entry.get("calibrators", {}).get("conformal")
    if conformal is None:
        held = ("holds no conformal calibration" if len(ensemble) == 1 else
                f"hold no conformal calibration of this ensemble of {len(ensemble)}")
        raise ConfigError(f"--interval: {models} {held}; run `molsam calibrate {models}` first")
    quantiles = conformal_level_quantiles(conformal, level)
    if quantiles is None:
        stored = 1.0 - float(conformal["alpha"])
        raise ConfigError(
            f"--interval {level:g}: the stored conformal calibration gives {stored:g} intervals "
            f"and holds no scores for another level; run `molsam calibrate {models} --alpha "
            f"{1.0 - level:.6g}`")
    scaling = entry.get("calibrators", {}).get("sigma_scaling") if conformal["normalized"] \
        else None
    kind = entry.get("sigma") if conformal["normalized"] else None
    return (level, tuple(quantiles), kind, scaling)


# --------------------------------------------------------------------------- per block


@dataclass
class BlockExtras:
    """What a Plan adds for the G valid molecules of a block (rows follow the block's valid
    positions); each None when not written.

    values: float64 [G, O] probabilities to write instead of the plain mean (calibrated);
    sigma, lower, upper, entropy, disagreement: float64 [G, T];
    similarity, neighbors: float64 [G] (neighbors: whole numbers).
    """

    values: np.ndarray | None = None
    sigma: np.ndarray | None = None
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    entropy: np.ndarray | None = None
    disagreement: np.ndarray | None = None
    similarity: np.ndarray | None = None
    neighbors: np.ndarray | None = None


def dropout_seed(seed: int, member: int, block: int, batch: int) -> int:
    """The MC-dropout seed of one batch: a SeedSequence of (seed, member, block, batch), so
    batches and members never share masks and a rerun draws the same ones."""
    return int(np.random.SeedSequence([int(seed), member, block, batch]).generate_state(1)[0])


def mc_dropout_values(
    ensemble: Ensemble, source: BatchSource, indices: np.ndarray, samples: int, seed: int,
    block: int = 0, batch_size: int | None = None,
) -> np.ndarray:
    """MC-dropout predictions in output units of every member: float64 [M * S, G, O] (member
    m's S samples at rows m*S .. m*S+S-1; regression: means), rows following `indices`.

    Batched by molecule size like Ensemble.predict_source (padded_batches), each batch seeded
    by dropout_seed."""
    from molsam.predict import default_batch_size, size_sorted_batches
    from molsam.train.inference import predict_mc_dropout, to_output_units

    indices = np.asarray(indices, dtype=np.int64)
    order, inverse, batches = size_sorted_batches(
        source, indices, batch_size or default_batch_size(ensemble.device))
    losses = ensemble.losses or ["mse"] * len(ensemble)
    out = np.empty((len(ensemble) * samples, len(indices), ensemble.num_outputs))
    with torch.inference_mode():
        for m, (model, scaler) in enumerate(zip(ensemble.models, ensemble.scalers)):
            parts = [
                predict_mc_dropout(model, source, indices[order[lo:hi]], samples,
                                   seed=dropout_seed(seed, m, block, b), batch_size=hi - lo)
                for b, (lo, hi) in enumerate(batches)
            ]
            raw = (torch.cat(parts, dim=1).cpu().numpy() if parts
                   else np.zeros((samples, 0, model.num_tasks), dtype=np.float32))
            for s in range(samples):
                out[m * samples + s] = to_output_units(
                    raw[s][inverse], ensemble.task, scaler, ensemble.num_classes, losses[m])
    return out


def block_extras(
    ensemble: Ensemble,
    plan: Plan,
    raw: list[np.ndarray],
    values: np.ndarray,
    source: BatchSource | None = None,
    indices: np.ndarray | None = None,
    fingerprints: np.ndarray | None = None,
    block: int = 0,
    batch_size: int | None = None,
) -> BlockExtras:
    """The plan's extra numbers for G valid molecules.

    raw: each member's raw outputs [G, O_raw] (Ensemble.raw_outputs); values: [M, G, O] in
    output units; source, indices: where the molecules are (MC dropout scores them again);
    fingerprints: uint8 [G, 256] packed Morgan fingerprints (domain); block: the block's
    number in its file (seeds MC dropout).
    """
    from molsam.uncertainty import (
        calibrator_from_dict,
        pairwise_disagreement,
        predictive_entropy,
    )

    out = BlockExtras()
    task, k = ensemble.task, ensemble.num_classes
    losses = ensemble.losses or ["mse"] * len(ensemble)
    mean = values.mean(axis=0)
    sampled = None
    if plan.source == "dropout" and (plan.std or plan.disagreement):
        sampled = mc_dropout_values(ensemble, source, indices, plan.samples, plan.seed, block,
                                    batch_size)
    if task == "regression":
        if plan.std:
            sigma = _sigma(plan.source, raw, values, ensemble.scalers, losses, sampled)
            if plan.sigma_scaling is not None:
                sigma = calibrator_from_dict(plan.sigma_scaling).apply(sigma)
            out.sigma = sigma
        if plan.interval is not None:
            _, quantiles, kind, scaling = plan.interval
            half = np.broadcast_to(np.asarray(quantiles, dtype=np.float64), mean.shape)
            if kind is not None:
                sigma = _sigma(kind, raw, values, ensemble.scalers, losses, None)
                if scaling is not None:
                    sigma = calibrator_from_dict(scaling).apply(sigma)
                with np.errstate(invalid="ignore"):  # inf * 0: an unknown width, NaN
                    half = half * sigma
            out.lower, out.upper = mean - half, mean + half
    else:
        probabilities = mean
        if plan.temperature is not None:
            from molsam.uncertainty import logits_from_probabilities

            logits = (np.asarray(raw[0], dtype=np.float64) if len(ensemble) == 1
                      else logits_from_probabilities(mean, k))
            probabilities = calibrator_from_dict(plan.temperature).apply(logits)
            out.values = probabilities
        if plan.entropy:
            out.entropy = predictive_entropy(probabilities, k)
        if plan.disagreement:
            out.disagreement = pairwise_disagreement(
                sampled if plan.source == "dropout" else values, k)
    if plan.domain and fingerprints is not None:
        from molsam.uncertainty.domain import Fingerprints, nearest_neighbors

        query = Fingerprints(fingerprints, np.ones(len(fingerprints), dtype=bool))
        found = nearest_neighbors(query, ensemble.domain, threshold=NEIGHBOR_THRESHOLD,
                                  max_block_bytes=DOMAIN_BLOCK_BYTES, strict=True)
        out.similarity, out.neighbors = found.similarity, found.n_similar
    return out


def _sigma(kind: str, raw, values, scalers, losses, sampled) -> np.ndarray:
    """A regression sigma [G, T] in the targets' units (module docstring)."""
    from molsam.train.inference import mean_and_sigma

    if kind == "dropout":
        return sampled.std(axis=0)
    if kind == "ensemble":
        return values.std(axis=0)
    own = np.stack([mean_and_sigma(r, s)[1] for r, s, loss in zip(raw, scalers, losses)
                    if loss == "mve"])
    if kind == "mve":
        return np.sqrt((own ** 2).mean(axis=0))
    if kind == "ensemble_mve":
        return np.sqrt((own ** 2).mean(axis=0) + values.var(axis=0))
    raise ValueError(f"unknown sigma kind {kind!r}")
