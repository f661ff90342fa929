"""The featurizer's contract without RDKit: vocabulary names and sizes, RWSE steps, the spec.

Everything the model, the store loader and checkpoints need to know about the integer codes lives
here, so training and prediction from a featurized store import on a machine without RDKit (a GPU
box often has torch but not RDKit). molsam.chem.features builds the actual vocabularies from
RDKit's enums and checks at import that their names and sizes are exactly these.
"""

from __future__ import annotations

#: Bump when codes change meaning: stores and checkpoints record it and refuse a mismatch.
FEATURIZER_VERSION = 1
DEFAULT_RWSE_STEPS = 16
#: Optional inputs a featurizer can add beside the codes: "compt" (molsam.chem.compt_inputs:
#: atom scalars with Gasteiger charges, topological distance matrices) for molsam.models.compt;
#: the molecule-level features "rdkit2d" and "morgan_count" (molsam.chem.descriptors).
FEATURIZER_EXTRAS = ("compt", "rdkit2d", "morgan_count")
#: The extras that are one row of numbers per molecule, in the order their columns are joined.
MOLECULE_FEATURE_EXTRAS = ("rdkit2d", "morgan_count")


def molecule_feature_extras(extras) -> tuple[str, ...]:
    """The molecule-level extras among `extras`, in MOLECULE_FEATURE_EXTRAS order."""
    return tuple(name for name in MOLECULE_FEATURE_EXTRAS if name in extras)
#: CoMPT's distance matrices are stored as uint8; this code marks atoms with no path between
#: them (another fragment) or more than 254 bonds apart, read back as RDKit's 1e8.
UNREACHABLE = 255
RDKIT_UNREACHABLE = 1e8

#: (name, number of codes including the trailing "unknown" slot), in column order of the
#: per-atom code matrix (molsam.chem.features.ATOM_FEATURES).
ATOM_VOCABULARIES: tuple[tuple[str, int], ...] = (
    ("atomic_num", 119),
    ("chirality", 5),
    ("degree", 8),
    ("formal_charge", 8),
    ("total_hs", 6),
    ("radical_electrons", 4),
    ("hybridization", 7),
    ("aromatic", 3),
    ("in_ring", 3),
)

#: The same for bonds (molsam.chem.features.BOND_FEATURES).
BOND_VOCABULARIES: tuple[tuple[str, int], ...] = (
    ("bond_type", 5),
    ("stereo", 7),
    ("conjugated", 3),
    ("in_ring", 3),
)

ATOM_VOCAB_SIZES: tuple[int, ...] = tuple(size for _, size in ATOM_VOCABULARIES)
BOND_VOCAB_SIZES: tuple[int, ...] = tuple(size for _, size in BOND_VOCABULARIES)


def featurizer_spec(rwse_steps: int = DEFAULT_RWSE_STEPS, extras: tuple[str, ...] = ()) -> dict:
    """Everything that determines the codes: saved in stores and checkpoints, compared on load.

    `extras` (FEATURIZER_EXTRAS) appear only when there are some, so the spec of a featurizer
    without them is the one stores and checkpoints have always recorded.
    """
    unknown = sorted(set(extras) - set(FEATURIZER_EXTRAS))
    if unknown:
        raise ValueError(f"featurizer extras {unknown} are not among {list(FEATURIZER_EXTRAS)}")
    spec = {
        "version": FEATURIZER_VERSION,
        "atom_features": [[name, size] for name, size in ATOM_VOCABULARIES],
        "bond_features": [[name, size] for name, size in BOND_VOCABULARIES],
        "rwse_steps": int(rwse_steps),
    }
    if extras:
        spec["extras"] = sorted(set(extras))
    return spec


def spec_extras(spec: dict) -> tuple[str, ...]:
    """The extras a recorded featurizer spec asks for (none in specs written before extras)."""
    return tuple(spec.get("extras", ()))
