"""Molecule-level features computed beside the graph: RDKit's 2-D descriptors, Morgan counts.

- `rdkit2d`: every descriptor of `rdkit.Chem.Descriptors` (its `_descList`, in that order: 217
  with RDKit 2024-2025), the set chemprop's `rdkit_2d` featurizer and DeepChem's
  `RDKitDescriptors` compute. A descriptor that raises, or returns NaN or +-inf, is stored as
  NaN; the trainer's scaler (molsam.models.features.FeatureScaler) fills NaN with the training
  mean and reports how many values it filled.
- `morgan_count`: Morgan (ECFP-like) fingerprint of radius 2 folded to 2,048 bits, as counts
  (RDKit's rdFingerprintGenerator), the counts chemprop's `morgan_count` featurizer uses.

Cost (benchmarks/featurize.py --extras rdkit2d): RDKit's descriptors take milliseconds per
molecule, far more than the graph itself. Two changes, everything else is RDKit's own code:
- The four E-state descriptors each recompute the E-state indices when called through
  `Descriptors` (force=1); here they are computed once per molecule and the four read them
  (the same values: the functions' own code on RDKit's cached indices).
- Ipc and AvgIpc take the characteristic polynomial of the adjacency matrix by the
  Le Verrier-Faddeev recursion, n matrix products, O(n^4) in Python/numpy: ~1 s for a
  250-atom peptide, 90% of all descriptor time on an HIV-like library. Here the polynomial
  comes from the eigenvalues of the (symmetric) adjacency matrix, O(n^3), and RDKit's own
  information entropy is applied to it: equal to RDKit's values to ~1e-9 relative on drug-like
  molecules (tested), and far closer to the truth on large ones, where the recursion's rounding
  explodes: on a 125-atom peptide of the library benchmark, exact integer arithmetic gives Ipc
  1.8013e25, this form 1.8012e25, RDKit's 2.4e35.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from rdkit import Chem
from rdkit import rdBase
from rdkit.Chem import Descriptors, rdFingerprintGenerator
from rdkit.Chem.EState import EState
from rdkit.ML.InfoTheory import entropy

#: Names of the rdkit2d columns, in order.
RDKIT2D_NAMES: tuple[str, ...] = tuple(name for name, _ in Descriptors._descList)
_RDKIT2D_FUNCTIONS = tuple(function for _, function in Descriptors._descList)
#: Descriptors that take `force` and read cached E-state indices when force is false.
_ESTATE = {"MaxEStateIndex", "MinEStateIndex", "MaxAbsEStateIndex", "MinAbsEStateIndex"}
MORGAN_RADIUS = 2
MORGAN_BITS = 2048
MORGAN_NAMES: tuple[str, ...] = tuple(f"morgan_count_{i}" for i in range(MORGAN_BITS))


def _characteristic_coefficients(mol: Chem.Mol) -> np.ndarray:
    """|coefficients| of the characteristic polynomial of the hydrogen-suppressed adjacency
    matrix, from its eigenvalues (see the module docstring)."""
    adjacency = (Chem.GetDistanceMatrix(mol, False) == 1).astype(np.float64)
    return np.abs(np.poly(np.linalg.eigvalsh(adjacency)))


def ipc(mol: Chem.Mol, avg: bool = False) -> float:
    """Bonchev-Trinajstic information content (RDKit's GraphDescriptors.Ipc), fast."""
    coefficients = _characteristic_coefficients(mol)
    information = entropy.InfoEntropy(coefficients)
    return information if avg else float(coefficients.sum()) * information


#: Descriptors computed here instead of through RDKit's function (same quantity, see above).
_FAST = {"Ipc": lambda mol: ipc(mol), "AvgIpc": lambda mol: ipc(mol, avg=True)}


def _descriptor(name: str, function, mol: Chem.Mol) -> float:
    try:
        if name in _FAST:
            value = float(_FAST[name](mol))
        else:
            value = float(function(mol, 0) if name in _ESTATE else function(mol))
    except Exception:  # RDKit raises assorted types for molecules a descriptor cannot handle
        return math.nan
    return value if math.isfinite(value) else math.nan


def rdkit2d(mols: Sequence[Chem.Mol]) -> np.ndarray:
    """float32 [G, len(RDKIT2D_NAMES)]; NaN where a descriptor fails or is not finite."""
    out = np.empty((len(mols), len(RDKIT2D_NAMES)), dtype=np.float32)
    blocker = rdBase.BlockLogs()  # e.g. QED's RemoveHs warnings: not the user's concern
    try:
        for row, mol in enumerate(mols):
            EState.EStateIndices(mol, force=True)  # cached on the molecule for the four readers
            out[row] = [_descriptor(name, function, mol)
                        for name, function in zip(RDKIT2D_NAMES, _RDKIT2D_FUNCTIONS)]
    finally:
        del blocker
    return out


def morgan_counts(mols: Sequence[Chem.Mol]) -> np.ndarray:
    """float32 [G, 2048]: radius-2 Morgan counts folded to 2,048 bits."""
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=MORGAN_RADIUS,
                                                         fpSize=MORGAN_BITS)
    out = np.zeros((len(mols), MORGAN_BITS), dtype=np.float32)
    for row, mol in enumerate(mols):
        out[row] = generator.GetCountFingerprintAsNumPy(mol)
    return out


#: Featurizer extras (molsam.chem.spec.MOLECULE_FEATURE_EXTRAS) -> (column names, function).
MOLECULE_FEATURES = {
    "rdkit2d": (RDKIT2D_NAMES, rdkit2d),
    "morgan_count": (MORGAN_NAMES, morgan_counts),
}


def molecule_features(mols: Sequence[Chem.Mol], extras: Sequence[str]) -> np.ndarray | None:
    """The molecule-level extras among `extras`, side by side in MOLECULE_FEATURE_EXTRAS order:
    float32 [G, F], or None when `extras` asks for none."""
    from molsam.chem.spec import molecule_feature_extras

    wanted = molecule_feature_extras(extras)
    if not wanted:
        return None
    parts = [MOLECULE_FEATURES[name][1](mols) for name in wanted]
    return np.concatenate(parts, axis=1) if parts else None
