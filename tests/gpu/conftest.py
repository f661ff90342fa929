"""Fixtures of the CUDA tests. They never featurize at collection time: a GPU machine may lack
RDKit, so `gpu_store` loads a store featurized elsewhere (MOLSAM_TEST_STORE, what
benchmarks/gpu_check.sh passes) or featurizes a few SMILES when RDKit is here, else skips."""

from __future__ import annotations

import os

import numpy as np
import pytest

SMILES = ["CCO", "c1ccccc1", "CCN", "CC(=O)O", "CCCl", "c1ccncc1", "C1CCCCC1", "OCC(O)CO",
          "CC#N", "CCOC(=O)C", "c1ccc(O)cc1", "CN(C)C", "C=CC=C", "ClC(Cl)Cl", "CC(C)O",
          "NC(=O)N", "c1ccc2ccccc2c1", "CCCCCC", "O=C=O", "CS(=O)C", "c1cc[nH]c1", "FC(F)F",
          "CCS", "C1CCOC1", "CC(C)(C)c1ccc(O)cc1", "OC(=O)c1ccccc1O", "CCN(CC)CC", "C1CCNCC1",
          "Brc1ccccc1", "COc1ccccc1", "CC(=O)Nc1ccc(O)cc1", "N#Cc1ccccc1"]


@pytest.fixture(scope="session")
def gpu_store():
    """A small classification store (target `y` or the store's first task), at most 512
    molecules."""
    from molsam.data.store import GraphStore

    path = os.environ.get("MOLSAM_TEST_STORE")
    if path:
        store = GraphStore.load(path)
        keep = np.arange(min(len(store), 512))
        return _subset(store, keep)
    pytest.importorskip("rdkit", reason="no RDKit and no MOLSAM_TEST_STORE to load")
    labels = np.array([[i % 2] for i in range(len(SMILES))], dtype=np.float32)
    return GraphStore.from_smiles(SMILES, labels, target_names=["y"], task="classification",
                                  workers=1)


def _subset(store, keep: np.ndarray):
    """The first molecules of a store (stores are CSR arrays: cut at the offsets)."""
    from molsam.data.store import GraphStore

    n = len(keep)
    atoms, bonds = int(store.atom_ptr[n]), int(store.bond_ptr[n])
    return GraphStore(
        atom_counts=store.atom_counts[:n], bond_counts=store.bond_counts[:n],
        atom_codes=store.atom_codes[:atoms], rwse=store.rwse[:atoms],
        bond_atoms=store.bond_atoms[:bonds], bond_codes=store.bond_codes[:bonds],
        y=store.y[:n, :1], smiles=store.smiles[:n], rows=store.rows[:n],
        target_names=store.target_names[:1], task="classification", spec=store.spec,
    )
