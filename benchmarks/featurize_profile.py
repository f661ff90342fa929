"""Where molsam's featurization time goes, call by call, on the drug-like library (issue 26).

    nice -n 19 .venv/bin/python benchmarks/featurize_profile.py [--data CSV] [--repeats 3]
        [--workers 2] [--limit N]

What is measured (one process, one BLAS thread, every stage over the whole library, in chunks of
molsam's CHUNK_SIZE = 256 as the workers get them; `--repeats` rounds, every stage once per
round, so machine noise hits all stages alike):

- parse: `Chem.MolFromSmiles` (parse + sanitization + RDKit's RemoveHs), RDKit logs blocked as
  in `featurize_chunk`; split into `MolFromSmiles(sanitize=False)` and `Chem.SanitizeMol` on
  those molecules (the split does not add up to the whole exactly: RemoveHs and the cheaper
  single call are the difference, printed as "parse remainder");
- scaffold: `molsam.chem.scaffolds.scaffold_of` on each parsed molecule (from_table asks for
  scaffolds: the scaffold split);
- atom rows, bond rows: `molsam.chem.features._atom_rows`, `_bond_rows` (the RDKit getters);
- array assembly: turning those rows into int64 arrays, degree and atom ring membership from
  the bond arrays (the numpy glue of `mols_to_arrays`, mirrored here and checked against it);
- code lookups: `_encode_columns` for the atom and the bond columns;
- RWSE: `molsam.chem.encodings.random_walk_return_probabilities` (16 steps);
- the whole `molsam.chem.parallel.featurize_chunk(..., scaffolds=True)` per chunk, what
  `GraphStore.from_table` runs in its workers; "other" = the whole minus the stages above
  (parse_smiles' wrapper, lists, the float16 cast, ...).

Figures are microseconds per input row (valid or not, so the stages add up), best of the
rounds, in CPU time of this process (`time.process_time`: steadier than wall time on a shared
machine; the run is single-threaded) and in wall time; the share is of featurize_chunk's CPU
time. In the same run, each round also times `molsam featurize`'s path end to end with
`--workers` processes: `read_table` + `GraphStore.from_table(table, workers=N)` (parse, codes,
RWSE, scaffolds, the store in memory; no split, no file written), molecules/s = input rows /
wall seconds, beside the single-process featurize_chunk rate of the same round.

DATA defaults to benchmarks/library.py's library (~23,400 rows, built in a temporary folder).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rdkit import Chem, rdBase
from threadpoolctl import threadpool_limits

from molsam.chem.encodings import random_walk_return_probabilities
from molsam.chem.features import (
    ATOM_FEATURES,
    BOND_FEATURES,
    _atom_rows,
    _bond_rows,
    _encode_columns,
    mols_to_arrays,
)
from molsam.chem.parallel import CHUNK_SIZE, featurize_chunk
from molsam.chem.scaffolds import scaffold_of
from molsam.chem.spec import DEFAULT_RWSE_STEPS
from molsam.data.store import GraphStore
from molsam.data.table import read_table


def _assemble(mols, atom_rows: list[tuple], bond_rows: list[tuple]):
    """mols_to_arrays' numpy glue (molsam.chem.features), from the rows to the raw int64 arrays:
    (atom_counts, bond_counts, atom_raw [A, 9], bond_raw [M, 6])."""
    atom_counts = np.fromiter((m.GetNumAtoms() for m in mols), dtype=np.int64, count=len(mols))
    bond_counts = np.fromiter((m.GetNumBonds() for m in mols), dtype=np.int64, count=len(mols))
    total_atoms = int(atom_counts.sum())
    atom_start = np.cumsum(atom_counts) - atom_counts
    bond_raw = np.array(bond_rows, dtype=np.int64).reshape(-1, 6)
    global_ends = (bond_raw[:, :2] + np.repeat(atom_start, bond_counts)[:, None]).ravel()
    atom_raw = np.empty((total_atoms, len(ATOM_FEATURES)), dtype=np.int64)
    atom_raw[:, (0, 1, 3, 4, 5, 6, 7)] = np.array(atom_rows, dtype=np.int64).reshape(-1, 7)
    atom_raw[:, 2] = np.bincount(global_ends, minlength=total_atoms)
    atom_raw[:, 8] = np.bincount(
        global_ends, weights=np.repeat(bond_raw[:, 5], 2), minlength=total_atoms) > 0
    return atom_counts, bond_counts, atom_raw, bond_raw


def _scaffolds(mols) -> list[str]:
    return [scaffold_of(mol) for mol in mols]


def _codes(atom_raw: np.ndarray, bond_raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _encode_columns(atom_raw, ATOM_FEATURES), _encode_columns(bond_raw[:, 2:], BOND_FEATURES)


def _timed(work: Callable[[], object]) -> tuple[float, float, object]:
    """(CPU seconds, wall seconds, result) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = work()
    return time.process_time() - cpu, time.perf_counter() - wall, result


