"""The faster featurizer (degree and ring membership from the bond arrays, table lookups, sparse
RWSE for large molecules) gives the same bytes as the previous one (molsam 8c43977), kept here
verbatim as the oracle, on a few hundred real molecules and the odd cases."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from rdkit import Chem, rdBase

from molsam.chem import encodings
from molsam.chem.features import ATOM_FEATURES, BOND_FEATURES, mols_to_arrays
from tests.conftest import SHARED_DATA


def _old_encode(vocabulary, values):
    keys = np.array([int(c) for c in vocabulary.choices], dtype=np.int64)
    order = np.argsort(keys)
    sorted_keys = keys[order]
    at = np.clip(np.searchsorted(sorted_keys, values), 0, len(keys) - 1)
    return np.where(sorted_keys[at] == values, order[at], vocabulary.unknown).astype(np.uint8)


def _old_arrays(mols, steps=16):
    atoms = [
        (a.GetAtomicNum(), int(a.GetChiralTag()), a.GetDegree(), a.GetFormalCharge(),
         a.GetTotalNumHs(), a.GetNumRadicalElectrons(), int(a.GetHybridization()),
         a.GetIsAromatic(), a.IsInRing())
        for m in mols for a in m.GetAtoms()
    ]
    bonds = [
        (b.GetBeginAtomIdx(), b.GetEndAtomIdx(), int(b.GetBondType()), int(b.GetStereo()),
         b.GetIsConjugated(), b.IsInRing())
        for m in mols for b in m.GetBonds()
    ]
    atom_raw = np.array(atoms, dtype=np.int64).reshape(-1, 9)
    bond_raw = np.array(bonds, dtype=np.int64).reshape(-1, 6)
    atom_codes = np.stack([_old_encode(v, atom_raw[:, i]) for i, v in enumerate(ATOM_FEATURES)], 1)
    bond_codes = np.stack(
        [_old_encode(v, bond_raw[:, 2 + i]) for i, v in enumerate(BOND_FEATURES)], 1
    )
    return atom_codes, bond_raw[:, :2], bond_codes


ODD = [
    "[Na+].[Cl-]", "[H][H]", "[2H]C([2H])([2H])O", "C[CH2]", "[CH]", "C1CC1", "C/C=C/C",
    "F/C=C\\F", "C[C@H](N)C(=O)O", "c1cc[nH]c1", "[O-][n+]1ccccc1", "[Fe+3]", "C=[N+]=[N-]",
    "[Xe]", "C1CC2CCC1C2", "O=S(=O)(O)O", "[U]", "C#N", "c1ccc2c(c1)ccc1ccccc12",
    "N" + "C(Cc1ccc(O)cc1)C(=O)N" * 14 + "CC(=O)O",  # a peptide of 200 heavy atoms
    "C1CCN1C(=O)" + "C(Cc1c[nH]c2ccccc12)C(=O)N" * 12 + "C",
]


def _molecules() -> list[Chem.Mol]:
    smiles = list(ODD)
    for name, take in (("tox21", 200), ("clintox", 100), ("sider", 100)):
        with open(SHARED_DATA / f"{name}.csv", newline="") as handle:
            smiles += [row["smiles"] for row in csv.DictReader(handle)][:take]
    blocker = rdBase.BlockLogs()
    mols = [m for m in map(Chem.MolFromSmiles, smiles) if m is not None]
    del blocker
    # larger ones take the sparse RWSE path, compared with a tolerance below
    return [m for m in mols if m.GetNumAtoms() <= encodings.SPARSE_ATOMS]


def test_codes_and_rwse_are_bit_identical_to_the_previous_featurizer():
    mols = _molecules()
    assert len(mols) > 380 and max(m.GetNumAtoms() for m in mols) > 100
    new = mols_to_arrays(mols)
    atom_codes, bond_atoms, bond_codes = _old_arrays(mols)
    assert np.array_equal(new.atom_codes, atom_codes)
    assert np.array_equal(new.bond_atoms, bond_atoms)
    assert np.array_equal(new.bond_codes, bond_codes)
    # every molecule here is within the dense RWSE path: bytes equal the previous code's
    assert max(m.GetNumAtoms() for m in mols) <= encodings.SPARSE_ATOMS
    dense = encodings.random_walk_return_probabilities(
        new.atom_counts, new.bond_counts, new.bond_atoms, 16
    )
    assert np.array_equal(new.rwse.view(np.uint32), dense.view(np.uint32))


def test_sparse_rwse_of_large_molecules_matches_dense(monkeypatch):
    smiles = ["c1ccccc1" + "C(C)" * 150 + "c1ccc2ccccc2c1", "C1CC1" + "CC(=O)N" * 80 + "C1CCC1",
              "CCO"]
    mols = [Chem.MolFromSmiles(s) for s in smiles]
    assert mols[0].GetNumAtoms() > encodings.SPARSE_ATOMS
    sparse = mols_to_arrays(mols)
    monkeypatch.setattr(encodings, "SPARSE_ATOMS", 10**9)
    dense = mols_to_arrays(mols)
    # same sums in another order: float32 rounding only, and equal once stored as float16
    assert np.allclose(sparse.rwse, dense.rwse, rtol=0, atol=1e-6)
    assert np.array_equal(sparse.rwse[-3:], dense.rwse[-3:])  # CCO: small, dense path both times
    assert np.count_nonzero(sparse.rwse.astype(np.float16) != dense.rwse.astype(np.float16)) < 5


@pytest.mark.parametrize("vocabulary", ATOM_FEATURES + BOND_FEATURES, ids=lambda v: v.name)
def test_lookup_encoding_equals_sorted_search(vocabulary):
    values = np.arange(-300, 300)
    assert np.array_equal(vocabulary.encode(values), _old_encode(vocabulary, values))
