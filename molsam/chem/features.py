"""SMILES -> integer-coded molecular graph.

Every atom and bond becomes a handful of small integer category codes (one byte each), not a
float one-hot vector: codes are ~2x faster to build and ~20x smaller, and the model embeds them
on the device. Every vocabulary ends with an "unknown" slot, so a rare element, charge or
hybridization maps there instead of failing (as chemprop's featurizers do).

Graphs are heavy-atom graphs (hydrogens implicit, counted by the `total_hs` code).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from rdkit import Chem

from molsam.chem.encodings import random_walk_return_probabilities
from molsam.chem.spec import (  # noqa: F401  (re-exported: the historical import place)
    ATOM_VOCAB_SIZES,
    ATOM_VOCABULARIES,
    BOND_VOCAB_SIZES,
    BOND_VOCABULARIES,
    DEFAULT_RWSE_STEPS,
    FEATURIZER_VERSION,
    featurizer_spec,
)


@dataclass(frozen=True)
class Vocabulary:
    """An ordered list of known values; any other value maps to the last code, `unknown`."""

    name: str
    choices: tuple

    @property
    def size(self) -> int:
        """Number of codes, the unknown slot included."""
        return len(self.choices) + 1

    @property
    def unknown(self) -> int:
        return len(self.choices)

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Codes of integer `values` (enums as their int); unknown values get `self.unknown`.

        One table lookup: known values span a small range (at most 118 wide), so a table from
        value - min to code, with anything outside the range sent to the unknown slot.
        """
        low, table = self._lookup
        shifted = np.asarray(values, dtype=np.int64) - low
        inside = (shifted >= 0) & (shifted < len(table))
        return np.where(inside, table[np.where(inside, shifted, 0)], self.unknown).astype(np.uint8)

    @functools.cached_property
    def _lookup(self) -> tuple[int, np.ndarray]:
        keys = np.array([int(c) for c in self.choices], dtype=np.int64)
        table = np.full(int(keys.max() - keys.min()) + 1, self.unknown, dtype=np.uint8)
        table[keys - keys.min()] = np.arange(len(keys))
        return int(keys.min()), table


_HT = Chem.rdchem.HybridizationType
_CT = Chem.rdchem.ChiralType
_BT = Chem.rdchem.BondType
_BS = Chem.rdchem.BondStereo

#: Per-atom categorical features, in column order of `MolGraph.atom_codes`.
ATOM_FEATURES: tuple[Vocabulary, ...] = (
    Vocabulary("atomic_num", tuple(range(1, 119))),
    Vocabulary(
        "chirality",
        (_CT.CHI_UNSPECIFIED, _CT.CHI_TETRAHEDRAL_CW, _CT.CHI_TETRAHEDRAL_CCW, _CT.CHI_OTHER),
    ),
    Vocabulary("degree", tuple(range(0, 7))),
    Vocabulary("formal_charge", (-3, -2, -1, 0, 1, 2, 3)),
    Vocabulary("total_hs", tuple(range(0, 5))),
    Vocabulary("radical_electrons", (0, 1, 2)),
    Vocabulary(
        "hybridization", (_HT.S, _HT.SP, _HT.SP2, _HT.SP3, _HT.SP3D, _HT.SP3D2)
    ),
    Vocabulary("aromatic", (False, True)),
    Vocabulary("in_ring", (False, True)),
)

#: Per-bond categorical features, in column order of `MolGraph.bond_codes`.
BOND_FEATURES: tuple[Vocabulary, ...] = (
    Vocabulary("bond_type", (_BT.SINGLE, _BT.DOUBLE, _BT.TRIPLE, _BT.AROMATIC)),
    Vocabulary(
        "stereo",
        (_BS.STEREONONE, _BS.STEREOANY, _BS.STEREOZ, _BS.STEREOE, _BS.STEREOCIS, _BS.STEREOTRANS),
    ),
    Vocabulary("conjugated", (False, True)),
    Vocabulary("in_ring", (False, True)),
)

# The RDKit-free contract (molsam.chem.spec) must describe exactly these vocabularies: the model,
# stores and checkpoints size their embeddings and compare specs from it alone.
if [(v.name, v.size) for v in ATOM_FEATURES] != list(ATOM_VOCABULARIES) or [
    (v.name, v.size) for v in BOND_FEATURES
] != list(BOND_VOCABULARIES):
    raise RuntimeError(
        "molsam.chem.features vocabularies differ from molsam.chem.spec: update both together "
        "(and bump FEATURIZER_VERSION)"
    )


class MolGraph(NamedTuple):
    """One molecule as arrays. n atoms, m bonds (each bond once; the batcher adds both directions).

    atom_codes: uint8 [n, len(ATOM_FEATURES)]
    bond_atoms: int64 [m, 2] atom indices local to the molecule
    bond_codes: uint8 [m, len(BOND_FEATURES)]
    rwse:       float32 [n, rwse_steps] random-walk return probabilities (steps 1..K)
    """

    atom_codes: np.ndarray
    bond_atoms: np.ndarray
    bond_codes: np.ndarray
    rwse: np.ndarray


class MolArrays(NamedTuple):
    """Several molecules concatenated: G molecules, A atoms, M bonds.

    atom_counts, bond_counts: int64 [G]; atom_codes: uint8 [A, F_atom]; bond_atoms: int64 [M, 2]
    (local to each molecule); bond_codes: uint8 [M, F_bond]; rwse: float32 [A, K].
    """

    atom_counts: np.ndarray
    bond_counts: np.ndarray
    atom_codes: np.ndarray
    bond_atoms: np.ndarray
    bond_codes: np.ndarray
    rwse: np.ndarray


