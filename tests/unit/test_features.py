"""Vocabularies, unknown slots, and a known molecule's codes."""

from __future__ import annotations

import numpy as np
import pytest
from rdkit import Chem

from molsam.chem.encodings import random_walk_return_probabilities
from molsam.chem.features import (
    ATOM_FEATURES,
    BOND_FEATURES,
    mol_to_graph,
    mols_to_arrays,
    parse_smiles,
)

ATOM = {v.name: i for i, v in enumerate(ATOM_FEATURES)}
BOND = {v.name: i for i, v in enumerate(BOND_FEATURES)}


@pytest.mark.parametrize("vocabulary", ATOM_FEATURES + BOND_FEATURES, ids=lambda v: v.name)
def test_every_vocabulary_has_an_unknown_slot(vocabulary):
    assert vocabulary.size == len(vocabulary.choices) + 1
    known = np.array([int(c) for c in vocabulary.choices])
    assert vocabulary.encode(known).tolist() == list(range(len(known)))
    assert vocabulary.encode(np.array([10_000, -10_000])).tolist() == [vocabulary.unknown] * 2
    assert vocabulary.size <= 256  # codes are stored as uint8


def test_known_molecule_acetic_acid():
    graph = mol_to_graph(Chem.MolFromSmiles("CC(=O)O"))
    assert graph.atom_codes.shape == (4, len(ATOM_FEATURES))
    assert graph.bond_codes.shape == (3, len(BOND_FEATURES))
    atomic = graph.atom_codes[:, ATOM["atomic_num"]]
    assert atomic.tolist() == [5, 5, 7, 7]  # code = Z - 1: C, C, O, O
    assert graph.atom_codes[:, ATOM["total_hs"]].tolist() == [3, 0, 0, 1]
    assert graph.atom_codes[:, ATOM["degree"]].tolist() == [1, 3, 1, 1]
    assert graph.atom_codes[:, ATOM["formal_charge"]].tolist() == [3, 3, 3, 3]  # charge 0
    assert graph.atom_codes[:, ATOM["in_ring"]].tolist() == [0, 0, 0, 0]
    # bond types: single, double, single
    assert graph.bond_codes[:, BOND["bond_type"]].tolist() == [0, 1, 0]
    assert graph.bond_atoms.tolist() == [[0, 1], [1, 2], [1, 3]]


def test_benzene_is_aromatic_in_ring():
    graph = mol_to_graph(Chem.MolFromSmiles("c1ccccc1"))
    assert graph.atom_codes.shape[0] == 6 and graph.bond_codes.shape[0] == 6
    assert set(graph.atom_codes[:, ATOM["aromatic"]]) == {1}
    assert set(graph.bond_codes[:, BOND["bond_type"]]) == {3}  # aromatic
    # a 6-ring walk returns after 2 steps with probability 1/2 (two neighbours, each back)
    assert graph.rwse[:, 1] == pytest.approx(0.5)
    assert graph.rwse[:, 0] == pytest.approx(0.0)


def test_rare_element_and_charge_go_to_unknown_slots():
    graph = mol_to_graph(Chem.MolFromSmiles("[Og]"))  # Z = 118: last known element
    assert graph.atom_codes[0, ATOM["atomic_num"]] == 117
    dummy = mol_to_graph(Chem.MolFromSmiles("*C"))  # dummy atom, Z = 0
    assert dummy.atom_codes[0, ATOM["atomic_num"]] == ATOM_FEATURES[0].unknown
    charged = mol_to_graph(Chem.MolFromSmiles("[Fe+6]"))
    assert charged.atom_codes[0, ATOM["formal_charge"]] == ATOM_FEATURES[3].unknown


def test_rwse_matches_dense_matrix_powers_across_molecules():
    mols = [Chem.MolFromSmiles(s) for s in ("CCO", "c1ccccc1CC(=O)O.[Na+]", "C1CC1", "[Cl-]")]
    arrays = mols_to_arrays(mols, rwse_steps=6)
    offset = 0
    for mol in mols:
        n = mol.GetNumAtoms()
        adjacency = Chem.GetAdjacencyMatrix(mol).astype(float)
        transition = adjacency / np.maximum(adjacency.sum(1), 1)[:, None]
        power, expected = np.eye(n), []
        for _ in range(6):
            power = power @ transition
            expected.append(np.diag(power))
        np.testing.assert_allclose(arrays.rwse[offset : offset + n], np.array(expected).T, atol=1e-6)
        offset += n
    assert offset == len(arrays.rwse)


def test_rwse_of_nothing_is_empty():
    out = random_walk_return_probabilities(np.zeros(0, int), np.zeros(0, int), np.zeros((0, 2)), 4)
    assert out.shape == (0, 4)


@pytest.mark.parametrize(
    ("smiles", "fragment"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("C1CC", "parse error"),
        ("c1cccc1", "kekulize"),
        ("[NH4][Pt]([NH4])(Cl)Cl", "valence"),
    ],
)
def test_invalid_smiles_give_a_reason(smiles, fragment):
    mol, reason = parse_smiles(smiles)
    assert mol is None
    assert fragment.lower() in reason.lower()


def test_whitespace_around_smiles_is_ignored():
    mol, reason = parse_smiles("  CCO \t")
    assert mol is not None and reason == "" and mol.GetNumAtoms() == 3
