"""Scoring checkpoints and ensembles on labeled molecules.

Two sources of labeled molecules:
- a run's own saved split (no data given): the checkpoint's recipe names the data, splits.json
  (next to the checkpoint or one folder up, as `molsam train` lays out RUN_DIR/seed_<s>/best.pt)
  holds the store indices of train/val/test;
- a file or dataset name (`data`): every valid molecule, labels read from the columns named by
  the checkpoint's target names.

Each checkpoint is scored alone and, when there are several, their mean prediction (in output
units: probabilities or original units) is scored as the ensemble. Metrics come from
molsam.train.metrics.task_metrics (missing labels masked, single-class tasks skipped and counted).

Uncertainty is judged beside accuracy (issue 23; molsam.uncertainty.metrics), per checkpoint
and for the ensemble, with the calibration each checkpoint stores (molsam.train.calibration):
- regression with a sigma (an MVE head, train.loss: mve, or an ensemble's spread): Gaussian
  NLL, Spearman(|error|, sigma), miscalibration area and ENCE, before and after z-scaling;
  with stored conformal intervals their coverage and mean width (also without a sigma);
- classification: ECE and Brier score before and after temperature scaling (and isotonic
  regression for binary tasks);
- per-molecule error by tercile of nearest-neighbour Tanimoto similarity to the run's
  training molecules (Morgan fingerprints of splits.json's training SMILES,
  molsam.uncertainty.domain).
`write_uncertainty_plots` draws the reliability diagram and error against sigma as PNGs.
`targets` ({model task: file column}, `--target`) scores a file whose label columns have
other names.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from molsam.data.datasets import is_dataset_name
from molsam.data.pipeline import DataSpec, load_store
from molsam.data.split_stats import saved_split_indices
from molsam.data.store import GraphStore
from molsam.data.read_options import DEFAULT, ReadOptions
from molsam.data.table import iter_table
from molsam.errors import CheckpointError, ConfigError, InputError
from molsam.predict import Ensemble, load_ensemble
from molsam.train.calibration import (
    Calibrated,
    Outputs,
    apply_entry,
    describe_entry,
    ensemble_outputs,
    entry_of,
    member_id,
    outputs_from_raw,
)
from molsam.train.checkpoint import checkpoint_loss, load_checkpoint
from molsam.train.metrics import task_metrics

SPLITS = ("test", "val", "train", "all")
SPLITS_FILE = "splits.json"


@dataclass
class Evaluation:
    """Scores of each member and of the ensemble (None for a single checkpoint) on n molecules.

    members: [(checkpoint path, task_metrics result)]; ensemble: task_metrics result or None.
    uncertainty: {"members": [report per checkpoint], "ensemble": report or None,
    "similarity": how training similarity was measured} (uncertainty_report gives a report);
    targets: {model task: data column} where --target renamed one; plots: PNGs written.
    """

    data: str
    split: str
    n: int
    task: str
    target_names: list[str]
    members: list[tuple[Path, dict]]
    ensemble: dict | None
    uncertainty: dict | None = None
    targets: dict = field(default_factory=dict)
    plots: list[Path] = field(default_factory=list)
    #: What the final report was computed from (labels, Outputs, Calibrated, similarity),
    #: for write_uncertainty_plots; not part of the JSON.
    arrays: dict | None = field(default=None, repr=False)

    @property
    def final(self) -> dict:
        """The scores to report: the ensemble's, or the single checkpoint's."""
        return self.ensemble if self.ensemble is not None else self.members[0][1]

    @property
    def final_uncertainty(self) -> dict | None:
        """The uncertainty report of the ensemble, or of the single checkpoint."""
        if self.uncertainty is None:
            return None
        if self.uncertainty.get("ensemble") is not None:
            return self.uncertainty["ensemble"]
        return self.uncertainty["members"][0] if self.uncertainty["members"] else None

    def to_dict(self) -> dict:
        """Plain JSON-ready dict."""
        return {
            "data": self.data,
            "split": self.split,
            "n": self.n,
            "task": self.task,
            "target_names": self.target_names,
            "targets": dict(self.targets),
            "members": [{"checkpoint": str(p), "metrics": m} for p, m in self.members],
            "ensemble": self.ensemble,
            "uncertainty": self.uncertainty,
            "plots": [str(p) for p in self.plots],
        }

    def write_json(self, path: str | Path) -> Path:
        """Atomically (temp file + rename): a full disk leaves an earlier report whole."""
        from molsam.outputs import naming, plain_mode, temp_beside

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        fd, temp = temp_beside(path)
        try:
            plain_mode(fd)
            with naming(path, temp):
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(text)
                os.replace(temp, path)
        finally:
            if os.path.exists(temp):
                os.unlink(temp)
        return path


def find_splits_file(checkpoint: Path) -> Path | None:
    """splits.json of the run a checkpoint belongs to: its folder, or the folder above
    (RUN_DIR/seed_<s>/best.pt)."""
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        if (folder / SPLITS_FILE).is_file():
            return folder / SPLITS_FILE
    return None


def _recipe_spec(ensemble: Ensemble) -> DataSpec:
    data = ensemble.recipe.get("data")
    if not isinstance(data, dict) or not data.get("path"):
        raise CheckpointError(
            f"{ensemble.paths[0]}: checkpoint recipe has no data.path; pass --data"
        )
    targets = data.get("target_columns")
    return DataSpec(
        data=str(data["path"]),
        smiles_column=data.get("smiles_column"),
        target_columns=list(targets) if targets is not None else None,
        id_column=data.get("id_column"),
        task=data.get("task"),
        read=ReadOptions.from_recipe(data),  # data.delimiter, .decimal, .sheet (None if absent)
        feature_columns=feature_columns(ensemble),
    )


def feature_columns(ensemble: Ensemble) -> tuple[str, ...] | None:
    """The input columns the models read as features (the recipe's data.feature_columns)."""
    data = ensemble.recipe.get("data") if isinstance(ensemble.recipe, dict) else None
    columns = (data or {}).get("feature_columns")
    return tuple(columns) if columns else None


def _labels(store: GraphStore, target_names: Sequence[str]) -> np.ndarray:
    """[G, T] labels in the checkpoint's target order."""
    missing = [t for t in target_names if t not in store.target_names]
    if missing:
        raise InputError(
            f"{store.source}: no label column {missing[0]!r} the model predicts "
            f"(label columns: {', '.join(map(repr, store.target_names)) or 'none'})"
        )
    return store.y[:, [store.target_names.index(t) for t in target_names]]


def label_columns(ensemble: Ensemble, targets: Mapping[str, str] | None = None) -> list[str]:
    """The data column holding each model task's labels: the task's own name, or the column
    `targets` maps it to (--target TASK=COLUMN)."""
    targets = dict(targets or {})
    unknown = [task for task in targets if task not in ensemble.target_names]
    if unknown:
        raise ConfigError(
            f"--target {unknown[0]}={targets[unknown[0]]}: the model has no task "
            f"{unknown[0]!r} (its tasks: {', '.join(map(repr, ensemble.target_names))})"
        )
    columns = [targets.get(task, task) for task in ensemble.target_names]
    for column in dict.fromkeys(columns):
        tasks = [t for t, c in zip(ensemble.target_names, columns) if c == column]
        if len(tasks) > 1:
            raise ConfigError(f"--target: column {column!r} would label several tasks "
                              f"({', '.join(tasks)})")
    return columns


def _data_spec(
    data: str, ensemble: Ensemble, smiles_column: str | None, read: ReadOptions = DEFAULT,
    targets: Mapping[str, str] | None = None,
) -> DataSpec:
    """Spec for --data: the checkpoint's target names (or the columns `targets` maps them to)
    as label columns, its SMILES column unless the file lacks it (then `smiles`), or
    --smiles-col; read with `read`."""
    columns = label_columns(ensemble, targets)
    if is_dataset_name(data):
        return DataSpec(data, smiles_column, columns, None, ensemble.task, read,
                        feature_columns(ensemble))
    header, _ = iter_table(Path(data).expanduser(), read=read)
    # In an SD file the structure is the record's own (`smiles`), whatever the training column.
    if smiles_column is None and ensemble.smiles_column and header.unit != "record":
        try:
            header.column_index(ensemble.smiles_column, "SMILES", "--smiles-col")
            smiles_column = ensemble.smiles_column
        except InputError:
            smiles_column = None  # DataSpec's default: `smiles`
    for task, name in zip(ensemble.target_names, columns):
        try:
            header.column_index(name, "label", "--data")
        except InputError:
            found = ", ".join(map(repr, header.columns))
            if name != task:
                raise InputError(
                    f"{header.path}: no label column {name!r} (--target {task}={name}) "
                    f"(columns: {found})"
                ) from None
            raise InputError(
                f"{header.path}: no label column {name!r} the model predicts (columns: {found}); "
                f"--target {task}=COLUMN scores another column"
            ) from None
    return DataSpec(data, smiles_column, columns, None, ensemble.task, read,
                    feature_columns(ensemble))


@dataclass
class LabeledMolecules:
    """Molecules `indices` of `store` with their labels in the checkpoint's target order.

    labels: float [len(indices), T], NaN where missing; split: the part scored (or "all");
    source_name: a readable description (file, and which split of which splits.json).
    """

    store: GraphStore
    indices: np.ndarray
    labels: np.ndarray
    split: str
    source_name: str


def labeled_molecules(
    ensemble: Ensemble,
    data: str | None = None,
    *,
    split: str | None = None,
    default_split: str = "test",
    smiles_column: str | None = None,
    workers: int | None = None,
    read: ReadOptions = DEFAULT,
    targets: Mapping[str, str] | None = None,
) -> LabeledMolecules:
    """The molecules a checkpoint is scored (or measured) on: a part of its run's saved split
    (`data` None; `split`, else `default_split`), or every valid molecule of `data` (read with
    `read`; a saved split's data as the checkpoint's recipe says). `targets` maps model tasks
    to the columns of `data` holding their labels (--target TASK=COLUMN).

    Raises:
        ConfigError: unknown split, or a split other than all with `data`.
        InputError, CheckpointError: no splits.json, a changed data file, a missing label column.
    """
    if split is not None and split not in SPLITS:
        raise ConfigError(f"--split: {split!r} is not one of {', '.join(SPLITS)}")
    if targets and data is None:
        raise ConfigError("--target names label columns of --data (a run's saved split has "
                          "the columns the model was trained on)")
    columns = list(ensemble.target_names)
    if data is None:
        split = split or default_split
        splits_path = find_splits_file(ensemble.paths[0])
        if splits_path is None:
            raise InputError(
                f"{ensemble.paths[0]}: no {SPLITS_FILE} in its folder or the one above; "
                "pass --data to score a file"
            )
        store = load_store(_recipe_spec(ensemble), rwse_steps=ensemble.rwse_steps,
                           extras=ensemble.extras, workers=workers, classes=ensemble.classes)
        indices = saved_split_indices(splits_path, split, store)
        source_name = f"{store.source} ({split} split of {splits_path})"
    else:
        if split not in (None, "all"):
            raise ConfigError(
                f"--split {split}: with --data every valid molecule is scored; --split selects a "
                "part of a run's saved split (omit --data)"
            )
        split = "all"
        spec = _data_spec(data, ensemble, smiles_column, read, targets)
        columns = list(spec.target_columns)
        # Labels coded with the model's classes (a file may hold fewer, or in another order).
        store = load_store(spec, rwse_steps=ensemble.rwse_steps, extras=ensemble.extras,
                           workers=workers, classes=ensemble.classes)
        indices = np.arange(len(store))
        source_name = store.source or data
    labels = _labels(store, columns)[indices]
    return LabeledMolecules(store, indices, labels, split, str(source_name))


def evaluate(
    models: Sequence[str | Path],
    data: str | None = None,
    *,
    split: str | None = None,
    smiles_column: str | None = None,
    device: str | torch.device = "auto",
    batch_size: int | None = None,
    workers: int | None = None,
    read: ReadOptions = DEFAULT,
    targets: Mapping[str, str] | None = None,
) -> Evaluation:
    """Score checkpoints (files or run directories) individually and as an ensemble: accuracy
    (task_metrics) and uncertainty (uncertainty_report).

    Args:
        data: data file (CSV/TSV, SD, SMILES, Excel, Parquet) or dataset name whose valid
            molecules are all scored; None re-scores the run's saved split.
        split: test (default), val, train or all; only for a run's saved split.
        read: delimiter, decimal mark and sheet of `data` (a run's saved split is read as its
            recipe's data.delimiter, data.decimal and data.sheet say).
        targets: {model task: column of `data`} for label columns named otherwise.

    Raises:
        CheckpointError, InputError, ConfigError: one-line messages naming the file at fault.
    """
    if split is not None and split not in SPLITS:  # before loading anything
        raise ConfigError(f"--split: {split!r} is not one of {', '.join(SPLITS)}")
    if targets and data is None:
        raise ConfigError("--target names label columns of --data (a run's saved split has "
                          "the columns the model was trained on)")
    ensemble = load_ensemble(models, device)
    labeled = labeled_molecules(ensemble, data, split=split, smiles_column=smiles_column,
                                workers=workers, read=read, targets=targets)
    store, indices, y = labeled.store, labeled.indices, labeled.labels
    split, source_name = labeled.split, labeled.source_name
    source = store.batch_source(ensemble.device)
    infos = [checkpoint_info(path) for path in ensemble.paths]
    outputs = [
        outputs_from_raw(raw, ensemble.task, scaler, ensemble.num_classes, info["loss"])
        for raw, scaler, info in zip(ensemble.raw_outputs(source, indices, batch_size),
                                     ensemble.scalers, infos)
    ]
    per_member = np.stack([o.values for o in outputs])  # [M, N, O] in output units
    names = ensemble.target_names
    classes = ensemble.classes
    members = [
        (path, task_metrics(y, pred, ensemble.task, names, classes=classes))
        for path, pred in zip(ensemble.paths, per_member)
    ]
    scored = None
    if len(ensemble) > 1:  # mean in output units: averaged probabilities for multiclass
        scored = task_metrics(y, per_member.mean(axis=0), ensemble.task, names, classes=classes)

    similarity, similarity_info = training_similarity(ensemble.paths[0],
                                                      [store.smiles[i] for i in indices])
    reports, calibrated = [], []
    for output, info in zip(outputs, infos):
        report, applied = uncertainty_report(y, output, entry_of(info["calibration"]),
                                             ensemble.task, ensemble.num_classes, names,
                                             similarity)
        reports.append(report)
        calibrated.append(applied)
    final = (outputs[0], calibrated[0])
    ensemble_report = None
    if len(ensemble) > 1:
        # The ensemble's own calibration, fitted on these very members (molsam train with
        # several seeds, molsam calibrate RUN); the first checkpoint's copy is as good as any.
        combined = ensemble_outputs(outputs, ensemble.task, ensemble.num_classes)
        entry = entry_of(infos[0]["calibration"], [info["member"] for info in infos])
        ensemble_report, applied = uncertainty_report(y, combined, entry, ensemble.task,
                                                      ensemble.num_classes, names, similarity)
        final = (combined, applied)
    return Evaluation(
        data=str(source_name),
        split=split,
        n=len(indices),
        task=ensemble.task,
        target_names=list(names),
        members=members,
        ensemble=scored,
        uncertainty={"members": reports, "ensemble": ensemble_report,
                     "similarity": similarity_info},
        targets={t: c for t, c in (targets or {}).items() if t != c},
        arrays={"y": y, "outputs": final[0], "calibrated": final[1],
                "similarity": similarity, "num_classes": ensemble.num_classes},
    )


# --------------------------------------------------------------------------- uncertainty


def checkpoint_info(path: Path) -> dict:
    """What evaluate reads from a checkpoint besides the model: its loss ("mse" for one
    written before the key), its calibration (None if none) and its ensemble member id."""
    ckpt = load_checkpoint(path)
    return {"loss": checkpoint_loss(ckpt), "calibration": ckpt.get("calibration"),
            "member": member_id(ckpt)}


def training_similarity(
    checkpoint: Path, smiles: Sequence[str]
) -> tuple[np.ndarray | None, dict]:
    """Nearest-neighbour Tanimoto similarity of each scored molecule to the training molecules
    of `checkpoint`'s run (Morgan fingerprints, radius 2, 2048 bits, of splits.json's training
    SMILES): (float [N] or None, a JSON-ready description, with "unavailable" when it cannot be
    measured)."""
    splits_path = find_splits_file(Path(checkpoint))
    if splits_path is None:
        return None, {"unavailable": f"no {SPLITS_FILE} beside {checkpoint}: its training "
                                     "molecules are unknown"}
    try:
        saved = json.loads(splits_path.read_text(encoding="utf-8"))
        train = saved["train"]["smiles"]
    except (OSError, ValueError, KeyError, TypeError):
        return None, {"unavailable": f"{splits_path} holds no training SMILES"}
    try:
        from molsam.uncertainty import morgan_fingerprints, nearest_neighbors
        from molsam.uncertainty.domain import N_BITS, RADIUS

        reference = morgan_fingerprints(train)
        neighbors = nearest_neighbors(morgan_fingerprints(list(smiles)), reference)
    except ImportError:
        return None, {"unavailable": "RDKit is not installed (it makes the fingerprints)"}
    return neighbors.similarity, {"splits": str(splits_path), "train_molecules": len(train),
                                  "fingerprint": f"Morgan radius {RADIUS}, {N_BITS} bits",
                                  "measure": "Tanimoto to the nearest training molecule"}


def molecule_errors(y: np.ndarray, values: np.ndarray, task: str,
                    num_classes: Sequence[int] | None = None) -> np.ndarray:
    """Per molecule and task, [N, T], NaN where unlabelled: |y - mu| (regression), (p - y)^2
    (binary), sum_k (p_k - [y = k])^2 (multiclass, the Brier score of the molecule)."""
    if task != "multiclass":
        from molsam.uncertainty import per_molecule_error

        return per_molecule_error(y, values, task)
    out = np.full(y.shape, np.nan)
    start = 0
    for t, k in enumerate(num_classes or []):
        labelled = ~np.isnan(y[:, t])
        onehot = np.zeros((int(labelled.sum()), k))
        onehot[np.arange(len(onehot)), y[labelled, t].astype(np.int64)] = 1.0
        out[labelled, t] = np.sum((values[labelled, start : start + k] - onehot) ** 2, axis=1)
        start += k
    return out


def uncertainty_report(
    y: np.ndarray,
    outputs: Outputs,
    entry: dict | None,
    task: str,
    num_classes: Sequence[int] | None,
    target_names: Sequence[str],
    similarity: np.ndarray | None = None,
) -> tuple[dict, Calibrated | None]:
    """How good one model's (or an ensemble's) uncertainties are on labels y [N, T].

    Returns ({"calibration": the stored ENTRY used, described, or None; "sigma": where sigma
    comes from or None; regression: "uncalibrated" (nll, spearman, miscalibration_area, ence
    of the raw sigma, None without one) and "calibrated" (the same of the z-scaled sigma, and
    coverage and width of the conformal intervals; None without calibration); classification:
    "uncalibrated", "temperature" and (binary) "isotonic", each ece, brier and entropy;
    "by_similarity": error_by_similarity terciles or None}, the calibrated predictions).
    Every metric block is molsam.uncertainty.metrics' report form (per task and mean)."""
    from molsam.uncertainty import (
        classification_report,
        error_by_similarity,
        regression_report,
    )

    calibrated = apply_entry(entry, outputs, task) if entry is not None else None
    report: dict = {
        "calibration": None if entry is None else {
            "fitted_on": entry.get("fitted_on"), "alpha": entry.get("alpha"),
            "calibrators": list(entry.get("calibrators", {})),
            "description": describe_entry(entry)},
        "sigma": outputs.sigma_kind,
    }
    if task == "regression":
        sigma = outputs.sigma
        report["uncalibrated"] = (regression_report(y, outputs.values, sigma,
                                                    target_names=target_names)
                                  if sigma is not None else None)
        report["calibrated"] = None
        if calibrated is not None and (calibrated.sigma is not None
                                       or calibrated.lower is not None):
            report["calibrated"] = regression_report(
                y, outputs.values, calibrated.sigma, calibrated.lower, calibrated.upper,
                target_names=target_names)
            report["calibrated"]["alpha"] = calibrated.alpha
    else:
        k = num_classes if task == "multiclass" else None
        report["uncalibrated"] = classification_report(y, outputs.values, k,
                                                       target_names=target_names)
        for name in ("temperature", "isotonic"):
            found = None if calibrated is None else calibrated.probabilities.get(name)
            report[name] = (None if found is None else
                            classification_report(y, found, k, target_names=target_names))
    report["by_similarity"] = None
    if similarity is not None:
        errors = molecule_errors(y, outputs.values, task, num_classes)
        binned = error_by_similarity(similarity, errors)
        binned["error"] = ("absolute error" if task == "regression" else
                           "squared error of the probability" if task == "classification"
                           else "Brier score")
        report["by_similarity"] = binned
    return report, calibrated


def write_uncertainty_plots(result: Evaluation, prefix: str | Path) -> list[Path]:
    """PNGs beside an evaluation output `prefix` (e.g. eval.json): `<stem>.reliability.png`
    (classification: predicted probability against observed frequency, before and after
    calibration; regression with a sigma: expected against observed coverage of Gaussian
    intervals, before and after z-scaling) and, for regression with a sigma,
    `<stem>.error_vs_sigma.png` (|error| against sigma, binned RMSE against RMV). Returns the
    files written (none for a regression model without a sigma); also kept in result.plots."""
    from molsam.uncertainty.plots import error_sigma_plot, regression_calibration_plot, \
        reliability_diagram

    arrays = result.arrays
    if arrays is None:
        return []
    prefix = Path(prefix)
    stem = prefix.with_suffix("") if prefix.suffix else prefix
    y, outputs, calibrated = arrays["y"], arrays["outputs"], arrays["calibrated"]
    written: list[Path] = []
    reliability = stem.parent / f"{stem.name}.reliability.png"
    if result.task != "regression":
        curves = {"uncalibrated": outputs.values}
        if calibrated is not None:
            curves.update(calibrated.probabilities)
        k = arrays["num_classes"] if result.task == "multiclass" else None
        written.append(reliability_diagram(reliability, y, curves, k, result.target_names))
    elif outputs.sigma is not None:
        sigmas = {"uncalibrated": outputs.sigma}
        if calibrated is not None and calibrated.sigma is not None:
            sigmas["z-scaled"] = calibrated.sigma
        written.append(regression_calibration_plot(reliability, y, outputs.values, sigmas,
                                                   result.target_names))
        written.append(error_sigma_plot(stem.parent / f"{stem.name}.error_vs_sigma.png", y,
                                        outputs.values, sigmas, result.target_names))
    result.plots = written
    return written
