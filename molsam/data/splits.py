"""Train/validation/test splits as pure functions returning index arrays.

Three scaffold variants exist in the literature and papers confuse them; molsam names each:

- `scaffold`: deterministic, exactly DeepChem's ScaffoldSplitter (also OGB's), so published
  numbers compare. Scaffold sets sorted by (size, first index) descending; a set goes to train
  unless train would pass its share, else to val unless train+val would pass theirs, else to test.
  The seed is ignored.
- `scaffold_balanced`: chemprop v1 / GROVER. Seeded: sets larger than half of val or test go first
  (shuffled), then the rest (shuffled); each set goes to train if it fits, else val if it fits,
  else test.
- `scaffold_random`: seeded permutation of the scaffold sets, filled the same way.

No scaffold is ever shared between two parts for any of the three. Scaffolds come as integer ids
(`GraphStore.scaffold_ids`, computed once by the featurization workers) or, for a plain list of
SMILES, are computed here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from molsam.errors import ConfigError, InputError

from molsam.data.split_names import DEFAULT_SIZES, METHODS, PARTS  # noqa: F401 (re-exported)


@dataclass(frozen=True)
class SplitIndices:
    """Indices into the store (int64 arrays), disjoint; together they cover every molecule."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def parts(self) -> dict[str, np.ndarray]:
        return {"train": self.train, "val": self.val, "test": self.test}


def scaffold_ids(scaffolds: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Integer scaffold ids: (int32 [N] id of each molecule, table [S] of scaffold SMILES).

    Ids are numbered in order of each scaffold's first molecule (the order in which scaffold sets
    are first met).
    """
    table: dict[str, int] = {}
    ids = np.fromiter(
        (table.setdefault(s, len(table)) for s in scaffolds), dtype=np.int32, count=len(scaffolds)
    )
    return ids, list(table)


def groups_of(ids: np.ndarray) -> list[np.ndarray]:
    """Molecule indices grouped by id: each group in input order, groups in order of their first
    member (as `molsam.chem.scaffolds.scaffold_sets`). int64 arrays."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size == 0:
        return []
    order = np.argsort(ids, kind="stable")
    cuts = np.flatnonzero(np.diff(ids[order])) + 1
    groups = np.split(order, cuts)
    firsts = order[np.concatenate([[0], cuts])]  # each group's first member (stable sort)
    return [groups[g] for g in np.argsort(firsts, kind="stable")]


def check_sizes(sizes: Sequence[float]) -> tuple[float, float, float]:
    if len(sizes) != 3 or any(s < 0 for s in sizes) or abs(sum(sizes) - 1.0) > 1e-6:
        raise ConfigError(
            f"split sizes: expected three non-negative fractions summing to 1, got {list(sizes)}"
        )
    return tuple(float(s) for s in sizes)


def _as_split(train: list[int], val: list[int], test: list[int]) -> SplitIndices:
    return SplitIndices(*(np.array(sorted(p), dtype=np.int64) for p in (train, val, test)))


ScaffoldSets = Sequence[Sequence[int]]  # molecule indices per scaffold (lists or int arrays)


def _assign(sets: ScaffoldSets, parts: Sequence[int]) -> SplitIndices:
    """Indices of the sets that go to part 0 (train), 1 (val), 2 (test), each sorted."""
    chosen: list[list] = [[], [], []]
    for group, part in zip(sets, parts):
        chosen[part].append(np.asarray(group, dtype=np.int64))
    return SplitIndices(*(
        np.sort(np.concatenate(p)) if p else np.zeros(0, dtype=np.int64) for p in chosen
    ))


def random_split(n: int, sizes: Sequence[float] = DEFAULT_SIZES, seed: int = 0) -> SplitIndices:
    """Seeded permutation of the molecules, cut at the sizes."""
    sizes = check_sizes(sizes)
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(round(sizes[0] * n))
    n_val = int(round(sizes[1] * n))
    return _as_split(order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :])


def scaffold_split(sets: ScaffoldSets, sizes: Sequence[float] = DEFAULT_SIZES) -> SplitIndices:
    """DeepChem's deterministic scaffold split over scaffold sets (see module docstring)."""
    sizes = check_sizes(sizes)
    n = sum(len(s) for s in sets)
    train_cutoff = sizes[0] * n
    val_cutoff = (sizes[0] + sizes[1]) * n
    ordered = sorted(sets, key=lambda s: (len(s), int(s[0])), reverse=True)
    parts, n_train, n_val = [], 0, 0
    for group in ordered:
        size = len(group)
        if n_train + size > train_cutoff:
            if n_train + n_val + size > val_cutoff:
                parts.append(2)
            else:
                parts.append(1)
                n_val += size
        else:
            parts.append(0)
            n_train += size
    return _assign(ordered, parts)


def _fill(ordered: ScaffoldSets, n: int, sizes: tuple[float, float, float]) -> SplitIndices:
    """chemprop's rule: train if the set fits, else val if it fits, else test."""
    train_size, val_size = sizes[0] * n, sizes[1] * n
    parts, n_train, n_val = [], 0, 0
    for group in ordered:
        size = len(group)
        if n_train + size <= train_size:
            parts.append(0)
            n_train += size
        elif n_val + size <= val_size:
            parts.append(1)
            n_val += size
        else:
            parts.append(2)
    return _assign(ordered, parts)


