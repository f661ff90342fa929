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
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
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
from molsam.train.metrics import task_metrics

SPLITS = ("test", "val", "train", "all")
SPLITS_FILE = "splits.json"


@dataclass
class Evaluation:
    """Scores of each member and of the ensemble (None for a single checkpoint) on n molecules.

    members: [(checkpoint path, task_metrics result)]; ensemble: task_metrics result or None.
    """

    data: str
    split: str
    n: int
    task: str
    target_names: list[str]
    members: list[tuple[Path, dict]]
    ensemble: dict | None

    @property
    def final(self) -> dict:
        """The scores to report: the ensemble's, or the single checkpoint's."""
        return self.ensemble if self.ensemble is not None else self.members[0][1]

    def to_dict(self) -> dict:
        """Plain JSON-ready dict."""
        return {
            "data": self.data,
            "split": self.split,
            "n": self.n,
            "task": self.task,
            "target_names": self.target_names,
            "members": [{"checkpoint": str(p), "metrics": m} for p, m in self.members],
            "ensemble": self.ensemble,
        }

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
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
    )


def _labels(store: GraphStore, target_names: Sequence[str]) -> np.ndarray:
    """[G, T] labels in the checkpoint's target order."""
    missing = [t for t in target_names if t not in store.target_names]
    if missing:
        raise InputError(
            f"{store.source}: no label column {missing[0]!r} the model predicts "
            f"(label columns: {', '.join(map(repr, store.target_names)) or 'none'})"
        )
    return store.y[:, [store.target_names.index(t) for t in target_names]]


def _data_spec(
    data: str, ensemble: Ensemble, smiles_column: str | None, read: ReadOptions = DEFAULT
) -> DataSpec:
    """Spec for --data: the checkpoint's target names as label columns, its SMILES column
    unless the file lacks it (then `smiles`), or --smiles-col; read with `read`."""
    if is_dataset_name(data):
        return DataSpec(data, smiles_column, list(ensemble.target_names), None, ensemble.task,
                        read)
    header, _ = iter_table(Path(data).expanduser(), read=read)
    # In an SD file the structure is the record's own (`smiles`), whatever the training column.
    if smiles_column is None and ensemble.smiles_column and header.unit != "record":
        try:
            header.column_index(ensemble.smiles_column, "SMILES", "--smiles-col")
            smiles_column = ensemble.smiles_column
        except InputError:
            smiles_column = None  # DataSpec's default: `smiles`
    for name in ensemble.target_names:
        try:
            header.column_index(name, "label", "--data")
        except InputError:
            columns = ", ".join(map(repr, header.columns))
            raise InputError(
                f"{header.path}: no label column {name!r} the model predicts (columns: {columns})"
            ) from None
    return DataSpec(data, smiles_column, list(ensemble.target_names), None, ensemble.task, read)


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
) -> LabeledMolecules:
    """The molecules a checkpoint is scored (or measured) on: a part of its run's saved split
    (`data` None; `split`, else `default_split`), or every valid molecule of `data` (read with
    `read`; a saved split's data as the checkpoint's recipe says).

    Raises:
        ConfigError: unknown split, or a split other than all with `data`.
        InputError, CheckpointError: no splits.json, a changed data file, a missing label column.
    """
    if split is not None and split not in SPLITS:
        raise ConfigError(f"--split: {split!r} is not one of {', '.join(SPLITS)}")
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
        spec = _data_spec(data, ensemble, smiles_column, read)
        # Labels coded with the model's classes (a file may hold fewer, or in another order).
        store = load_store(spec, rwse_steps=ensemble.rwse_steps, extras=ensemble.extras,
                           workers=workers, classes=ensemble.classes)
        indices = np.arange(len(store))
        source_name = store.source or data
    labels = _labels(store, ensemble.target_names)[indices]
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
) -> Evaluation:
    """Score checkpoints (files or run directories) individually and as an ensemble.

    Args:
        data: data file (CSV/TSV, SD, SMILES, Excel, Parquet) or dataset name whose valid
            molecules are all scored; None re-scores the run's saved split.
        split: test (default), val, train or all; only for a run's saved split.
        read: delimiter, decimal mark and sheet of `data` (a run's saved split is read as its
            recipe's data.delimiter, data.decimal and data.sheet say).

    Raises:
        CheckpointError, InputError, ConfigError: one-line messages naming the file at fault.
    """
    if split is not None and split not in SPLITS:  # before loading anything
        raise ConfigError(f"--split: {split!r} is not one of {', '.join(SPLITS)}")
    ensemble = load_ensemble(models, device)
    labeled = labeled_molecules(ensemble, data, split=split, smiles_column=smiles_column,
                                workers=workers, read=read)
    store, indices, y = labeled.store, labeled.indices, labeled.labels
    split, source_name = labeled.split, labeled.source_name
    source = store.batch_source(ensemble.device)
    per_member = ensemble.predict_source(source, indices, batch_size)
    names = ensemble.target_names
    classes = ensemble.classes
    members = [
        (path, task_metrics(y, pred, ensemble.task, names, classes=classes))
        for path, pred in zip(ensemble.paths, per_member)
    ]
    scored = None
    if len(ensemble) > 1:  # mean in output units: averaged probabilities for multiclass
        scored = task_metrics(y, per_member.mean(axis=0), ensemble.task, names, classes=classes)
    return Evaluation(
        data=str(source_name),
        split=split,
        n=len(indices),
        task=ensemble.task,
        target_names=list(names),
        members=members,
        ensemble=scored,
    )
