"""Scaffolds computed once by the featurization workers (store.scaffold_ids) give the same splits,
index for index, as the implementation before them, which computed each SMILES' scaffold with
RDKit in the parent; the linear-time Murcko path equals RDKit's; huge molecules do not stall."""

from __future__ import annotations

import csv
import time

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem.Scaffolds import MurckoScaffold

from molsam.chem.parallel import featurize_many
from molsam.chem.scaffolds import scaffold_of
from molsam.data.pipeline import split_store
from molsam.data.split_stats import split_statistics
from molsam.data.splits import groups_of, scaffold_ids
from molsam.data.store import GraphStore
from tests.conftest import SHARED_DATA


# ------------------------------------------------------------------ the previous implementation
# Verbatim logic of molsam 8c43977 (chem/scaffolds.py, data/splits.py), kept here as the oracle.
def _old_scaffold(smiles: str) -> str:
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return smiles
    return MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False)


def _old_scaffold_split(sets, sizes):
    n = sum(len(s) for s in sets)
    train_cutoff, val_cutoff = sizes[0] * n, (sizes[0] + sizes[1]) * n
    train, val, test = [], [], []
    for group in sorted(sets, key=lambda s: (len(s), s[0]), reverse=True):
        if len(train) + len(group) > train_cutoff:
            if len(train) + len(val) + len(group) > val_cutoff:
                test += group
            else:
                val += group
        else:
            train += group
    return [sorted(p) for p in (train, val, test)]


def _old_fill(ordered, n, sizes):
    train, val, test = [], [], []
    for group in ordered:
        if len(train) + len(group) <= sizes[0] * n:
            train += group
        elif len(val) + len(group) <= sizes[1] * n:
            val += group
        else:
            test += group
    return [sorted(p) for p in (train, val, test)]


def _old_split(method, sets, sizes, seed):
    n = sum(len(s) for s in sets)
    if method == "scaffold":
        return _old_scaffold_split(sets, sizes)
    rng = np.random.default_rng(seed)
    if method == "scaffold_balanced":
        big = [s for s in sets if len(s) > sizes[1] * n / 2 or len(s) > sizes[2] * n / 2]
        small = [s for s in sets if not (len(s) > sizes[1] * n / 2 or len(s) > sizes[2] * n / 2)]
        ordered = [big[i] for i in rng.permutation(len(big))]
        ordered += [small[i] for i in rng.permutation(len(small))]
        return _old_fill(ordered, n, sizes)
    return _old_fill([sets[i] for i in rng.permutation(len(sets))], n, sizes)


# ----------------------------------------------------------------------------------- tests
def _smiles(name: str) -> list[str]:
    with open(SHARED_DATA / f"{name}.csv", newline="") as handle:
        return [row["smiles"] for row in csv.DictReader(handle)]


@pytest.fixture(scope="module", params=["bbbp", "esol"])
def dataset(request):
    store = GraphStore.from_smiles(_smiles(request.param), workers=2)
    return store, [_old_scaffold(s) for s in store.smiles]


def test_store_scaffolds_are_rdkits(dataset):
    store, expected = dataset
    assert [store.scaffolds[i] for i in store.scaffold_ids] == expected
    assert store.scaffold_ids.dtype == np.int32 and len(set(store.scaffolds)) == len(store.scaffolds)


@pytest.mark.parametrize("method", ["scaffold", "scaffold_balanced", "scaffold_random"])
@pytest.mark.parametrize("sizes", [(0.8, 0.1, 0.1), (0.7, 0.2, 0.1)])
def test_splits_equal_the_previous_implementation_index_for_index(dataset, method, sizes):
    store, scaffolds = dataset
    groups: dict[str, list[int]] = {}
    for i, scaffold in enumerate(scaffolds):
        groups.setdefault(scaffold, []).append(i)
    for seed in (0, 7):
        split = split_store(store, method, sizes, seed)
        old = _old_split(method, list(groups.values()), sizes, seed)
        assert [p.tolist() for p in split.parts().values()] == old, (method, sizes, seed)


def test_split_statistics_count_scaffolds_as_before(dataset):
    store, scaffolds = dataset
    split = split_store(store, "scaffold", (0.8, 0.1, 0.1), 0)
    stats, _ = split_statistics(store, split)
    for part, index in split.parts().items():
        assert stats[part]["scaffolds"] == len({scaffolds[i] for i in index})


def test_scaffolds_survive_save_and_load(tmp_path, dataset):
    store, _ = dataset
    loaded = GraphStore.load(store.save(tmp_path / "store.pt"))
    assert np.array_equal(loaded.scaffold_ids, store.scaffold_ids)
    assert loaded.scaffolds == store.scaffolds
    assert np.array_equal(loaded.rwse.view(np.uint16), store.rwse.view(np.uint16))


def test_groups_of_orders_groups_by_first_member():
    ids = np.array([2, 0, 2, 1, 0, 2])
    assert [g.tolist() for g in groups_of(ids)] == [[0, 2, 5], [1, 4], [3]]
    assert scaffold_ids(["a", "", "a", "b"])[0].tolist() == [0, 1, 0, 2]


def test_linear_murcko_equals_rdkit_on_every_kind_of_molecule():
    """Forced onto the linear path (large=0) for every molecule: exocyclic double bonds, aromatic
    N-H fix-ups, charges, stereo centres next to removed atoms, several fragments."""
    smiles = _smiles("clintox")[:250] + _smiles("sider")[:150] + [
        "c1ccccc1C(=O)CCn1ccnc1", "C[C@H](c1ccccc1)c1ccc[n+](C)c1", "O=C1CCC(=C)C1.c1ccccc1CC",
        "C1CC1CCCC1CC1CCC", "[O-][n+]1ccccc1CCl", "CC1=CC(=O)C=CC1=O",
    ]
    for text in smiles:
        mol = Chem.MolFromSmiles(text)
        if mol is None:
            continue
        expected = MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False)
        assert scaffold_of(mol, large=0) == expected, text


def test_huge_molecules_do_not_hold_up_featurization():
    """Issue 10: a 2,000-atom chain took 15 s in RDKit's Murcko (all-pairs shortest paths) and
    a dense 2,000 x 2,000 RWSE power took ~5 s; both are linear now."""
    chain = "C" * 2000
    rings = "c1ccccc1" + "C" * 1988 + "c1ccccc1"
    start = time.perf_counter()
    arrays = featurize_many([chain, rings, "CCO"], 16, workers=1, scaffolds=True)
    seconds = time.perf_counter() - start
    assert arrays.scaffolds == ["", "c1ccc(" + "C" * 1988 + "c2ccccc2)cc1", ""]
    assert arrays.atom_counts.tolist() == [2000, 2000, 3]
    assert seconds < 10, f"{seconds:.1f} s for two 2,000-atom molecules"
