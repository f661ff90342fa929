"""End-to-end `molsam predict` throughput and peak memory on 10,000 and 100,000 rows.

    python benchmarks/predict.py [--sizes 10000,100000] [--workers N] [--batch-size B]
        [--library] [--baseline OTHER_CHECKOUT] [--ray]

--library: SMILES of the drug-like library of benchmarks/library.py (HIV-like sizes, large
molecules included) instead of the MoleculeNet CSVs. --baseline: the same runs with another
checkout (its own checkpoint writer and CLI), interleaved, for same-run ratios. --ray: also
`molsam predict --engine ray` (a local Ray started by the command, all cores) on a small and the
first size's file; "once started" rates are marginal: (N - n) / (T_N - T_n), for Ray and for
single-machine predict alike, so start-up (Ray, actors, imports) cancels out.

Input: the SMILES columns of the shared MoleculeNet CSVs, cycled to each row count, written to a
temporary CSV (with an id column that must come through). Model: the quickstart model config
(`model:` of recipes/quickstart.yaml when that file exists, else GPSModel defaults) with
random-initialized weights: speed and memory do not depend on the weight values. Each size runs
`molsam predict` (CSV in, CSV out) in a fresh process, whose peak resident memory is read with
getrusage(RUSAGE_CHILDREN) in a wrapper process that does nothing else (so one size's peak never
hides another's). Targets on 2 CPU cores: >= 2,000 molecules/s, peak RSS < 1 GB, and no growth
of peak RSS from 10k to 100k rows (streaming).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared" / "data" / "moleculenet"
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"

# Runs the command given as argv[1:] and prints the peak RSS (KiB on Linux) of its process tree's
# largest process: the predict process and its featurization workers, all waited for.
WRAPPER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.run(sys.argv[1:]).returncode\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


def shared_smiles() -> list[str]:
    smiles = []
    for path in sorted(SHARED.glob("*.csv")):
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            column = next(c for c in reader.fieldnames if c.lower() == "smiles")
            smiles.extend(row[column] for row in reader)
    # Shuffled (fixed seed) so that 10k rows sample every dataset, as 100k rows do.
    random.Random(0).shuffle(smiles)
    return smiles


def model_config() -> tuple[dict, str]:
    if QUICKSTART.exists():
        from molsam.config import load_recipe, recipe_to_dict

        return recipe_to_dict(load_recipe(QUICKSTART))["model"], str(QUICKSTART.relative_to(ROOT))
    return {}, "GPSModel defaults (recipes/quickstart.yaml absent)"


def write_checkpoint(path: Path) -> tuple[str, int]:
    import torch

    from molsam.models import GPSModel
    from molsam.train.checkpoint import build_checkpoint, save_checkpoint

    config, origin = model_config()
    torch.manual_seed(0)
    model = GPSModel(1, **config)
    save_checkpoint(path, build_checkpoint(
        model, target_names=["p"], task="classification",
        recipe={"data": {"path": "benchmark.csv", "smiles_column": "smiles"}},
        split_seed=0, seed=0, epoch=0,
    ))
    return f"{model!r} from {origin}, random-initialized weights", model.pe_steps


def write_input(path: Path, smiles: list[str], rows: int) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "smiles"])
        writer.writerows([f"m{i}", smiles[i % len(smiles)]] for i in range(rows))


# Baseline in the same run: read the same CSV and featurize it with all cores, no model, no output.
# The share of this rate that predict reaches does not depend on how busy the machine is.
BASELINE = (
    "import sys, time\n"
    "from molsam.chem.parallel import featurize_many\n"
    "from molsam.data.table import iter_table\n"
    "start = time.perf_counter()\n"
    "header, rows = iter_table(sys.argv[1])\n"
    "smiles = [cells[1] for _, cells in rows]\n"
    "featurize_many(smiles, int(sys.argv[2]))\n"
    "print(len(smiles) / (time.perf_counter() - start))\n"
)


def featurize_rate(inp: Path, rwse_steps: int) -> float:
    done = subprocess.run([sys.executable, "-c", BASELINE, str(inp), str(rwse_steps)],
                          capture_output=True, text=True, check=True)
    return float(done.stdout.strip())


CLI = "import sys; from molsam.cli.main import app; sys.argv[0] = 'molsam'; app()"
WRITE_CHECKPOINT = (
    "import sys; sys.path.insert(0, 'benchmarks'); from pathlib import Path;"
    "from predict import write_checkpoint; print(write_checkpoint(Path(sys.argv[1]))[1])"
)


def tree_env(tree: Path) -> dict:
    import os

    return {**os.environ, "PYTHONPATH": str(tree)}


def tree_checkpoint(tree: Path, path: Path) -> int:
    """A checkpoint written by `tree`'s own code (formats may differ between checkouts)."""
    done = subprocess.run([sys.executable, "-c", WRITE_CHECKPOINT, str(path)], cwd=tree,
                          env=tree_env(tree), capture_output=True, text=True, check=True)
    return int(done.stdout.strip().splitlines()[-1])


