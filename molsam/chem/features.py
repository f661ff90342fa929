"""SMILES -> integer-coded molecular graph.

Every atom and bond becomes a handful of small integer category codes (one byte each), not a
float one-hot vector: codes are ~2x faster to build and ~20x smaller, and the model embeds them
on the device. Every vocabulary ends with an "unknown" slot, so a rare element, charge or
hybridization maps there instead of failing (as chemprop's featurizers do).

Graphs are heavy-atom graphs (hydrogens implicit, counted by the `total_hs` code).
"""

from __future__ import annotations

import functools
from itertools import chain
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


# The per-atom and per-bond Python work is all of the featurizer's own cost, so it is kept to one
# call per value: the getters are taken unbound from the class (`Chem.Atom.GetAtomicNum(atom)`
# skips the attribute lookup a bound `atom.GetAtomicNum()` does on every call, through the
# Boost.Python instance's __dict__ to its class), and atoms and bonds are fetched by index
# (`GetAtomWithIdx`), not through `Mol.GetAtoms()`, whose sequence wrapper (rdkit.Chem._ROAtomSeq)
# runs __len__ and __getitem__ in Python for every atom. Together ~30% less time than bound
# getters over GetAtoms()/GetBonds() (CPU per molecule of benchmarks/library.py's drug-like set:
# atoms 124 -> 90 us, bonds 120 -> 84 us; mols_to_arrays as a whole 343 -> 275 us).
# The enums (chirality, hybridization, bond type, stereo) are int subclasses: numpy takes their
# values as they are, without an int() call each.
_A, _B = Chem.Atom, Chem.Bond
#: ATOM_FEATURES columns read with a getter, in the order of `_atom_rows`' tuples; degree and ring
#: membership come from the bond arrays instead.
_ATOM_GETTER_COLUMNS = (0, 1, 3, 4, 5, 6, 7)
_DEGREE, _ATOM_IN_RING = 2, 8
_BOND_IN_RING = 3


def _atom_rows(mols: Sequence[Chem.Mol]) -> list[tuple]:
    """One tuple per atom of every molecule: the ATOM_FEATURES values that need a getter."""
    number, chirality, charge, hydrogens = (
        _A.GetAtomicNum, _A.GetChiralTag, _A.GetFormalCharge, _A.GetTotalNumHs
    )
    radicals, hybridization, aromatic = (
        _A.GetNumRadicalElectrons, _A.GetHybridization, _A.GetIsAromatic
    )
    atoms = chain.from_iterable(map(m.GetAtomWithIdx, range(m.GetNumAtoms())) for m in mols)
    return [
        (number(a), chirality(a), charge(a), hydrogens(a), radicals(a), hybridization(a),
         aromatic(a))
        for a in atoms
    ]


def _bond_rows(mols: Sequence[Chem.Mol]) -> list[tuple]:
    """One tuple per bond: begin atom, end atom, then BOND_FEATURES in column order.

    Ring membership is `IsInRing` (the molecule's ring info, as RingInfo.BondRings() would
    give it), one more call per bond instead of flattening every molecule's ring tuples in Python.
    """
    begin, end, kind, stereo, conjugated, in_ring = (
        _B.GetBeginAtomIdx, _B.GetEndAtomIdx, _B.GetBondType, _B.GetStereo, _B.GetIsConjugated,
        _B.IsInRing,
    )
    bonds = chain.from_iterable(map(m.GetBondWithIdx, range(m.GetNumBonds())) for m in mols)
    return [
        (begin(b), end(b), kind(b), stereo(b), conjugated(b), in_ring(b)) for b in bonds
    ]


def mols_to_arrays(mols: Sequence[Chem.Mol], rwse_steps: int = DEFAULT_RWSE_STEPS) -> MolArrays:
    """Integer-code sanitized RDKit molecules (columns: ATOM_FEATURES, BOND_FEATURES).

    The per-atom Python work is one tuple of seven RDKit getters and the per-bond work one of
    six (see `_atom_rows`, `_bond_rows`); degree (bonds per atom) and atom ring membership (an
    atom is in a ring iff one of its bonds is) come from the bond arrays. Mapping raw values to
    codes (table lookups) and the random-walk encodings are vectorized over all molecules at once.
    """
    atom_counts = np.fromiter((m.GetNumAtoms() for m in mols), dtype=np.int64, count=len(mols))
    bond_counts = np.fromiter((m.GetNumBonds() for m in mols), dtype=np.int64, count=len(mols))
    total_atoms = int(atom_counts.sum())
    atom_start = np.cumsum(atom_counts) - atom_counts
    bond_raw = np.array(_bond_rows(mols), dtype=np.int64).reshape(-1, 6)
    bond_atoms = bond_raw[:, :2]
    global_ends = (bond_atoms + np.repeat(atom_start, bond_counts)[:, None]).ravel()
    bond_in_ring = bond_raw[:, 2 + _BOND_IN_RING]
    atom_raw = np.empty((total_atoms, len(ATOM_FEATURES)), dtype=np.int64)
    atom_raw[:, _ATOM_GETTER_COLUMNS] = np.array(_atom_rows(mols), dtype=np.int64).reshape(-1, 7)
    atom_raw[:, _DEGREE] = np.bincount(global_ends, minlength=total_atoms)
    atom_raw[:, _ATOM_IN_RING] = (
        np.bincount(global_ends, weights=np.repeat(bond_in_ring, 2), minlength=total_atoms) > 0
    )
    return MolArrays(
        atom_counts=atom_counts,
        bond_counts=bond_counts,
        atom_codes=_encode_columns(atom_raw, ATOM_FEATURES),
        bond_atoms=np.ascontiguousarray(bond_atoms),
        bond_codes=_encode_columns(bond_raw[:, 2:], BOND_FEATURES),
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
