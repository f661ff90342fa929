"""Featurize many SMILES in parallel worker processes, into concatenated arrays.

Workers receive chunks of SMILES and send back one set of concatenated arrays per chunk (not a
list of per-molecule objects), so inter-process traffic is a few large buffers. This module does
not import torch: forked workers stay light and never touch torch's thread pools.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.pool
import os
import signal
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from rdkit import rdBase
from threadpoolctl import threadpool_limits

from molsam.chem.compt_inputs import COMPT, compt_inputs
from molsam.chem.descriptors import molecule_features
from molsam.chem.features import mols_to_arrays, parse_smiles
from molsam.chem.scaffolds import scaffold_of

CHUNK_SIZE = 256
#: Not a featurizer extra (never in a featurizer spec or a store): in `extras`, it asks the
#: workers for each valid molecule's packed Morgan fingerprint (molsam.uncertainty.domain,
#: radius 2, 2048 bits), made from the molecule they already parsed: predict's applicability
#: domain (its similarity to the training molecules).
DOMAIN_FINGERPRINTS = "domain_fingerprints"


@dataclass
class FeaturizedArrays:
    """G valid molecules, A atoms and M bonds in all.

    valid:       int64 [G] position of each valid molecule in the input sequence
    atom_counts: int64 [G]; bond_counts: int64 [G]
    atom_codes:  uint8 [A, F_atom]; rwse: float16 [A, K]
    bond_atoms:  int64 [M, 2] atom indices local to each molecule
    bond_codes:  uint8 [M, F_bond]
    invalid:     [(position, reason)] for SMILES RDKit rejects
    scaffolds:   [G] Bemis-Murcko scaffold SMILES of each valid molecule, computed by the worker
                 from the molecule it already parsed; None when not asked for (predict)
    atom_scalars, distances: CoMPT's inputs (molsam.chem.compt_inputs: float32 [A, 8] and
                 uint8 [sum of squared atom counts]) when the "compt" extra is asked for, else None
    mol_features: float32 [G, F] molecule-level features (molsam.chem.descriptors: rdkit2d,
                 morgan_count) when such extras are asked for, else None
    fingerprints: uint8 [G, 256] packed Morgan fingerprints (molsam.uncertainty.domain.
                 Fingerprints.bits) when DOMAIN_FINGERPRINTS is among the extras, else None
    """

    valid: np.ndarray
    atom_counts: np.ndarray
    bond_counts: np.ndarray
    atom_codes: np.ndarray
    rwse: np.ndarray
    bond_atoms: np.ndarray
    bond_codes: np.ndarray
    invalid: list[tuple[int, str]]
    scaffolds: list[str] | None = None
    atom_scalars: np.ndarray | None = None
    distances: np.ndarray | None = None
    mol_features: np.ndarray | None = None
    fingerprints: np.ndarray | None = None

    @classmethod
    def concatenate(
        cls, parts: Sequence["FeaturizedArrays"], rwse_steps: int, scaffolds: bool = False,
        extras: tuple[str, ...] = (),
    ) -> "FeaturizedArrays":
        if not parts:
            parts = [featurize_chunk(0, [], rwse_steps, scaffolds, extras)]
        compt = COMPT in extras
        return cls(
            valid=np.concatenate([p.valid for p in parts]),
            atom_counts=np.concatenate([p.atom_counts for p in parts]),
            bond_counts=np.concatenate([p.bond_counts for p in parts]),
            atom_codes=np.concatenate([p.atom_codes for p in parts]),
            rwse=np.concatenate([p.rwse for p in parts]),
            bond_atoms=np.concatenate([p.bond_atoms for p in parts]),
            bond_codes=np.concatenate([p.bond_codes for p in parts]),
            invalid=[item for p in parts for item in p.invalid],
            scaffolds=[s for p in parts for s in p.scaffolds] if scaffolds else None,
            atom_scalars=np.concatenate([p.atom_scalars for p in parts]) if compt else None,
            distances=np.concatenate([p.distances for p in parts]) if compt else None,
            mol_features=None if parts[0].mol_features is None else np.concatenate(
                [p.mol_features for p in parts]),
            fingerprints=None if parts[0].fingerprints is None else np.concatenate(
                [p.fingerprints for p in parts]),
        )


def featurize_chunk(
    offset: int, smiles: Sequence[str], rwse_steps: int, scaffolds: bool = False,
    extras: tuple[str, ...] = (),
) -> FeaturizedArrays:
    """Featurize `smiles`, whose first element is at position `offset` of the whole input;
    with `scaffolds`, also each valid molecule's Murcko scaffold (for scaffold splits); with
    "compt" in `extras`, also CoMPT's atom scalars and distance matrices."""
    valid, mols, invalid = [], [], []
    # BlockLogs is scoped: RDKit's own error lines are replaced by our invalid-row report,
    # without silencing RDKit for the rest of the process.
    blocker = rdBase.BlockLogs()
    try:
        for i, text in enumerate(smiles):
            mol, reason = parse_smiles(text)
            if mol is None:
                invalid.append((offset + i, reason))
            else:
                valid.append(offset + i)
                mols.append(mol)
    finally:
        del blocker
    arrays = mols_to_arrays(mols, rwse_steps)
    compt = compt_inputs(mols) if COMPT in extras else None
    features = molecule_features(mols, extras)
    fingerprints = None
    if DOMAIN_FINGERPRINTS in extras:
        from molsam.uncertainty.domain import morgan_fingerprints

        fingerprints = morgan_fingerprints(mols).bits
    return FeaturizedArrays(
        valid=np.array(valid, dtype=np.int64),
        atom_counts=arrays.atom_counts,
        bond_counts=arrays.bond_counts,
        atom_codes=arrays.atom_codes,
        rwse=arrays.rwse.astype(np.float16),
        bond_atoms=arrays.bond_atoms,
        bond_codes=arrays.bond_codes,
        invalid=invalid,
        scaffolds=[scaffold_of(mol) for mol in mols] if scaffolds else None,
        atom_scalars=None if compt is None else compt.atom_scalars,
        distances=None if compt is None else compt.distances,
        mol_features=features,
        fingerprints=fingerprints,
    )


