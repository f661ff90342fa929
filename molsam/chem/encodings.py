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
#: Molecules with more atoms than this go through sparse products, one molecule at a time: a dense
#: [n, n] power costs n^3 (5 s at n = 2,000, where sparse takes 0.04 s); below it, dense batched
#: products are faster (measured crossover ~230 atoms, one thread).
SPARSE_ATOMS = 256


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
    `_return_probabilities`), a few numpy calls per size bucket rather than per molecule;
    molecules of more than SPARSE_ATOMS atoms use sparse products (`_sparse_return_probabilities`;
    same values up to float32 rounding of the sums).
    """
    atom_counts = np.asarray(atom_counts, dtype=np.int64)
    total_atoms = int(atom_counts.sum())
    out = np.zeros((total_atoms, steps), dtype=np.float32)
    if total_atoms == 0 or steps == 0:
        return out
    atom_start = np.concatenate([[0], np.cumsum(atom_counts)[:-1]])
    bond_mol = np.repeat(np.arange(len(atom_counts)), bond_counts)
    bond_start = np.concatenate([[0], np.cumsum(bond_counts)[:-1]]).astype(np.int64)
    for g in np.flatnonzero(atom_counts > SPARSE_ATOMS):
        n, start = int(atom_counts[g]), int(atom_start[g])
        ends = bond_atoms[bond_start[g] : bond_start[g] + int(bond_counts[g])]
        out[start : start + n] = _sparse_return_probabilities(n, ends, steps)
    padded = (atom_counts + _BUCKET - 1) // _BUCKET * _BUCKET
    padded[atom_counts > SPARSE_ATOMS] = 0  # done above
    for size in np.unique(padded[padded > 0]):
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


def _sparse_return_probabilities(n: int, bonds: np.ndarray, steps: int) -> np.ndarray:
    """`_return_probabilities` of one molecule of n atoms with scipy.sparse: [n, steps].

    Molecules are sparse and S^j has nonzeros only within j bonds of each atom, so for the
    K/2 <= 8 powers needed the products stay sparse: cost grows ~linearly with n, not n^3.
    """
    from scipy import sparse  # only large molecules need it

    rows = np.concatenate([bonds[:, 0], bonds[:, 1]])
    cols = np.concatenate([bonds[:, 1], bonds[:, 0]])
    adjacency = sparse.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n, n)
    )
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    scale = np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1.0)), 0.0).astype(np.float32)
    symmetric = sparse.csr_matrix(sparse.diags(scale) @ adjacency @ sparse.diags(scale))
    powers = [symmetric]  # powers[j - 1] = S^j, as in _return_probabilities
    while len(powers) < (steps + 1) // 2 + 1:
        powers.append(powers[-1] @ symmetric)
    out = np.empty((n, steps), dtype=np.float32)
    for k in range(1, steps + 1):
        if k == 1:
            out[:, 0] = symmetric.diagonal()
        else:
            half = k // 2
            product = powers[half - 1].multiply(powers[k - half - 1])
            out[:, k - 1] = np.asarray(product.sum(axis=1)).ravel()
    return out


def _ranges(counts: np.ndarray) -> np.ndarray:
    """Concatenated aranges: [0..c0-1, 0..c1-1, ...]."""
    total = int(counts.sum())
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total) - starts