def _raw_atom_values(atom: Chem.Atom) -> tuple:
    """The per-atom getters; degree and ring membership come from the bond arrays instead."""
    return (
        atom.GetAtomicNum(),
        int(atom.GetChiralTag()),
        atom.GetFormalCharge(),
        atom.GetTotalNumHs(),
        atom.GetNumRadicalElectrons(),
        int(atom.GetHybridization()),
        atom.GetIsAromatic(),
    )


def _raw_bond_values(bond: Chem.Bond) -> tuple:
    """The per-bond getters; ring membership comes from each molecule's ring info instead."""
    return (
        bond.GetBeginAtomIdx(),
        bond.GetEndAtomIdx(),
        int(bond.GetBondType()),
        int(bond.GetStereo()),
        bond.GetIsConjugated(),
    )


_ATOM_GETTER_COLUMNS = (0, 1, 3, 4, 5, 6, 7)  # ATOM_FEATURES columns that `_raw_atom_values` fills
_DEGREE, _ATOM_IN_RING = 2, 8
_BOND_IN_RING = 3


def mols_to_arrays(mols: Sequence[Chem.Mol], rwse_steps: int = DEFAULT_RWSE_STEPS) -> MolArrays:
    """Integer-code sanitized RDKit molecules (columns: ATOM_FEATURES, BOND_FEATURES).

    The per-atom Python work is one tuple of seven RDKit getters and the per-bond work one of
    five; degree (bonds per atom), bond ring membership (one RingInfo.BondRings() call per
    molecule) and atom ring membership (an atom is in a ring iff one of its bonds is) come from
    the bond arrays. Mapping raw values to codes (table lookups) and the random-walk encodings
    are vectorized over all molecules at once.
    """
    atom_counts = np.fromiter((m.GetNumAtoms() for m in mols), dtype=np.int64, count=len(mols))
    bond_counts = np.fromiter((m.GetNumBonds() for m in mols), dtype=np.int64, count=len(mols))
    atoms = [_raw_atom_values(a) for m in mols for a in m.GetAtoms()]
    bonds = [_raw_bond_values(b) for m in mols for b in m.GetBonds()]
    atom_start = np.cumsum(atom_counts) - atom_counts
    bond_start = (np.cumsum(bond_counts) - bond_counts).tolist()
    ring_bonds = [
        start + bond
        for m, start in zip(mols, bond_start)
        for ring in m.GetRingInfo().BondRings()
        for bond in ring
    ]
    total_atoms, total_bonds = int(atom_counts.sum()), int(bond_counts.sum())
    bond_raw = np.array(bonds, dtype=np.int64).reshape(-1, 5)
    bond_atoms = bond_raw[:, :2]
    global_ends = (bond_atoms + np.repeat(atom_start, bond_counts)[:, None]).ravel()
    bond_in_ring = np.zeros(total_bonds, dtype=np.int64)
    bond_in_ring[ring_bonds] = 1
    atom_raw = np.empty((total_atoms, len(ATOM_FEATURES)), dtype=np.int64)
    atom_raw[:, _ATOM_GETTER_COLUMNS] = np.array(atoms, dtype=np.int64).reshape(-1, 7)
    atom_raw[:, _DEGREE] = np.bincount(global_ends, minlength=total_atoms)
    atom_raw[:, _ATOM_IN_RING] = (
        np.bincount(global_ends, weights=np.repeat(bond_in_ring, 2), minlength=total_atoms) > 0
    )
    bond_raw = np.insert(bond_raw[:, 2:], _BOND_IN_RING, bond_in_ring, axis=1)
    return MolArrays(
        atom_counts=atom_counts,
        bond_counts=bond_counts,
        atom_codes=_encode_columns(atom_raw, ATOM_FEATURES),
        bond_atoms=bond_atoms,
        bond_codes=_encode_columns(bond_raw, BOND_FEATURES),
        rwse=random_walk_return_probabilities(atom_counts, bond_counts, bond_atoms, rwse_steps),
    )


def _encode_columns(raw: np.ndarray, vocabularies: Sequence[Vocabulary]) -> np.ndarray:
    codes = np.empty(raw.shape, dtype=np.uint8)
    for column, vocabulary in enumerate(vocabularies):
        codes[:, column] = vocabulary.encode(raw[:, column])
    return codes


def mol_to_graph(mol: Chem.Mol, rwse_steps: int = DEFAULT_RWSE_STEPS) -> MolGraph:
    """Integer-code one sanitized RDKit molecule (see ATOM_FEATURES / BOND_FEATURES)."""
    arrays = mols_to_arrays([mol], rwse_steps)
    return MolGraph(arrays.atom_codes, arrays.bond_atoms, arrays.bond_codes, arrays.rwse)


def parse_smiles(smiles: str) -> tuple[Chem.Mol | None, str]:
    """Parse and sanitize one SMILES. Returns (mol, "") or (None, RDKit's reason).

    The reason comes from the exception RDKit raises while sanitizing (e.g. "Explicit valence for
    atom # 20 Al, 6, is greater than permitted"), or names a syntax error when parsing fails.
    """
    text = smiles.strip()
    if not text:
        return None, "empty SMILES"
    mol = Chem.MolFromSmiles(text)
    if mol is not None:
        if mol.GetNumAtoms() == 0:
            return None, "SMILES has no atoms"
        return mol, ""
    # Failure path only (rare): find out why, without printing RDKit's log lines.
    raw = Chem.MolFromSmiles(text, sanitize=False)
    if raw is None:
        return None, f"SMILES parse error: {text!r} is not valid SMILES syntax"
    try:
        Chem.SanitizeMol(raw)
    except Exception as exc:  # RDKit raises several sanitization exception types
        return None, " ".join(str(exc).split())
    return None, "RDKit could not build a molecule from this SMILES"
