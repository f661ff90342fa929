"""The applicability-domain record a checkpoint carries: its training split's fingerprints.

At the end of training every replicate's best.pt gets, under "domain", the Morgan fingerprints
(radius 2, 2048 bits; Rogers & Hahn, J. Chem. Inf. Model. 2010) of the training split's
molecules, packed 8 bits a byte (molsam.uncertainty.domain.Fingerprints.to_dict(): `bytes`,
256 bytes a molecule plus one validity bit, which torch.load(weights_only=True) reads).
`molsam predict` measures the Tanimoto similarity of every molecule it scores to them
(molsam.predict: `molsam_train_similarity`, `molsam_train_neighbors`), the distance-to-model
measure of Sheridan et al. (J. Chem. Inf. Comput. Sci. 2004).

RDKit makes the fingerprints; a machine that trains from a featurized store without RDKit
writes no record (predict then says why it has no domain columns).
"""

from __future__ import annotations

from collections.abc import Sequence


def training_domain(smiles: Sequence[str]) -> dict | None:
    """The "domain" record of a training split: Fingerprints.to_dict() of its G SMILES plus
    {"split": "train"}; None when RDKit is not installed.

    smiles: [G] SMILES of the training molecules (the store's, as featurized)."""
    try:
        from molsam.uncertainty.domain import morgan_fingerprints

        fingerprints = morgan_fingerprints(list(smiles))
    except ImportError:
        return None
    return {**fingerprints.to_dict(), "split": "train"}
