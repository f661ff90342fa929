"""Splits: disjoint, complete, seed-stable; scaffold methods never share a scaffold across parts.

Property-based over real SMILES from the shared MoleculeNet files."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from molsam.chem.scaffolds import murcko_scaffold, scaffold_sets
from molsam.data.splits import column_split, file_split, make_split, scaffold_split
from molsam.errors import ConfigError, InputError
from tests.conftest import SHARED_DATA


def _pool() -> list[str]:
    smiles = []
    for name in ("bbbp.csv", "esol.csv", "clintox.csv"):
        with open(SHARED_DATA / name, newline="") as handle:
            smiles += [row["smiles"] for row in csv.DictReader(handle)][:300]
    return smiles


POOL = _pool()
SCAFFOLD_METHODS = ("scaffold", "scaffold_balanced", "scaffold_random")
SIZES = st.sampled_from([(0.8, 0.1, 0.1), (0.7, 0.2, 0.1), (0.5, 0.25, 0.25), (1.0, 0.0, 0.0)])
SUBSETS = st.lists(st.integers(0, len(POOL) - 1), min_size=5, max_size=120, unique=True)


def _check_partition(split, n):
    parts = [split.train, split.val, split.test]
    joined = np.concatenate(parts)
    assert len(joined) == n, "complete: every molecule in exactly one part"
    assert sorted(joined.tolist()) == list(range(n)), "disjoint and in range"


@settings(max_examples=25, deadline=None)
@given(subset=SUBSETS, sizes=SIZES, seed=st.integers(0, 10_000),
       method=st.sampled_from(SCAFFOLD_METHODS + ("random",)))
def test_splits_are_disjoint_complete_and_seed_stable(subset, sizes, seed, method):
    smiles = [POOL[i] for i in subset]
    split = make_split(method, smiles, sizes, seed)
    _check_partition(split, len(smiles))
    again = make_split(method, smiles, sizes, seed)
    for a, b in zip(split.parts().values(), again.parts().values()):
        assert np.array_equal(a, b)


@settings(max_examples=25, deadline=None)
@given(subset=SUBSETS, sizes=SIZES, seed=st.integers(0, 10_000),
       method=st.sampled_from(SCAFFOLD_METHODS))
def test_no_scaffold_is_shared_between_parts(subset, sizes, seed, method):
    smiles = [POOL[i] for i in subset]
    split = make_split(method, smiles, sizes, seed)
    seen = {}
    for part, index in split.parts().items():
        for i in index:
            scaffold = murcko_scaffold(smiles[i])
            assert seen.setdefault(scaffold, part) == part, f"{scaffold!r} in {seen[scaffold]} and {part}"


@settings(max_examples=15, deadline=None)
@given(subset=SUBSETS, seeds=st.tuples(st.integers(0, 10_000), st.integers(0, 10_000)))
def test_deterministic_scaffold_ignores_the_seed(subset, seeds):
    smiles = [POOL[i] for i in subset]
    a, b = (make_split("scaffold", smiles, (0.8, 0.1, 0.1), s) for s in seeds)
    assert all(np.array_equal(x, y) for x, y in zip(a.parts().values(), b.parts().values()))


def test_seeded_methods_depend_on_the_seed():
    smiles = POOL[:300]
    for method in ("random", "scaffold_random", "scaffold_balanced"):
        a, b = (make_split(method, smiles, (0.8, 0.1, 0.1), s) for s in (0, 1))
        assert not np.array_equal(a.test, b.test), method


def test_deepchem_scaffold_split_on_bbbp():
    with open(SHARED_DATA / "bbbp.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    split = scaffold_split(scaffold_sets([r["smiles"] for r in rows]))
    assert [len(p) for p in split.parts().values()] == [1631, 204, 204]
    positives = np.mean([float(rows[i]["p_np"]) for i in split.test])
    assert round(positives, 2) == 0.52  # DeepChem's deterministic scaffold split: 52% positives in test


def test_column_and_file_splits(tmp_path):
    split = column_split(["train", "Valid", "test", "TRAIN", "validation"])
    assert split.train.tolist() == [0, 3] and split.val.tolist() == [1, 4] and split.test.tolist() == [2]
    with pytest.raises(InputError, match="molecule 1: 'holdout' is not one of train, val, test"):
        column_split(["train", "holdout"])
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"train": [0, 2], "val": [1], "test": {"indices": [3]}}))
    assert file_split(path, 4).test.tolist() == [3]
    path.write_text(json.dumps({"train": [0, 1], "val": [1], "test": []}))
    with pytest.raises(InputError, match="index 1 is in both train and val"):
        file_split(path, 4)
    path.write_text(json.dumps({"train": [9], "val": [], "test": []}))
    with pytest.raises(InputError, match="index 9 is out of range"):
        file_split(path, 4)


def test_bad_method_and_sizes():
    with pytest.raises(ConfigError, match="'scafold' is not one of scaffold, scaffold_balanced"):
        make_split("scafold", ["CCO"])
    with pytest.raises(ConfigError, match=r"summing to 1, got \[0.8, 0.3, 0.1\]"):
        make_split("random", ["CCO"], (0.8, 0.3, 0.1))