def run_one(ckpt: Path, inp, out: Path, extra: list[str], tree: Path = ROOT
            ) -> tuple[float, float]:
    inputs = [str(p) for p in inp] if isinstance(inp, list) else [str(inp)]
    command = [sys.executable, "-c", WRAPPER, sys.executable, "-c", CLI,
               "predict", str(ckpt), *inputs, "-o", str(out), *extra]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=tree, env=tree_env(tree))
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"molsam predict failed:\n{done.stderr}")
    lines = done.stderr.strip().splitlines()
    print(f"  {lines[-2]}", file=sys.stderr)  # molsam's own summary line
    return seconds, int(lines[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--library", action="store_true")
    parser.add_argument("--baseline", type=Path, default=None)
    parser.add_argument("--ray", action="store_true")
    args = parser.parse_args()
    if args.library or args.baseline or args.ray:
        compare(args)
        return
    extra = ["--device", "cpu"]
    if args.workers:
        extra += ["--workers", str(args.workers)]
    if args.batch_size:
        extra += ["--batch-size", str(args.batch_size)]
    sizes = [int(s) for s in args.sizes.split(",")]
    smiles = shared_smiles()
    results = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        ckpt = folder / "model.pt"
        description, pe_steps = write_checkpoint(ckpt)
        print(f"model: {description}")
        print(f"input: {len(smiles)} SMILES of {SHARED}/*.csv, cycled; device cpu; "
              f"extra args: {' '.join(extra)}")
        for rows in sizes:
            inp, out = folder / f"in_{rows}.csv", folder / f"out_{rows}.csv"
            write_input(inp, smiles, rows)
            baseline = featurize_rate(inp, pe_steps) if rows == sizes[0] else None
            seconds, peak_mb = run_one(ckpt, inp, out, extra)
            with open(out, newline="") as handle:
                written = sum(1 for _ in handle) - 1
            assert written == rows, f"{written} output rows for {rows} input rows"
            results.append({"rows": rows, "seconds": seconds, "per_second": rows / seconds,
                            "peak_rss_mb": peak_mb, "featurize_only_per_second": baseline})
            inp.unlink()
            out.unlink()
    print(f"\n{'rows':>8} {'seconds':>8} {'molecules/s':>12} {'peak RSS MB':>12}")
    for r in results:
        print(f"{r['rows']:>8} {r['seconds']:>8.1f} {r['per_second']:>12.0f} "
              f"{r['peak_rss_mb']:>12.0f}")
    base = results[0]["featurize_only_per_second"]
    print(f"baseline, same run: read + featurize only (all cores, no model, no output) "
          f"{base:.0f} molecules/s on {results[0]['rows']} rows; predict end to end reaches "
          f"{results[0]['per_second'] / base:.0%} of it")
    if len(results) > 1:
        growth = results[-1]["peak_rss_mb"] / results[0]["peak_rss_mb"]
        print(f"peak RSS growth {results[0]['rows']} -> {results[-1]['rows']} rows: {growth:.2f}x")
    print("(seconds include process start-up and imports; target >= 2,000 molecules/s, "
          "< 1024 MB, growth ~1.0x)")
    print(json.dumps(results))


def compare(args) -> None:
    """--library / --baseline / --ray: this checkout against a baseline, and Ray vs local."""
    import shutil

    if args.library:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from library import library

        smiles = library()
        random.Random(0).shuffle(smiles)
    else:
        smiles = shared_smiles()
    extra = ["--device", "cpu"] + (["--workers", str(args.workers)] if args.workers else [])
    extra += ["--batch-size", str(args.batch_size)] if args.batch_size else []
    sizes = [int(s) for s in args.sizes.split(",")]
    trees = {"this": ROOT} | ({"baseline": args.baseline} if args.baseline else {})
    results: dict[tuple[str, int], tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        ckpts = {name: folder / f"model-{name}.pt" for name in trees}
        for name, tree in trees.items():
            tree_checkpoint(tree, ckpts[name])
        print(f"input: {len(smiles)} SMILES ({'library' if args.library else 'MoleculeNet'}), "
              f"cycled; {' '.join(extra)}")
        small = folder / "small.csv"
        write_input(small, smiles, 200)
        for rows in sizes:
            inp = folder / f"in_{rows}.csv"
            write_input(inp, smiles, rows)
            for name, tree in trees.items():
                results[(name, rows)] = run_one(ckpts[name], inp, folder / "out.csv", extra, tree)
            if args.ray and rows == sizes[0]:
                local_small = run_one(ckpts["this"], small, folder / "s.csv", extra, ROOT)[0]
                ray_extra = ["--engine", "ray", "--device", "cpu"]
                ray_small = run_one(ckpts["this"], [small], folder / "ray-s", ray_extra, ROOT)[0]
                ray_big = run_one(ckpts["this"], [inp], folder / "ray-b", ray_extra, ROOT)
                results[("ray", rows)] = ray_big
                marginal_local = (rows - 200) / (results[("this", rows)][0] - local_small)
                marginal_ray = (rows - 200) / (ray_big[0] - ray_small)
                shutil.rmtree(folder / "ray-s", ignore_errors=True)
                shutil.rmtree(folder / "ray-b", ignore_errors=True)
            inp.unlink()
    print(f"\n{'checkout':>9} {'rows':>8} {'seconds':>8} {'molecules/s':>12} {'peak RSS MB':>12}")
    for (name, rows), (seconds, peak) in results.items():
        print(f"{name:>9} {rows:>8} {seconds:>8.1f} {rows / seconds:>12.0f} {peak:>12.0f}")
    for name in trees:
        runs = [results[(name, r)] for r in sizes]
        if len(runs) > 1:
            print(f"{name}: peak RSS {sizes[0]} -> {sizes[-1]} rows: "
                  f"{runs[-1][1] / runs[0][1]:.2f}x")
    if args.baseline:
        for rows in sizes:
            ratio = results[("baseline", rows)][0] / results[("this", rows)][0]
            print(f"speed-up this / baseline at {rows} rows: {ratio:.2f}x")
    if args.ray:
        print(f"once started (marginal, {sizes[0]} vs 200 rows): local {marginal_local:.0f}/s, "
              f"ray {marginal_ray:.0f}/s = {marginal_ray / marginal_local:.0%} of local "
              f"(target >= 80%)")
    print("(seconds include process start-up and imports; targets >= 2,000 molecules/s, "
          "< 1024 MB, growth ~1.0x)")


if __name__ == "__main__":
    main()
