"""Bemis-Murcko scaffolds (Bemis & Murcko, J. Med. Chem. 1996), as DeepChem and chemprop use them."""

from __future__ import annotations

from collections.abc import Sequence

from rdkit import Chem, rdBase
from rdkit.Chem.Scaffolds import MurckoScaffold


def murcko_scaffold(smiles: str) -> str:
    """Canonical SMILES of the Bemis-Murcko scaffold, chirality ignored (DeepChem's convention).

    An acyclic molecule has the empty scaffold "" (all of them form one scaffold set). A SMILES
    RDKit rejects gets itself as scaffold, so it can never share a set with another molecule.
    """
    blocker = rdBase.BlockLogs()
    try:
        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            return smiles
        return MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False)
    finally:
        del blocker


def scaffold_sets(smiles: Sequence[str]) -> list[list[int]]:
    """Indices of molecules grouped by scaffold, each group in input order, groups in order of
    their first member."""
    groups: dict[str, list[int]] = {}
    for i, text in enumerate(smiles):
        groups.setdefault(murcko_scaffold(text), []).append(i)
    return list(groups.values())
