"""Per-split statistics and the splits.json record that every split writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from molsam.data.splits import SplitIndices, scaffold_ids
from molsam.data.store import GraphStore
from molsam.errors import InputError
from molsam.jsonio import write_json_atomic


def split_statistics(store: GraphStore, split: SplitIndices) -> tuple[dict, list[str]]:
    """Size, scaffold count and per-task label rate (classification), count and fraction of
    each class (multiclass) or mean and std (regression).

    Returns (stats, warnings): stats[part] = {"size", "scaffolds", "tasks": {name: {...}}};
    a warning for every classification task with a single class (or no labels) in val or test,
    where ROC-AUC is undefined, and for every multiclass task lacking a class in val or test.
    """
    scaffolds = store.scaffold_ids
    if scaffolds is None:  # a store built without scaffolds: compute them here, once
        from molsam.chem.scaffolds import murcko_scaffold  # RDKit: only for such a store

        scaffolds, _ = scaffold_ids([murcko_scaffold(s) for s in store.smiles])
    classification = store.task == "classification"
    multiclass = store.task == "multiclass" and store.classes is not None
    stats: dict = {}
    warnings: list[str] = []
    for part, index in split.parts().items():
        labels = store.y[index]
        tasks = {}
        for t, name in enumerate(store.target_names):
            column = labels[:, t]
            present = column[~np.isnan(column)]
            entry: dict = {"labeled": int(present.size)}
            if multiclass:
                names = store.classes[t]
                counts = np.bincount(present.astype(np.int64), minlength=len(names))
                entry["class_counts"] = {c: int(n) for c, n in zip(names, counts)}
                entry["class_fractions"] = {
                    c: float(n / present.size) if present.size else None
                    for c, n in zip(names, counts)
                }
                absent = [c for c, n in zip(names, counts) if n == 0]
                if part != "train" and len(index) and absent:
                    warnings.append(
                        f"task {name!r} has no {', '.join(map(repr, absent))} labels in {part}: "
                        "those classes are left out of its macro ROC-AUC there"
                    )
            elif classification:
                entry["positive_rate"] = float(present.mean()) if present.size else None
                if part != "train" and len(index) and np.unique(present).size < 2:
                    warnings.append(
                        f"task {name!r} has a single class in {part} "
                        f"({present.size} labels): its ROC-AUC is undefined there"
                    )
            else:
                entry["mean"] = float(present.mean()) if present.size else None
                entry["std"] = float(present.std()) if present.size else None
            tasks[name] = entry
        stats[part] = {
            "size": int(len(index)),
            "scaffolds": int(np.unique(scaffolds[index]).size),
            "tasks": tasks,
        }
    return stats, warnings


def write_splits_json(
    path: str | Path,
    store: GraphStore,
    split: SplitIndices,
    *,
    method: str,
    seed: int,
    sizes: tuple[float, ...],
    stats: dict | None = None,
) -> Path:
    """splits.json: method, seed, sizes, and per part the store indices, source rows and SMILES."""
    record = {"method": method, "seed": seed, "sizes": list(sizes), "source": store.source}
    for part, index in split.parts().items():
        record[part] = {
            "indices": index.tolist(),
            "rows": store.rows[index].tolist(),
            "smiles": [store.smiles[i] for i in index],
        }
    if stats is not None:
        record["stats"] = stats
    return write_json_atomic(path, record)


def saved_split_indices(splits_path: Path, split: str, store: GraphStore) -> np.ndarray:
    """Indices of `split` (train, val, test or all) in a run's splits.json, checked against `store`:
    the indices must exist and the SMILES saved at training must be the store's at those indices
    (a data file edited since training, same size but other molecules, is refused in one line)."""
    try:
        saved = json.loads(splits_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{splits_path}: not a readable splits file ({exc})") from None
    if split == "all":
        return np.arange(len(store))
    part = saved.get(split) if isinstance(saved, dict) else None
    if not isinstance(part, dict) or "indices" not in part:
        raise InputError(f"{splits_path}: no {split!r} part with indices")
    indices = np.asarray(part["indices"], dtype=np.int64)
    if len(indices) and (indices.min() < 0 or indices.max() >= len(store)):
        raise InputError(
            f"{splits_path}: {split} indices reach {int(indices.max())} but {store.source} has "
            f"{len(store)} valid molecules; the data changed since training"
        )
    # The saved SMILES guard against a data file edited since training (same size, other rows).
    saved_smiles = part.get("smiles")
    if saved_smiles is not None:
        for i, smiles in zip(indices, saved_smiles):
            if store.smiles[i] != smiles:
                raise InputError(
                    f"{splits_path}: {split} molecule {int(i)} was {smiles!r} at training but "
                    f"{store.source} now has {store.smiles[i]!r}; the data changed since training"
                )
    return indices
