"""Structural encodings computed once at featurization time.

RWSE (random-walk structural encoding; Dwivedi et al., "Graph Neural Networks with Learnable
Structural and Positional Representations", ICLR 2022; used by GPS, Rampasek et al. 2022):
for each atom i, the probability that a simple random walk starting at i is back at i after
k = 1..K steps, i.e. diag((D^-1 A)^k).
"""

from __future__ import annotations

import numpy as np


def random_walk_return_probabilities(
    num_atoms: int, bond_atoms: np.ndarray, steps: int
) -> np.ndarray:
    """RWSE of one molecule.

    Args:
        num_atoms: n.
        bond_atoms: int [m, 2], each undirected bond once.
        steps: K.

    Returns:
        float32 [n, K]; column k-1 holds diag(P^k) with P = D^-1 A. An isolated atom (degree 0,
        e.g. a counter-ion) never moves, and gets zeros like in PyG's AddRandomWalkPE.
    """
    out = np.zeros((num_atoms, steps), dtype=np.float32)
    if num_atoms == 0 or steps == 0 or len(bond_atoms) == 0:
        return out
    adjacency = np.zeros((num_atoms, num_atoms), dtype=np.float64)
    adjacency[bond_atoms[:, 0], bond_atoms[:, 1]] = 1.0
    adjacency[bond_atoms[:, 1], bond_atoms[:, 0]] = 1.0
    degree = adjacency.sum(axis=1)
    transition = adjacency / np.maximum(degree, 1.0)[:, None]
    power = transition
    out[:, 0] = 0.0  # diag(P) is zero: molecules have no self-loops
    for k in range(1, steps):
        power = power @ transition
        out[:, k] = np.diagonal(power)
    return out
