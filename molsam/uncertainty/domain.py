"""Applicability domain: how close is a molecule to the training set?

A prediction for a molecule unlike any training molecule deserves less trust (Sheridan,
Feuston, Maiorov & Kearsley, J. Chem. Inf. Comput. Sci. 2004: error grows as the Tanimoto
similarity to the nearest training molecule falls; OECD QSAR validation principle 3). For
every query molecule this module gives the Tanimoto similarity of its Morgan fingerprint
(radius 2, 2048 bits, RDKit's rdFingerprintGenerator.GetMorganGenerator; Rogers & Hahn,
J. Chem. Inf. Model. 2010) to the nearest training molecule, that molecule's index, and the
number of training molecules at or above a similarity threshold (0.4 by default).

Storage: fingerprints are packed 8 bits a byte (np.packbits, big bit order), uint8 [G, 256]
for 2048 bits: 256 bytes a molecule, 1.3 MB for 5,000 training molecules, viewable as uint64
[G, 32] words. `Fingerprints.to_dict()` holds them as `bytes`, which a molsam checkpoint
stores and torch.load(weights_only=True) loads (numpy arrays it refuses).

Search: Tanimoto = |a & b| / (|a| + |b| - |a & b|), with |a & b| by bit-parallel popcounts
over the 64-bit words (np.bitwise_count on numpy >= 2.0, a byte lookup table before), in
blocks of query x training molecules whose buffers stay within `max_block_bytes` (64 MiB by
default), so 100,000 queries against 5,000 training molecules never hold a 100,000 x 5,000
matrix. Two empty fingerprints have similarity 0, as in RDKit. The numbers equal RDKit's
DataStructs.BulkTanimotoSimilarity (tests/unit/test_uncertainty_domain.py); RDKit's own bulk
call is not used because it takes one query at a time as Python objects (8-12 million
pairs/s on one shared core against 19-28 million for the numpy blocks, drug-like molecules,
benchmarks/domain_similarity.py) and its bit vectors do not pickle under weights_only.

RDKit is imported only to make fingerprints: searching stored fingerprints needs numpy alone.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

RADIUS = 2
N_BITS = 2048
#: Query molecules that count as "similar" to a training molecule at or above this Tanimoto.
DEFAULT_THRESHOLD = 0.4
#: Working memory of one search block (uint64 AND, popcounts, accumulators, similarities).
DEFAULT_BLOCK_BYTES = 64 << 20
#: Bytes of working memory per query x training pair in a block.
_BYTES_PER_PAIR = 8 + 1 + 2 + 8 + 8
#: Molecules fingerprinted per unpacked (one byte a bit) buffer.
_FINGERPRINT_CHUNK = 4096
DICT_VERSION = 1

_HAS_BITWISE_COUNT = hasattr(np, "bitwise_count")  # numpy >= 2.0
_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


@dataclass(frozen=True, eq=False)
class Fingerprints:
    """Packed Morgan fingerprints of G molecules.

    bits: uint8 [G, n_bits / 8] (np.packbits order; all zero for an invalid molecule);
    valid: bool [G], False where the molecule could not be read.
    """

    bits: np.ndarray
    valid: np.ndarray
    radius: int = RADIUS
    n_bits: int = N_BITS

    kind = "morgan_fingerprints"

    def __post_init__(self) -> None:
        if self.n_bits % 64:
            raise ValueError(f"n_bits: {self.n_bits} is not a multiple of 64")
        bits = np.ascontiguousarray(self.bits, dtype=np.uint8)
        if bits.ndim != 2 or bits.shape[1] != self.n_bits // 8:
            raise ValueError(f"bits: expected [G, {self.n_bits // 8}] uint8, got {bits.shape}")
        valid = np.asarray(self.valid, dtype=bool).ravel()
        if len(valid) != len(bits):
            raise ValueError(f"valid: {len(valid)} flags for {len(bits)} fingerprints")
        object.__setattr__(self, "bits", bits)
        object.__setattr__(self, "valid", valid)

    def __len__(self) -> int:
        return len(self.bits)

    @property
    def words(self) -> np.ndarray:
        """uint64 [G, n_bits / 64] view of the bits."""
        return self.bits.view(np.uint64)

    def unpacked(self) -> np.ndarray:
        """uint8 [G, n_bits] of 0/1, bit j as GetFingerprintAsNumPy gives it."""
        return np.unpackbits(self.bits, axis=1)

    def to_dict(self) -> dict:
        """Builtins only (bytes for the bits), for a checkpoint loaded with weights_only."""
        return {
            "kind": self.kind,
            "version": DICT_VERSION,
            "radius": int(self.radius),
            "n_bits": int(self.n_bits),
            "count": len(self),
            "bits": self.bits.tobytes(),
            "valid": np.packbits(self.valid).tobytes(),
            "generator": "rdFingerprintGenerator.GetMorganGenerator",
            "rdkit": _rdkit_version(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Fingerprints:
        if not isinstance(data, dict) or data.get("kind") != cls.kind:
            raise ValueError(f"not stored fingerprints: {str(data)[:80]}")
        if data.get("version") != DICT_VERSION:
            raise ValueError(f"fingerprint layout version {data.get('version')} is not supported")
        count, n_bits = int(data["count"]), int(data["n_bits"])
        bits = np.frombuffer(data["bits"], dtype=np.uint8).reshape(count, n_bits // 8).copy()
        valid = np.unpackbits(np.frombuffer(data["valid"], dtype=np.uint8), count=count)
        return cls(bits, valid.astype(bool), int(data["radius"]), n_bits)


def _rdkit_version() -> str | None:
    try:
        return importlib.metadata.version("rdkit")
    except importlib.metadata.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------- fingerprints


def morgan_fingerprints(
    molecules: Iterable, radius: int = RADIUS, n_bits: int = N_BITS
) -> Fingerprints:
    """Morgan fingerprints (RDKit's GetMorganGenerator(radius, fpSize=n_bits), default
    options) of SMILES strings or RDKit molecules, packed.

    molecules: G items, each a SMILES string, an RDKit Mol, or None. An unparsable SMILES,
    None, a non-string or a molecule without atoms is invalid: an all-zero row and
    valid = False (its similarities come out NaN).
    """
    from rdkit import Chem, rdBase
    from rdkit.Chem import rdFingerprintGenerator

    generator = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
    packed, valid = [], []
    buffer = np.zeros((_FINGERPRINT_CHUNK, n_bits), dtype=np.uint8)
    filled = 0

    def flush() -> None:
        nonlocal filled
        packed.append(np.packbits(buffer[:filled], axis=1))
        buffer[:filled] = 0
        filled = 0

    with rdBase.BlockLogs():  # an invalid SMILES is reported by its NaN, not on stderr
        for item in molecules:
            mol = Chem.MolFromSmiles(item) if isinstance(item, str) else item
            ok = isinstance(mol, Chem.Mol) and mol.GetNumAtoms() > 0
            if ok:
                buffer[filled] = generator.GetFingerprintAsNumPy(mol)
            valid.append(ok)
            filled += 1
            if filled == _FINGERPRINT_CHUNK:
                flush()
    if filled or not packed:
        flush()
    return Fingerprints(np.concatenate(packed), np.asarray(valid, dtype=bool), radius, n_bits)


# --------------------------------------------------------------------------- popcounts


def popcount(words: np.ndarray) -> np.ndarray:
    """Set bits per row of a uint64 [G, W] (or uint8 [G, B]) array: int64 [G]."""
    words = np.ascontiguousarray(words)
    if _HAS_BITWISE_COUNT:
        return np.bitwise_count(words).sum(axis=1, dtype=np.int64)
    as_bytes = words.view(np.uint8).reshape(len(words), -1)
    return _BYTE_POPCOUNT[as_bytes].sum(axis=1, dtype=np.int64)


def _intersections(query: np.ndarray, train_t: np.ndarray, out: np.ndarray, scratch) -> None:
    """out[i, j] = popcount(query[i] & train[j]) for uint64 query [q, W] and train_t [W, n]
    (train transposed): one pass a word over the whole block, so each numpy call works on
    q x n elements. out: uint16 [q, n]; scratch: (uint64 [q, n], uint8 [q, n]) buffers."""
    anded, counts = scratch
    out[...] = 0
    for w in range(query.shape[1]):
        np.bitwise_and(query[:, w, None], train_t[w][None, :], out=anded)
        if _HAS_BITWISE_COUNT:
            np.bitwise_count(anded, out=counts)
        else:
            counts[...] = _BYTE_POPCOUNT[anded.view(np.uint8)].reshape(
                *anded.shape, 8
            ).sum(axis=2, dtype=np.uint8)
        np.add(out, counts, out=out)


def _as_fingerprints(value) -> Fingerprints:
    if isinstance(value, Fingerprints):
        return value
    bits = np.ascontiguousarray(value)
    if bits.dtype == np.uint64:  # the words view
        bits = bits.view(np.uint8)
    bits = bits.astype(np.uint8, copy=False)
    return Fingerprints(bits, np.ones(len(bits), dtype=bool), n_bits=bits.shape[1] * 8)


def tanimoto_matrix(query, train) -> np.ndarray:
    """All query x training similarities, float64 [Q, N] (rows of invalid queries NaN,
    columns of invalid training molecules NaN). For small sets; nearest_neighbors searches
    large ones in bounded memory."""
    q, t = _as_fingerprints(query), _as_fingerprints(train)
    if q.n_bits != t.n_bits:
        raise ValueError(f"fingerprints of {q.n_bits} and {t.n_bits} bits cannot be compared")
    inter = np.empty((len(q), len(t)), dtype=np.uint16)
    scratch = (np.empty(inter.shape, np.uint64), np.empty(inter.shape, np.uint8))
    _intersections(q.words, np.ascontiguousarray(t.words.T), inter, scratch)
    union = popcount(q.words)[:, None] + popcount(t.words)[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        sim = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    sim[~q.valid] = np.nan
    sim[:, ~t.valid] = np.nan
    return sim


# --------------------------------------------------------------------------- search


@dataclass(frozen=True, eq=False)
class Neighbors:
    """Nearest training molecules of G query molecules.

    similarity: float64 [G], Tanimoto to the nearest valid training molecule (NaN for an
        invalid query or an empty training set);
    index: int64 [G], that training molecule's row in the training fingerprints (the first
        of equals; -1 where similarity is NaN);
    n_similar: float64 [G], whole numbers: training molecules with similarity >= the
        threshold (> with nearest_neighbors' strict=True; NaN for an invalid query: float so
        that it fills a CSV cell like the other prediction columns).
    """

    similarity: np.ndarray
    index: np.ndarray
    n_similar: np.ndarray
    threshold: float


def nearest_neighbors(
    query,
    train,
    threshold: float = DEFAULT_THRESHOLD,
    max_block_bytes: int = DEFAULT_BLOCK_BYTES,
    strict: bool = False,
) -> Neighbors:
    """Nearest-neighbour Tanimoto similarity of every query molecule to a training set.

    Args:
        query, train: Fingerprints, or packed arrays (uint8 [G, n_bits / 8] or their uint64
            words view [G, n_bits / 64]), all valid.
            Invalid training molecules are never anyone's neighbour.
        threshold: n_similar counts training molecules with similarity >= threshold
            (strict: > threshold, as predict's molsam_train_neighbors counts those "above
            0.4").
        max_block_bytes: working memory of one block (about 27 bytes a query x training
            pair); the result is the same for any value (blocks only change the order of
            exact integer work).

    Returns:
        Neighbors with similarity, index and n_similar, each [G].
    """
    q, t = _as_fingerprints(query), _as_fingerprints(train)
    if q.n_bits != t.n_bits:
        raise ValueError(f"fingerprints of {q.n_bits} and {t.n_bits} bits cannot be compared")
    g = len(q)
    best = np.full(g, -1.0)
    index = np.full(g, -1, dtype=np.int64)
    count = np.zeros(g, dtype=np.int64)
    rows = np.flatnonzero(q.valid)
    train_rows = np.flatnonzero(t.valid)
    if len(rows) and len(train_rows):
        # Copies only where invalid rows must go (a valid-only set is used in place).
        q_words = q.words if len(rows) == g else q.words[rows]
        t_words = t.words if len(train_rows) == len(t) else t.words[train_rows]
        q_pop, t_pop = popcount(q_words), popcount(t_words)
        pairs = max(1, int(max_block_bytes) // _BYTES_PER_PAIR)
        train_block = min(len(train_rows), max(1, pairs // 64))
        query_block = max(1, min(len(rows), pairs // train_block))
        inter = np.empty((query_block, train_block), dtype=np.uint16)
        scratch = (np.empty(inter.shape, np.uint64), np.empty(inter.shape, np.uint8))
        union = np.empty(inter.shape, dtype=np.int64)
        sim = np.empty(inter.shape, dtype=np.float64)
        found_best = best[rows]
        found_index = index[rows]
        found_count = count[rows]
        for t_lo in range(0, len(train_rows), train_block):
            t_hi = min(len(train_rows), t_lo + train_block)
            train_t = np.ascontiguousarray(t_words[t_lo:t_hi].T)
            tp = t_pop[t_lo:t_hi]
            for q_lo in range(0, len(rows), query_block):
                q_hi = min(len(rows), q_lo + query_block)
                m, n = q_hi - q_lo, t_hi - t_lo
                i_b, u_b, s_b = inter[:m, :n], union[:m, :n], sim[:m, :n]
                _intersections(
                    q_words[q_lo:q_hi], train_t, i_b, (scratch[0][:m, :n], scratch[1][:m, :n])
                )
                np.add(q_pop[q_lo:q_hi, None], tp[None, :], out=u_b)
                np.subtract(u_b, i_b, out=u_b)
                np.maximum(u_b, 1, out=u_b)  # an empty pair: 0 / 1 = 0, as in RDKit
                np.divide(i_b, u_b, out=s_b)
                at = s_b.argmax(axis=1)
                top = s_b[np.arange(m), at]
                better = top > found_best[q_lo:q_hi]  # strict: the earlier block wins ties
                found_best[q_lo:q_hi] = np.where(better, top, found_best[q_lo:q_hi])
                found_index[q_lo:q_hi] = np.where(
                    better, at + t_lo, found_index[q_lo:q_hi]
                )
                hits = s_b > threshold if strict else s_b >= threshold
                found_count[q_lo:q_hi] += np.count_nonzero(hits, axis=1)
        best[rows] = found_best
        index[rows] = np.where(found_index >= 0, train_rows[np.maximum(found_index, 0)], -1)
        count[rows] = found_count
    similarity = np.where(index >= 0, best, np.nan)
    n_similar = np.where(q.valid, count, np.nan).astype(np.float64)
    return Neighbors(similarity, index, n_similar, float(threshold))
