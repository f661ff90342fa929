"""molsam.uncertainty.domain: popcount Tanimoto equals RDKit's on real molecules, blocked
search equals unblocked, memory stays bounded, storage is compact and weights_only-safe."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from molsam.uncertainty import domain
from molsam.uncertainty.domain import (
    Fingerprints,
    morgan_fingerprints,
    nearest_neighbors,
    popcount,
    tanimoto_matrix,
)

Chem = pytest.importorskip("rdkit.Chem")
from rdkit import DataStructs, RDConfig  # noqa: E402
from rdkit.Chem import rdFingerprintGenerator  # noqa: E402

SDF = Path(RDConfig.RDDataDir) / "NCI" / "first_200.props.sdf"


@pytest.fixture(scope="module")
def molecules():
    mols = [m for m in Chem.SDMolSupplier(str(SDF)) if m is not None]
    assert len(mols) > 150
    return mols


@pytest.fixture(scope="module")
def fingerprints(molecules):
    return morgan_fingerprints(molecules)


def test_bits_equal_rdkit_morgan_radius_2_2048(molecules, fingerprints):
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    expected = np.array([generator.GetFingerprintAsNumPy(m) for m in molecules])
    np.testing.assert_array_equal(fingerprints.unpacked(), expected)
    assert fingerprints.valid.all()


def test_packed_fingerprints_take_at_most_300_bytes_a_molecule(fingerprints):
    n = len(fingerprints)
    assert fingerprints.bits.shape == (n, 256) and fingerprints.bits.dtype == np.uint8
    assert fingerprints.words.shape == (n, 32) and fingerprints.words.dtype == np.uint64
    stored = fingerprints.to_dict()
    assert (len(stored["bits"]) + len(stored["valid"])) / n <= 300


def test_tanimoto_by_popcount_equals_rdkit_bulk_tanimoto(molecules, fingerprints):
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    rdkit_fps = [generator.GetFingerprint(m) for m in molecules]
    expected = np.array([DataStructs.BulkTanimotoSimilarity(fp, rdkit_fps) for fp in rdkit_fps])
    ours = tanimoto_matrix(fingerprints, fingerprints)
    np.testing.assert_array_equal(ours, expected)  # the same integer ratio in float64
    # Nearest neighbour of the first 100 among the other 100+ molecules.
    query, train = fingerprints.bits[:100], fingerprints.bits[100:]
    found = nearest_neighbors(query, train, threshold=0.4)
    block = expected[:100, 100:]
    np.testing.assert_array_equal(found.similarity, block.max(axis=1))
    np.testing.assert_array_equal(found.index, block.argmax(axis=1))
    np.testing.assert_array_equal(found.n_similar, (block >= 0.4).sum(axis=1))


def test_popcount_counts_set_bits(fingerprints):
    np.testing.assert_array_equal(popcount(fingerprints.words), fingerprints.unpacked().sum(axis=1))
    np.testing.assert_array_equal(popcount(fingerprints.bits), fingerprints.unpacked().sum(axis=1))


def random_fingerprints(n, seed, density=0.02):
    rng = np.random.default_rng(seed)
    return np.packbits(rng.random((n, 2048)) < density, axis=1)


def test_blocked_search_equals_unblocked():
    query = random_fingerprints(700, seed=1)
    train = random_fingerprints(300, seed=2, density=0.03)
    train[17] = query[5]  # an exact match
    train[40] = train[17]  # ... twice: the first index wins
    whole = nearest_neighbors(query, train, max_block_bytes=1 << 30)
    matrix = tanimoto_matrix(query, train)
    np.testing.assert_array_equal(whole.similarity, matrix.max(axis=1))
    np.testing.assert_array_equal(whole.index, matrix.argmax(axis=1))
    assert whole.index[5] == 17 and whole.similarity[5] == 1.0
    as_words = nearest_neighbors(query.view(np.uint64), train.view(np.uint64))
    np.testing.assert_array_equal(as_words.similarity, whole.similarity)
    # Blocks of 7 training x 64 query molecules (uneven remainders), 300 x 64, 5000 pairs, all.
    for budget in (27 * 64 * 7, 27 * 64 * 300, 27 * 5000, 1 << 20):
        blocked = nearest_neighbors(query, train, max_block_bytes=budget)
        np.testing.assert_array_equal(blocked.similarity, whole.similarity)
        np.testing.assert_array_equal(blocked.index, whole.index)
        np.testing.assert_array_equal(blocked.n_similar, whole.n_similar)


def test_byte_table_popcount_equals_bitwise_count(monkeypatch):
    query = random_fingerprints(60, seed=3)
    train = random_fingerprints(50, seed=4)
    expected = nearest_neighbors(query, train, threshold=0.05)
    monkeypatch.setattr(domain, "_HAS_BITWISE_COUNT", False)
    fallback = nearest_neighbors(query, train, threshold=0.05, max_block_bytes=27 * 300)
    np.testing.assert_array_equal(fallback.similarity, expected.similarity)
    np.testing.assert_array_equal(fallback.n_similar, expected.n_similar)
    bits_set = np.unpackbits(query, axis=1).sum(axis=1)
    np.testing.assert_array_equal(popcount(query.view(np.uint64)), bits_set)


def test_search_memory_stays_within_its_block_budget():
    query = random_fingerprints(5000, seed=5)
    train = random_fingerprints(1000, seed=6)
    budget = 2 << 20  # the full float64 matrix would be 40 MB
    tracemalloc.start()
    try:
        found = nearest_neighbors(query, train, max_block_bytes=budget)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * budget + 1_000_000  # the block's buffers plus the [G] outputs
    assert np.all(np.isfinite(found.similarity))


def test_invalid_smiles_give_nan_and_are_never_neighbours():
    fps = morgan_fingerprints(["CCO", "not a smiles", None, "", "c1ccccc1O", "C1CC"])
    np.testing.assert_array_equal(fps.valid, [True, False, False, False, True, False])
    assert not fps.bits[~fps.valid].any()
    train = morgan_fingerprints(["CCO", "xx", "c1ccccc1"])
    found = nearest_neighbors(fps, train)
    assert found.similarity[0] == 1.0 and found.index[0] == 0
    assert np.all(np.isnan(found.similarity[~fps.valid]))
    assert np.all(found.index[~fps.valid] == -1) and np.all(np.isnan(found.n_similar[~fps.valid]))
    assert found.index[4] == 2  # phenol's nearest is benzene, not the invalid row 1
    empty = nearest_neighbors(fps, train.bits[:0])
    assert np.all(np.isnan(empty.similarity)) and np.all(empty.index == -1)
    matrix = tanimoto_matrix(fps, train)
    assert np.isnan(matrix[1]).all() and np.isnan(matrix[:, 1]).all()


def test_fingerprints_round_trip_through_a_weights_only_checkpoint(fingerprints):
    with_invalid = Fingerprints(
        np.vstack([fingerprints.bits[:20], np.zeros((1, 256), np.uint8)]),
        np.r_[np.ones(20, bool), False],
    )
    buffer = io.BytesIO()
    torch.save({"domain": with_invalid.to_dict()}, buffer)
    buffer.seek(0)
    back = Fingerprints.from_dict(torch.load(buffer, weights_only=True)["domain"])
    np.testing.assert_array_equal(back.bits, with_invalid.bits)
    np.testing.assert_array_equal(back.valid, with_invalid.valid)
    assert (back.radius, back.n_bits) == (2, 2048)
    with pytest.raises(ValueError, match="version"):
        Fingerprints.from_dict({**with_invalid.to_dict(), "version": 2})
