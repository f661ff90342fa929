"""Applicability-domain cost: Morgan fingerprints and nearest-neighbour Tanimoto search.

    OMP_NUM_THREADS=1 python benchmarks/domain_similarity.py [--queries 100000] [--train 2000,5000]

Molecules: the drug-like SMILES of benchmarks/library.py (the shared MoleculeNet CSVs, then
RDKit's NCI sample; ~23,000 rows, read from disk). Fingerprints (RDKit Morgan radius 2, 2048
bits, packed to 256 bytes) are built once for every distinct SMILES: fingerprints/s counts
parsing the SMILES too. The training set is the first N distinct valid molecules; the query set
is every fingerprint, repeated in order up to --queries rows (popcount search does the same
work whatever the bits, so repeats cost what new molecules would). Reported per training size:
seconds, queries/s and million query x training pairs/s of molsam.uncertainty.domain.
nearest_neighbors (default 64 MiB blocks), its peak traced memory on 10,000 queries, and RDKit's
DataStructs.BulkTanimotoSimilarity (one call per query) on 2,000 queries for comparison.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from library import moleculenet_smiles, nci_smiles  # noqa: E402

from molsam.uncertainty.domain import (  # noqa: E402
    Fingerprints,
    morgan_fingerprints,
    nearest_neighbors,
)


def distinct(smiles: list[str]) -> list[str]:
    return list(dict.fromkeys(s for s in smiles if s))


def rdkit_rate(train_smiles: list[str], query_smiles: list[str]) -> float:
    """Pairs/s of RDKit's BulkTanimotoSimilarity, one call per query (fingerprints prebuilt)."""
    from rdkit import Chem, DataStructs, rdBase
    from rdkit.Chem import rdFingerprintGenerator

    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    with rdBase.BlockLogs():
        train = [generator.GetFingerprint(Chem.MolFromSmiles(s)) for s in train_smiles]
        query = [generator.GetFingerprint(Chem.MolFromSmiles(s)) for s in query_smiles]
    start = time.perf_counter()
    for fp in query:
        DataStructs.BulkTanimotoSimilarity(fp, train)
    return len(train) * len(query) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=100_000)
    parser.add_argument("--train", default="2000,5000", help="training set sizes, comma-separated")
    args = parser.parse_args()
    sizes = [int(x) for x in args.train.split(",")]

    smiles = distinct(moleculenet_smiles() + nci_smiles())
    start = time.perf_counter()
    fps = morgan_fingerprints(smiles)
    seconds = time.perf_counter() - start
    valid = np.flatnonzero(fps.valid)
    bits_set = fps.unpacked()[valid].sum(axis=1)
    print(f"numpy {np.__version__}, bitwise_count: {hasattr(np, 'bitwise_count')}")
    print(
        f"fingerprints: {len(smiles):,} distinct SMILES ({len(valid):,} valid, mean "
        f"{bits_set.mean():.1f} bits set) in {seconds:.2f} s = {len(smiles) / seconds:,.0f}/s "
        f"(from SMILES); {fps.bits.nbytes / len(fps):.0f} bytes a molecule"
    )
    order = np.resize(valid, args.queries)
    query = Fingerprints(fps.bits[order], np.ones(len(order), bool))
    for n_train in sizes:
        train = Fingerprints(fps.bits[valid[:n_train]], np.ones(n_train, bool))
        start = time.perf_counter()
        found = nearest_neighbors(query, train)
        seconds = time.perf_counter() - start
        pairs = len(query) * n_train
        inside = np.mean(found.n_similar > 0)
        tracemalloc.start()
        nearest_neighbors(Fingerprints(query.bits[:10_000], np.ones(10_000, bool)), train)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rdkit = rdkit_rate(
            [smiles[i] for i in valid[:n_train]], [smiles[i] for i in order[:2000]]
        )
        print(
            f"train {n_train:,} x queries {len(query):,}: {seconds:.2f} s = "
            f"{len(query) / seconds:,.0f} queries/s = {pairs / seconds / 1e6:.1f} M pairs/s; "
            f"peak {peak / 2**20:.0f} MiB (10,000 queries); RDKit BulkTanimotoSimilarity "
            f"{rdkit / 1e6:.1f} M pairs/s; {inside:.0%} of queries have a training molecule "
            f">= 0.4 (the training molecules are among the queries)"
        )


if __name__ == "__main__":
    main()