def profile_round(chunks: list[list[str]], rwse_steps: int) -> dict[str, tuple[float, float]]:
    """One round of every stage over all chunks: stage -> (CPU s, wall s).

    Chunk by chunk, every stage on a chunk before the next chunk (as featurize_chunk works:
    a chunk's molecules stay in cache from parse to RWSE), each stage's time summed over chunks.
    """
    times: dict[str, list[float]] = {}

    def record(name: str, work: Callable[..., object], *args):
        cpu, wall, result = _timed(lambda: work(*args))
        total = times.setdefault(name, [0.0, 0.0])
        total[0] += cpu
        total[1] += wall
        return result

    def parse(chunk):
        with rdBase.BlockLogs():
            return [m for m in map(Chem.MolFromSmiles, chunk) if m is not None and m.GetNumAtoms()]

    def parse_unsanitized(chunk):
        with rdBase.BlockLogs():
            return [Chem.MolFromSmiles(s, sanitize=False) for s in chunk]

    def sanitize(raw):
        with rdBase.BlockLogs():
            for mol in raw:
                if mol is not None:
                    with contextlib.suppress(Chem.rdchem.MolSanitizeException):
                        Chem.SanitizeMol(mol)  # raises for the library's few invalid rows

    for chunk in chunks:
        mols = record("parse: MolFromSmiles", parse, chunk)
        raw = record("  parse only (sanitize=False)", parse_unsanitized, chunk)
        record("  SanitizeMol", sanitize, raw)
        record("scaffold: scaffold_of", _scaffolds, mols)
        atom_rows = record("atom rows: _atom_rows", _atom_rows, mols)
        bond_rows = record("bond rows: _bond_rows", _bond_rows, mols)
        atom_counts, bond_counts, atom_raw, bond_raw = record(
            "array assembly (numpy)", _assemble, mols, atom_rows, bond_rows)
        atom_codes, bond_codes = record("code lookups: _encode_columns", _codes, atom_raw, bond_raw)
        record("RWSE (16 steps)", random_walk_return_probabilities,
               atom_counts, bond_counts, bond_raw[:, :2], rwse_steps)
        whole = record("featurize_chunk (whole)", featurize_chunk, 0, chunk, rwse_steps, True)
        record("  mols_to_arrays (codes + RWSE)", mols_to_arrays, mols, rwse_steps)
        # The mirrored glue must give what molsam gives, or the split above is not molsam's.
        if not (np.array_equal(atom_codes, whole.atom_codes)
                and np.array_equal(bond_codes, whole.bond_codes)):
            raise SystemExit("mirrored array assembly differs from featurize_chunk: update "
                             "_assemble to match molsam.chem.features.mols_to_arrays")
    return {name: (cpu, wall) for name, (cpu, wall) in times.items()}