def _featurize_job(job: tuple[int, Sequence[str], int, bool, tuple[str, ...]]) -> FeaturizedArrays:
    return featurize_chunk(*job)


def default_workers() -> int:
    """All cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def start_pool(workers: int) -> multiprocessing.pool.Pool:
    """A pool of `workers` featurization processes, to reuse across calls (close it when done).

    Create it before the caller starts torch work: fork copies the parent, and workers that never
    touch torch stay safe only if they are forked before any torch thread pool or CUDA context.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    # fork starts in milliseconds; workers run RDKit and numpy only (no torch, no OpenMP).
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    if threading.current_thread() is not threading.main_thread():
        return context.Pool(workers, initializer=_init_worker)  # signal handlers: main only
    # Ctrl-C while the pool forks must neither vanish nor kill a half-started worker. Python
    # runs a SIGINT handler at its next check in the main thread, and during a fork that is
    # inside an at-fork hook (logging's lock release), where KeyboardInterrupt is printed as
    # "Exception ignored" and dropped. So, while the pool starts, SIGINT is only recorded (the
    # forked workers inherit that harmless handler until their initializer ignores SIGINT), and
    # the interrupt is delivered to the previous handler once the pool exists and can be stopped.
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        pool = context.Pool(workers, initializer=_init_worker)
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
    if caught and callable(previous):
        try:
            previous(signal.SIGINT, None)  # Python's default handler raises KeyboardInterrupt
        except BaseException:
            pool.terminate()
            pool.join()
            raise
    return pool


