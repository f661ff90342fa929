"""Featurization throughput and store size on tox21.csv, against RDKit's bare parse rate.

    python benchmarks/featurize.py [--data PATH] [--workers N] [--repeats R]

End to end = read CSV, parse, integer codes, RWSE, write the store file (no cache). The baseline,
measured in the same run on the same file, is `Chem.MolFromSmiles` alone: on one core, and
across the same number of worker processes (same chunking), so the ratio is like for like.
Target (2 cores): >= 4,000 molecules/s end to end, >= 70% of the bare parse rate across cores,
<= 1 KB per molecule.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

from rdkit import Chem, rdBase

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from molsam.chem.parallel import CHUNK_SIZE, default_workers  # noqa: E402
from molsam.data.store import GraphStore  # noqa: E402
from molsam.data.table import read_table  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "moleculenet" / "tox21.csv"


def _parse_only(chunk: list[str]) -> int:
    blocker = rdBase.BlockLogs()
    ok = sum(Chem.MolFromSmiles(s) is not None for s in chunk)
    del blocker
    return ok


def bare_parse_rate(smiles: list[str], workers: int) -> float:
    chunks = [smiles[i : i + CHUNK_SIZE] for i in range(0, len(smiles), CHUNK_SIZE)]
    start = time.perf_counter()
    if workers == 1:
        for chunk in chunks:
            _parse_only(chunk)
    else:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            list(pool.imap(_parse_only, chunks))
    return len(smiles) / (time.perf_counter() - start)


def end_to_end(path: Path, workers: int, out: Path) -> tuple[float, int, int]:
    start = time.perf_counter()
    table = read_table(path)
    store = GraphStore.from_table(table, workers=workers)
    store.save(out)
    seconds = time.perf_counter() - start
    return len(table) / seconds, len(store), out.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    smiles = read_table(args.data).smiles
    print(f"{args.data.name}: {len(smiles)} rows; {args.workers} workers; best of {args.repeats}")
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "store.pt"
        rows = []
        for _ in range(args.repeats):  # interleaved, so machine noise hits all alike
            rows.append((
                bare_parse_rate(smiles, 1),
                bare_parse_rate(smiles, args.workers),
                *end_to_end(args.data, args.workers, out),
            ))
    parse_1 = max(r[0] for r in rows)
    parse_n = max(r[1] for r in rows)
    ours = max(r[2] for r in rows)
    kept, size = rows[-1][3], rows[-1][4]
    print(f"bare MolFromSmiles, 1 core         : {parse_1:8.0f} molecules/s")
    print(f"bare MolFromSmiles, {args.workers} workers      : {parse_n:8.0f} molecules/s")
    print(f"molsam end to end, {args.workers} workers       : {ours:8.0f} molecules/s "
          f"({ours / parse_n:.0%} of bare parse across workers; target >= 4000/s)")
    print(f"store: {size} bytes for {kept} molecules = {size / kept:.0f} bytes/molecule "
          f"(target <= 1024)")
    print(f"cpu: {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
