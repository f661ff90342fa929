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

No scaffold is ever shared between two parts for any of the three.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from molsam.errors import ConfigError, InputError

PARTS = ("train", "val", "test")
METHODS = ("scaffold", "scaffold_balanced", "scaffold_random", "random", "column", "file")
DEFAULT_SIZES = (0.8, 0.1, 0.1)


@dataclass(frozen=True)
class SplitIndices:
    """Indices into the store (int64 arrays), disjoint; together they cover every molecule."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def parts(self) -> dict[str, np.ndarray]:
        return {"train": self.train, "val": self.val, "test": self.test}


def check_sizes(sizes: Sequence[float]) -> tuple[float, float, float]:
    if len(sizes) != 3 or any(s < 0 for s in sizes) or abs(sum(sizes) - 1.0) > 1e-6:
        raise ConfigError(
            f"split sizes: expected three non-negative fractions summing to 1, got {list(sizes)}"
        )
    return tuple(float(s) for s in sizes)


def _as_split(train: list[int], val: list[int], test: list[int]) -> SplitIndices:
    return SplitIndices(*(np.array(sorted(p), dtype=np.int64) for p in (train, val, test)))


def random_split(n: int, sizes: Sequence[float] = DEFAULT_SIZES, seed: int = 0) -> SplitIndices:
    """Seeded permutation of the molecules, cut at the sizes."""
    sizes = check_sizes(sizes)
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(round(sizes[0] * n))
    n_val = int(round(sizes[1] * n))
    return _as_split(order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :])


def scaffold_split(sets: list[list[int]], sizes: Sequence[float] = DEFAULT_SIZES) -> SplitIndices:
    """DeepChem's deterministic scaffold split over scaffold sets (see module docstring)."""
    sizes = check_sizes(sizes)
    n = sum(len(s) for s in sets)
    train_cutoff = sizes[0] * n
    val_cutoff = (sizes[0] + sizes[1]) * n
    ordered = sorted(sets, key=lambda s: (len(s), s[0]), reverse=True)
    train, val, test = [], [], []
    for group in ordered:
        if len(train) + len(group) > train_cutoff:
            if len(train) + len(val) + len(group) > val_cutoff:
                test += group
            else:
                val += group
        else:
            train += group
    return _as_split(train, val, test)


def _fill(ordered: list[list[int]], n: int, sizes: tuple[float, float, float]) -> SplitIndices:
    """chemprop's rule: train if the set fits, else val if it fits, else test."""
    train_size, val_size = sizes[0] * n, sizes[1] * n
    train, val, test = [], [], []
    for group in ordered:
        if len(train) + len(group) <= train_size:
            train += group
        elif len(val) + len(group) <= val_size:
            val += group
        else:
            test += group
    return _as_split(train, val, test)


def scaffold_balanced_split(
    sets: list[list[int]], sizes: Sequence[float] = DEFAULT_SIZES, seed: int = 0
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
    sets: list[list[int]], sizes: Sequence[float] = DEFAULT_SIZES, seed: int = 0
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


def column_split(labels: Sequence[str], source: str = "split column") -> SplitIndices:
    """Parts named per molecule (train / val / test, or valid, validation, dev, testing)."""
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for i, label in enumerate(labels):
        part = _PART_NAMES.get(label.strip().casefold())
        if part is None:
            raise InputError(
                f"{source}: molecule {i}: {label!r} is not one of train, val, test"
            )
        parts[part].append(i)
    return _as_split(parts["train"], parts["val"], parts["test"])


def file_split(path: str | Path, n: int) -> SplitIndices:
    """Indices from a JSON file: {"train": [...], "val": [...], "test": [...]} or molsam's
    splits.json ({"train": {"indices": [...]}, ...}). Indices refer to the featurized molecules."""
    path = Path(path)
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
) -> SplitIndices:
    """Dispatch by method name (see METHODS); errors list the valid methods."""
    if method == "random":
        return random_split(len(smiles), sizes, seed)
    # Scaffolds need RDKit: imported only for the methods that use them, so SplitIndices and the
    # other splits (what training from a store needs) import without it.
    from molsam.chem.scaffolds import scaffold_sets

    if method == "scaffold":
        return scaffold_split(scaffold_sets(smiles), sizes)
    if method == "scaffold_balanced":
        return scaffold_balanced_split(scaffold_sets(smiles), sizes, seed)
    if method == "scaffold_random":
        return scaffold_random_split(scaffold_sets(smiles), sizes, seed)
    if method == "column":
        if column_values is None:
            raise ConfigError("split method 'column' needs a split column (--split-column)")
        return column_split(column_values)
    if method == "file":
        if split_file is None:
            raise ConfigError("split method 'file' needs a split file (--split-file)")
        return file_split(split_file, len(smiles))
    raise ConfigError(f"split method {method!r} is not one of {', '.join(METHODS)}")