def _init_worker() -> None:
    """Worker initializer: ignore Ctrl-C (the parent stops the pool), and one BLAS thread (the
    RWSE matrices are tiny, and with one process per core a multi-threaded BLAS only adds
    spinning threads that fight the other workers)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threadpool_limits(limits=1, user_api="blas")


def _jobs(
    smiles: Sequence[str], rwse_steps: int, chunk_size: int, scaffolds: bool, workers: int = 1,
    extras: tuple[str, ...] = (),
) -> list:
    return [
        (start, list(smiles[start:stop]), rwse_steps, scaffolds, tuple(extras))
        for start, stop in chunk_bounds(len(smiles), chunk_size, workers)
    ]


def chunk_bounds(total: int, chunk_size: int, workers: int = 1) -> list[tuple[int, int]]:
    """(start, stop) of each chunk of `total` molecules, in order: `chunk_size` each, except that
    with several workers the last 2 * workers * chunk_size molecules go in quarter-size chunks.

    Workers take chunks in order, so the last full chunk could keep one worker busy for a whole
    chunk's time while the others have nothing left (on 2 workers and the 23,400-molecule
    library, the second worker idled ~5% of the run); small chunks at the end let all finish
    within a small chunk of each other, while the bulk keeps the per-chunk costs of big chunks.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    full_end = total
    if workers > 1:
        full_end = max(0, total - 2 * workers * chunk_size) // chunk_size * chunk_size
    small = max(1, chunk_size // 4)
    bounds = [(start, min(start + chunk_size, full_end)) for start in range(0, full_end, chunk_size)]
    return bounds + [(start, min(start + small, total)) for start in range(full_end, total, small)]


def submit_many(
    pool: multiprocessing.pool.Pool,
    smiles: Sequence[str],
    rwse_steps: int,
    chunk_size: int = CHUNK_SIZE,
    extras: tuple[str, ...] = (),
) -> Callable[[], FeaturizedArrays]:
    """Start featurizing `smiles` on `pool` without waiting; returns a function that waits for
    and returns the concatenated arrays (positions relative to `smiles`).

    Lets a caller run the model on one block while the workers featurize the next.
    """
    result = pool.map_async(
        _featurize_job, _jobs(smiles, rwse_steps, chunk_size, False, extras=extras))
    return lambda: FeaturizedArrays.concatenate(result.get(), rwse_steps, extras=extras)


def featurize_many(
    smiles: Sequence[str],
    rwse_steps: int,
    workers: int | None = None,
    on_progress: Callable[[int], None] | None = None,
    chunk_size: int = CHUNK_SIZE,
    pool: multiprocessing.pool.Pool | None = None,
    scaffolds: bool = False,
    meanwhile: Callable[[], object] | None = None,
    extras: tuple[str, ...] = (),
) -> FeaturizedArrays:
    """Featurize every SMILES, in input order, with `workers` processes (default: all cores).

    `on_progress(n)` is called in the parent with the number of SMILES each finished chunk held.
    `pool` (from start_pool) is used instead of a new pool per call, e.g. when streaming blocks.
    `scaffolds`: the workers also compute each valid molecule's Murcko scaffold.
    `extras`: optional inputs beside the codes (molsam.chem.spec.FEATURIZER_EXTRAS).
    `meanwhile()` is called once in this process after the workers are started and every chunk
    is handed to them, before their results are awaited (without workers: before featurizing):
    the caller's own next work, such as importing torch to write the store, then overlaps the
    workers' instead of delaying their start. Progress calls wait until it returns.
    """
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    serial = pool is None and (workers == 1 or len(smiles) <= chunk_size)
    jobs = _jobs(smiles, rwse_steps, chunk_size, scaffolds, 1 if serial else workers, extras)

    def collect(results: Iterable[FeaturizedArrays]) -> FeaturizedArrays:
        parts = []
        for part, job in zip(results, jobs):
            parts.append(part)
            if on_progress:
                on_progress(len(job[1]))
        return FeaturizedArrays.concatenate(parts, rwse_steps, scaffolds, extras)

    if serial:
        if meanwhile is not None:
            meanwhile()
        with threadpool_limits(limits=1, user_api="blas"):
            return collect(map(_featurize_job, jobs))
    with contextlib.ExitStack() as stack:
        if pool is None:
            pool = stack.enter_context(start_pool(min(workers, len(jobs))))
        results = pool.imap(_featurize_job, jobs)  # the task thread hands out every chunk now
        if meanwhile is not None:
            meanwhile()
        return collect(results)