def end_to_end(path: Path, workers: int) -> tuple[float, float, int]:
    """(wall s, CPU s of this process and its reaped workers, rows) of read_table +
    GraphStore.from_table with `workers` processes."""
    before = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    start = time.perf_counter()
    table = read_table(path)
    store = GraphStore.from_table(table, workers=workers)
    wall = time.perf_counter() - start
    after = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu = sum((a.ru_utime - b.ru_utime) + (a.ru_stime - b.ru_stime) for a, b in zip(after, before))
    if len(store) + len(store.invalid) != len(table):
        raise SystemExit("from_table lost rows")
    return wall, cpu, len(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="CSV [default: the library]")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="for the end-to-end run")
    parser.add_argument("--limit", type=int, default=None, help="first N rows only (smoke)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        data = args.data
        if data is None:
            from library import write_library  # benchmarks/, this script's own folder

            data = Path(folder) / "library.csv"
            write_library(data)
        if args.limit is not None:
            lines = data.read_text(encoding="utf-8").splitlines(keepends=True)
            data = Path(folder) / "limited.csv"
            data.write_text("".join(lines[: args.limit + 1]), encoding="utf-8")
        smiles = read_table(data).smiles
        rows = len(smiles)
        chunks = [smiles[i : i + CHUNK_SIZE] for i in range(0, rows, CHUNK_SIZE)]
        rwse_steps = DEFAULT_RWSE_STEPS

        with threadpool_limits(limits=1, user_api="blas"):
            profile_round(chunks[:2], rwse_steps)  # warm-up: imports, caches, lookup tables
        rounds, e2e = [], []
        for _ in range(args.repeats):
            with threadpool_limits(limits=1, user_api="blas"):
                rounds.append(profile_round(chunks, rwse_steps))
            e2e.append(end_to_end(data, args.workers))

    names = list(rounds[0])
    best_cpu = {n: min(r[n][0] for r in rounds) for n in names}
    best_wall = {n: min(r[n][1] for r in rounds) for n in names}
    total = best_cpu["featurize_chunk (whole)"]
    top = ["parse: MolFromSmiles", "scaffold: scaffold_of", "atom rows: _atom_rows",
           "bond rows: _bond_rows", "array assembly (numpy)", "code lookups: _encode_columns",
           "RWSE (16 steps)"]
    per_round_other = [r["featurize_chunk (whole)"][0] - sum(r[n][0] for n in top) for r in rounds]

    def us(seconds: float) -> float:
        return seconds / rows * 1e6

    print(f"{data.name}: {rows} rows, chunks of {CHUNK_SIZE}, one process, one BLAS thread; "
          f"best of {args.repeats} rounds; cpu: {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'stage':<34} {'CPU us/mol':>10} {'wall us/mol':>11} {'share':>6}")
    for name in names:
        if name == "featurize_chunk (whole)":
            other = min(per_round_other)
            print(f"{'other (whole - stages above)':<34} {us(other):10.1f} {'':>11} "
                  f"{other / total:6.1%}")
            print("-" * 64)
        print(f"{name:<34} {us(best_cpu[name]):10.1f} {us(best_wall[name]):11.1f} "
              f"{best_cpu[name] / total:6.1%}")
        if name == "  SanitizeMol":
            rest = best_cpu["parse: MolFromSmiles"] - best_cpu["  parse only (sanitize=False)"] \
                - best_cpu["  SanitizeMol"]
            print(f"{'  parse remainder (RemoveHs, ...)':<34} {us(rest):10.1f} {'':>11} "
                  f"{rest / total:6.1%}")
    print("(indented rows are parts of the row above them, or, for mols_to_arrays, a second "
          "view of stages above; shares are of featurize_chunk's CPU time)")
    single = [rows / r["featurize_chunk (whole)"][1] for r in rounds]
    walls = [w for w, _, _ in e2e]
    paired = [rows / w / s for w, s in zip(walls, single)]
    print(f"featurize_chunk, 1 process: {max(single):7.0f} molecules/s wall (rounds: "
          f"{', '.join(f'{s:.0f}' for s in single)}), {rows / total:7.0f} per CPU-second")
    print(f"read_table + GraphStore.from_table, {args.workers} workers: {rows / min(walls):7.0f} "
          f"molecules/s wall (rounds: {', '.join(f'{rows / w:.0f}' for w in walls)}), "
          f"{rows / min(c for _, c, _ in e2e):7.0f} per CPU-second (parent + workers)")
    print(f"end to end / 1-process featurize_chunk, same round, wall: "
          f"{', '.join(f'{p:.2f}' for p in paired)} (median {statistics.median(paired):.2f}x)")


if __name__ == "__main__":
    main()
