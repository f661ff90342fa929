"""Featurization throughput and store size on tox21.csv, against RDKit's bare parse rate.

    python benchmarks/featurize.py [--data PATH] [--workers N] [--repeats R] [--extras rdkit2d]
    python benchmarks/featurize.py --cli [--data PATH] [--baseline OTHER_CHECKOUT] [--repeats R]

--cli: `molsam featurize DATA --split scaffold --no-cache` end to end in a fresh process (CLI
start, reading, featurization, scaffolds, split, split statistics, writing store.pt and
splits.json), molecules/s = input rows / wall seconds, and the store's bytes per molecule. DATA
defaults to the drug-like library of benchmarks/library.py (~23,400 rows, HIV-like sizes, built
from files on disk). --baseline times another checkout (e.g. an older commit) on the same file,
interleaved, for a same-run ratio: best to best, and per repeat in wall seconds and in CPU
seconds (the command's and its workers'; steadier on a shared machine, blind to overlap).

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


def end_to_end(path: Path, workers: int, out: Path, extras: tuple[str, ...] = ()
               ) -> tuple[float, int, int]:
    start = time.perf_counter()
    table = read_table(path)
    store = GraphStore.from_table(table, workers=workers, extras=extras)
    store.save(out)
    seconds = time.perf_counter() - start
    return len(table) / seconds, len(store), out.stat().st_size


CLI = "import sys; from molsam.cli.main import app; sys.argv[0] = 'molsam'; app()"


def cli_run(tree: Path, data: Path, out: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of `molsam featurize` from checkout `tree`, in a fresh process.

    CPU seconds are the command's and its worker processes' (user + system): on a shared machine
    they move less with the load than wall seconds do, but they miss what overlapping saves.
    """
    import resource
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, "-c", CLI, "featurize", str(data), "--split", "scaffold",
               "--no-cache", "--out", str(out)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=tree, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"featurize failed in {tree}:\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def cli_main(args) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from library import write_library

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        data = args.data
        if data is None:
            data = folder / "library.csv"
            write_library(data)
        rows = sum(1 for _ in open(data, encoding="utf-8")) - 1
        trees = {"this": ROOT} | ({"baseline": args.baseline} if args.baseline else {})
        seconds: dict[str, list[float]] = {name: [] for name in trees}
        cpu: dict[str, list[float]] = {name: [] for name in trees}
        sizes = {}
        for _ in range(args.repeats):  # interleaved: machine noise hits both alike
            for name, tree in trees.items():
                out = folder / f"out-{name}"
                wall, used = cli_run(tree, data, out)
                seconds[name].append(wall)
                cpu[name].append(used)
                sizes[name] = (out / "store.pt").stat().st_size
        print(f"{data}: {rows} rows; molsam featurize --split scaffold --no-cache, end to end; "
              f"best of {args.repeats}; cpu: {os.cpu_count()} cores; load average "
              f"{os.getloadavg()[0]:.1f}")
        for name in trees:
            best = min(seconds[name])
            print(f"{name:>9}: {best:7.1f} s = {rows / best:6.0f} molecules/s "
                  f"(runs: {', '.join(f'{s:.1f}' for s in seconds[name])}; CPU s: "
                  f"{', '.join(f'{s:.1f}' for s in cpu[name])}); store "
                  f"{sizes[name] / rows:.0f} bytes/row (target >= 4000/s, <= 1024 bytes)")
        if args.baseline:
            pairs = [b / t for b, t in zip(seconds["baseline"], seconds["this"])]
            cpu_pairs = [b / t for b, t in zip(cpu["baseline"], cpu["this"])]
            print(f"speed-up this / baseline: {min(seconds['baseline']) / min(seconds['this']):.2f}x "
                  f"best to best; per repeat {', '.join(f'{r:.2f}' for r in pairs)} (wall), "
                  f"{', '.join(f'{r:.2f}' for r in cpu_pairs)} (CPU)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cli", action="store_true", help="end-to-end `molsam featurize` runs")
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout (--cli)")
    parser.add_argument("--extras", nargs="*", default=[],
                        help="featurizer extras (rdkit2d, morgan_count, compt) in the end-to-end "
                             "run; with them, the same run also times the plain featurizer")
    args = parser.parse_args()
    if args.cli:
        cli_main(args)
        return
    args.data = args.data or DEFAULT_DATA

    smiles = read_table(args.data).smiles
    print(f"{args.data.name}: {len(smiles)} rows; {args.workers} workers; best of {args.repeats}")
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "store.pt"
        rows = []
        plain = []
        for _ in range(args.repeats):  # interleaved, so machine noise hits all alike
            rows.append((
                bare_parse_rate(smiles, 1),
                bare_parse_rate(smiles, args.workers),
                *end_to_end(args.data, args.workers, out, tuple(args.extras)),
            ))
            if args.extras:
                plain.append(end_to_end(args.data, args.workers, out)[0])
    parse_1 = max(r[0] for r in rows)
    parse_n = max(r[1] for r in rows)
    ours = max(r[2] for r in rows)
    kept, size = rows[-1][3], rows[-1][4]
    print(f"bare MolFromSmiles, 1 core         : {parse_1:8.0f} molecules/s")
    print(f"bare MolFromSmiles, {args.workers} workers      : {parse_n:8.0f} molecules/s")
    with_extras = f" with extras {' '.join(args.extras)}" if args.extras else ""
    print(f"molsam end to end{with_extras}, {args.workers} workers : {ours:8.0f} molecules/s "
          f"({ours / parse_n:.0%} of bare parse across workers; target >= 4000/s without "
          f"extras, >= 1000/s with rdkit2d)")
    if plain:
        print(f"molsam end to end, no extras, same run : {max(plain):8.0f} molecules/s "
              f"(extras cost {max(plain) / ours:.1f}x)")
    print(f"store: {size} bytes for {kept} molecules = {size / kept:.0f} bytes/molecule "
          f"(target <= 1024)")
    print(f"cpu: {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
