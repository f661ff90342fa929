"""Structural encodings computed once at featurization time.

RWSE (random-walk structural encoding; Dwivedi et al., "Graph Neural Networks with Learnable
Structural and Positional Representations", ICLR 2022; used by GPS, Rampasek et al. 2022):
for each atom i, the probability that a simple random walk starting at i is back at i after
k = 1..K steps, i.e. diag((D^-1 A)^k).
"""

from __future__ import annotations

import numpy as np

#: Molecules are padded to a multiple of this many atoms and processed as one batched matmul per
#: size bucket: a few numpy calls per chunk instead of K small matmuls per molecule.
_BUCKET = 8


def random_walk_return_probabilities(
    atom_counts: np.ndarray, bond_counts: np.ndarray, bond_atoms: np.ndarray, steps: int
) -> np.ndarray:
    """RWSE of G molecules with A atoms and M bonds in all.

    Args:
        atom_counts: int [G]; bond_counts: int [G].
        bond_atoms: int [M, 2], each undirected bond once, atom indices local to its molecule.
        steps: K.

    Returns:
        float32 [A, K]; column k-1 holds diag(P^k) with P = D^-1 A of the atom's molecule.
        An isolated atom (a counter-ion) never moves and gets zeros, as in PyG's AddRandomWalkPE.
        Column 0 is zero: molecules have no self-loops.

    Molecules are stacked by padded size and solved with batched matrix products (see
    `_return_probabilities`), a few numpy calls per size bucket rather than per molecule.
    """
    atom_counts = np.asarray(atom_counts, dtype=np.int64)
    total_atoms = int(atom_counts.sum())
    out = np.zeros((total_atoms, steps), dtype=np.float32)
    if total_atoms == 0 or steps == 0:
        return out
    atom_start = np.concatenate([[0], np.cumsum(atom_counts)[:-1]])
    bond_mol = np.repeat(np.arange(len(atom_counts)), bond_counts)
    padded = (atom_counts + _BUCKET - 1) // _BUCKET * _BUCKET
    for size in np.unique(padded):
        mols = np.flatnonzero(padded == size)
        slot = np.full(len(atom_counts), -1)
        slot[mols] = np.arange(len(mols))
        adjacency = np.zeros((len(mols), size, size), dtype=np.float32)
        in_bucket = slot[bond_mol] >= 0
        which = slot[bond_mol[in_bucket]]
        ends = bond_atoms[in_bucket]
        adjacency[which, ends[:, 0], ends[:, 1]] = 1.0
        adjacency[which, ends[:, 1], ends[:, 0]] = 1.0
        diagonals = _return_probabilities(adjacency, steps)
        # scatter back: atom j of molecule g lives at row atom_start[g] + j
        counts = atom_counts[mols]
        rows = np.repeat(atom_start[mols], counts) + _ranges(counts)
        out[rows] = diagonals[np.repeat(np.arange(len(mols)), counts), _ranges(counts)]
    return out


def _return_probabilities(adjacency: np.ndarray, steps: int) -> np.ndarray:
    """diag(P^k), k = 1..steps, for a stack of adjacency matrices [b, n, n] -> [b, n, steps].

    P = D^-1 A is similar to the symmetric S = D^-1/2 A D^-1/2, so diag(P^k) = diag(S^k), and
    for symmetric S: diag(S^2j)_i = sum_l (S^j)_il^2 and diag(S^2j+1)_i = sum_l (S^j)_il (S^j+1)_il.
    Powers up to S^ceil(K/2) give all K diagonals: half the matrix products of the plain loop.
    """
    degree = adjacency.sum(axis=2)
    scale = np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1.0)), 0.0).astype(np.float32)
    symmetric = adjacency * scale[:, :, None] * scale[:, None, :]
    powers = [symmetric]  # powers[j - 1] = S^j
    while len(powers) < (steps + 1) // 2 + 1:
        powers.append(powers[-1] @ symmetric)
    out = np.empty(adjacency.shape[:2] + (steps,), dtype=np.float32)
    for k in range(1, steps + 1):
        if k == 1:
            out[:, :, 0] = np.diagonal(symmetric, axis1=1, axis2=2)
        else:
            half = k // 2
            left, right = powers[half - 1], powers[k - half - 1]
            out[:, :, k - 1] = np.einsum("bij,bij->bi", left, right)
    return out


def _ranges(counts: np.ndarray) -> np.ndarray:
    """Concatenated aranges: [0..c0-1, 0..c1-1, ...]."""
    total = int(counts.sum())
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total) - starts
