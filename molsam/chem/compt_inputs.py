"""CoMPT's extra per-molecule inputs, computed by the featurize workers beside the integer codes.

CoMPT (Chen et al., "Learning Attributed Graph Representations with Communicative Message
Passing Transformer", IJCAI 2021) reads 115 atom and 13 bond columns per molecule and the
topological distance matrix. Most of those columns are one-hot views of values molsam already
stores as integer codes (atomic number, hybridization, bond type, stereo, conjugation, rings);
molsam.models.compt rebuilds them from the codes on the device. What the codes cannot give is
computed here, once per molecule:

- eight atom scalars, exactly as the CoMPT code computes them: total H count / 8, degree / 4,
  formal charge / 8, total valence / 8, Gasteiger charge and Gasteiger H charge (NaN or inf
  become 0), aromatic, in ring;
- the topological distance matrix (bonds on the shortest path, RDKit's GetDistanceMatrix),
  stored row-major per molecule as uint8: atoms of different fragments (RDKit: 1e8) and paths
  longer than 254 bonds are stored as UNREACHABLE and read back as RDKit's 1e8, so the distance
  kernel gives them weight 0 as in the reference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from rdkit import Chem
from rdkit.Chem import rdPartialCharges

from molsam.chem.spec import UNREACHABLE

#: The featurizer extra that adds these inputs (molsam.chem.spec.featurizer_spec(extras=...)).
COMPT = "compt"
#: Columns of `CoMPTInputs.atom_scalars`, in order.
ATOM_SCALAR_COLUMNS = (
    "total_hs/8", "degree/4", "formal_charge/8", "total_valence/8", "gasteiger_charge",
    "gasteiger_h_charge", "aromatic", "in_ring",
)


class CoMPTInputs(NamedTuple):
    """A atoms of G molecules with n_g atoms each.

    atom_scalars: float32 [A, 8] (ATOM_SCALAR_COLUMNS)
    distances:    uint8 [sum_g n_g^2] each molecule's n_g x n_g distance matrix, row-major
    """

    atom_scalars: np.ndarray
    distances: np.ndarray


def _finite(value: float) -> float:
    return 0.0 if math.isnan(value) or math.isinf(value) else value


def _atom_scalars(mol: Chem.Mol) -> list[tuple]:
    # Gasteiger charges on a copy: the caller's molecule keeps no computed properties.
    charged = Chem.Mol(mol)
    rdPartialCharges.ComputeGasteigerCharges(charged)
    rows = []
    for atom in charged.GetAtoms():
        rows.append((
            atom.GetTotalNumHs(includeNeighbors=True) / 8,
            atom.GetDegree() / 4,
            atom.GetFormalCharge() / 8,
            atom.GetTotalValence() / 8,
            _finite(atom.GetDoubleProp("_GasteigerCharge")),
            _finite(atom.GetDoubleProp("_GasteigerHCharge")),
            float(atom.GetIsAromatic()),
            float(atom.IsInRing()),
        ))
    return rows


def _distances(mol: Chem.Mol) -> np.ndarray:
    matrix = Chem.GetDistanceMatrix(mol)
    out = np.full(matrix.shape, UNREACHABLE, dtype=np.uint8)
    reachable = matrix < UNREACHABLE
    out[reachable] = matrix[reachable].astype(np.uint8)
    return out.ravel()


def compt_inputs(mols: Sequence[Chem.Mol]) -> CoMPTInputs:
    """The eight atom scalars and the distance matrices of sanitized molecules (atoms in RDKit
    order, the order of molsam.chem.features.mols_to_arrays)."""
    rows = [row for mol in mols for row in _atom_scalars(mol)]
    scalars = np.array(rows, dtype=np.float32).reshape(-1, len(ATOM_SCALAR_COLUMNS))
    distances = [_distances(mol) for mol in mols]
    flat = np.concatenate(distances) if distances else np.zeros(0, dtype=np.uint8)
    return CoMPTInputs(atom_scalars=scalars, distances=flat)
