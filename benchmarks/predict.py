"""End-to-end `molsam predict` throughput and peak memory on 10,000 and 100,000 rows.

    python benchmarks/predict.py [--sizes 10000,100000] [--workers N] [--batch-size B]

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


def run_one(ckpt: Path, inp: Path, out: Path, extra: list[str]) -> tuple[float, float]:
    command = [sys.executable, "-c", WRAPPER, str(Path(sys.executable).parent / "molsam"),
               "predict", str(ckpt), str(inp), "-o", str(out), *extra]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
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
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