def scaffold_balanced_split(
    sets: ScaffoldSets, sizes: Sequence[float] = DEFAULT_SIZES, seed: int = 0
) -> SplitIndices:
    """chemprop v1's balanced scaffold split (see module docstring)."""
    sizes = check_sizes(sizes)
    n = sum(len(s) for s in sets)
    limit_val, limit_test = sizes[1] * n / 2, sizes[2] * n / 2
    big = [s for s in sets if len(s) > limit_val or len(s) > limit_test]
    small = [s for s in sets if not (len(s) > limit_val or len(s) > limit_test)]
    rng = np.random.default_rng(seed)
    ordered = [big[i] for i in rng.permutation(len(big))] + [
        small[i] for i in rng.permutation(len(small))
    ]
    return _fill(ordered, n, sizes)


def scaffold_random_split(
    sets: ScaffoldSets, sizes: Sequence[float] = DEFAULT_SIZES, seed: int = 0
) -> SplitIndices:
    """Seeded permutation of the scaffold sets, then chemprop's fill rule."""
    sizes = check_sizes(sizes)
    n = sum(len(s) for s in sets)
    order = np.random.default_rng(seed).permutation(len(sets))
    return _fill([sets[i] for i in order], n, sizes)


_PART_NAMES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}


def column_split(
    labels: Sequence[str], source: str = "split column", places: Sequence[str] | None = None
) -> SplitIndices:
    """Parts named per molecule (train / val / test, or valid, validation, dev, testing).

    `places[i]` says where label i was read ("file: line 7, column 'split'"), for the error;
    without it the message counts molecules.
    """
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for i, label in enumerate(labels):
        part = _PART_NAMES.get(label.strip().casefold())
        if part is None:
            where = places[i] if places is not None else f"{source}: molecule {i}"
            raise InputError(
                f"{where}: {label!r} is not one of train, val, test"
                + ("" if places is None else " (or valid, validation, dev, testing)")
            )
        parts[part].append(i)
    return _as_split(parts["train"], parts["val"], parts["test"])


def file_split(path: str | Path, n: int) -> SplitIndices:
    """Indices from a JSON file: {"train": [...], "val": [...], "test": [...]} or molsam's
    splits.json ({"train": {"indices": [...]}, ...}). Indices refer to the featurized molecules."""
    from molsam.fileset import settle

    path = Path(path)
    settle(path.parent, reading=True)  # a featurize killed mid-replace: finish it first
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such split file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not JSON ({exc})") from None
    parts = {}
    for part in PARTS:
        value = data.get(part, []) if isinstance(data, dict) else None
        if isinstance(value, dict):
            value = value.get("indices")
        if not isinstance(value, list) or not all(isinstance(i, int) for i in value):
            raise InputError(f"{path}: key {part!r} must be a list of integer indices")
        bad = [i for i in value if not 0 <= i < n]
        if bad:
            raise InputError(f"{path}: {part}: index {bad[0]} is out of range for {n} molecules")
        parts[part] = value
    seen: dict[int, str] = {}
    for part, value in parts.items():
        for i in value:
            if i in seen:
                raise InputError(f"{path}: index {i} is in both {seen[i]} and {part}")
            seen[i] = part
    return _as_split(parts["train"], parts["val"], parts["test"])


def make_split(
    method: str,
    smiles: Sequence[str],
    sizes: Sequence[float] = DEFAULT_SIZES,
    seed: int = 0,
    *,
    column_values: Sequence[str] | None = None,
    split_file: str | Path | None = None,
    scaffold_ids: np.ndarray | None = None,
    column_places: Sequence[str] | None = None,
) -> SplitIndices:
    """Dispatch by method name (see METHODS); errors list the valid methods.

    `scaffold_ids` (int [len(smiles)], e.g. a store's): the scaffold of each molecule, so the
    scaffold methods need not compute scaffolds from `smiles` again. `column_places`: where each
    of `column_values` was read (file, line, column), named by a bad label's error.
    """
    if method in ("scaffold", "scaffold_balanced", "scaffold_random"):
        if scaffold_ids is None:
            # RDKit: imported only when scaffolds must be computed here, so SplitIndices and the
            # other splits (what training from a store needs) import without it.
            from molsam.chem.scaffolds import scaffold_sets

            sets = scaffold_sets(smiles)
        else:
            sets = groups_of(scaffold_ids)
        if method == "scaffold":
            return scaffold_split(sets, sizes)
        if method == "scaffold_balanced":
            return scaffold_balanced_split(sets, sizes, seed)
        return scaffold_random_split(sets, sizes, seed)
    if method == "random":
        return random_split(len(smiles), sizes, seed)
    if method == "column":
        if column_values is None:
            raise ConfigError("split method 'column' needs a split column (--split-column)")
        return column_split(column_values, places=column_places)
    if method == "file":
        if split_file is None:
            raise ConfigError("split method 'file' needs a split file (--split-file)")
        return file_split(split_file, len(smiles))
    raise ConfigError(f"split method {method!r} is not one of {', '.join(METHODS)}")
