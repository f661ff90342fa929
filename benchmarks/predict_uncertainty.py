"""What intervals and the applicability domain cost `molsam predict` (issue 23, deliverable 3).

    python benchmarks/predict_uncertainty.py [--rows 100000] [--repeats 2] [--run RUN]
        [--workers N]

Input: the drug-like library of benchmarks/library.py (~23,400 rows: MoleculeNet SMILES, RDKit's
NCI sample, large peptides), repeated to --rows rows (an id column that must come through).
Model: --run (a run directory or checkpoint trained by this molsam: it must hold calibration
and training fingerprints), else one trained here with `molsam train recipes/quickstart.yaml`
on the offline demo data (ChEMBL2321810 shipped with RDKit; ~813 training molecules, 2 CPU
minutes idle).

Runs, interleaved in the same session (plain, full, plain, full, ...), each a fresh `molsam
predict` process (CSV in, CSV out, --device cpu):

- plain: `--no-domain`, the output predict wrote before issue 23;
- full: `--interval 0.9` with the default domain columns (molsam_train_similarity,
  molsam_train_neighbors).

Prints each run's wall time and peak RSS (getrusage of a wrapper process that does nothing
else, as benchmarks/predict.py), the median time ratio full / plain (target <= 1.15x) and the
largest peak RSS (target < 1 GB). Run it at nice 19 beside other work and read the ratio, not
the absolute rates.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from predict import CLI, WRAPPER, write_input  # noqa: E402


def train_model(folder: Path) -> Path:
    run = folder / "run"
    command = [sys.executable, "-c", CLI, "train", str(ROOT / "recipes" / "quickstart.yaml"),
               "--out", str(run)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"molsam train failed:\n{done.stderr[-3000:]}")
    print(f"trained recipes/quickstart.yaml in {time.perf_counter() - start:.0f} s: {run}",
          file=sys.stderr)
    return run


def run_predict(run: Path, inp: Path, out: Path, extra: list[str]) -> tuple[float, float, str]:
    command = [sys.executable, "-c", WRAPPER, sys.executable, "-c", CLI, "predict", str(run),
               str(inp), "-o", str(out), "--device", "cpu", *extra]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"molsam predict failed:\n{done.stderr[-3000:]}")
    lines = done.stderr.strip().splitlines()
    return seconds, int(lines[-1]) / 1024, lines[-2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--run", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    from library import library

    smiles = library()
    extra = ["--workers", str(args.workers)] if args.workers else []
    variants = {"plain": ["--no-domain"], "full": ["--interval", "0.9"]}
    times: dict[str, list[float]] = {name: [] for name in variants}
    peaks: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        run = args.run or train_model(folder)
        inp = folder / "library.csv"
        write_input(inp, smiles, args.rows)
        print(f"input: {args.rows} rows of the {len(smiles)}-row library (benchmarks/library.py), "
              f"repeated; model: {run}; {' '.join(extra) or 'default workers'}")
        for repeat in range(args.repeats):
            for name, flags in variants.items():
                out = folder / f"{name}.csv"
                seconds, peak, summary = run_predict(run, inp, out, extra + flags)
                with open(out, newline="") as handle:
                    header = handle.readline().strip()
                    written = sum(1 for _ in handle)
                assert written == args.rows, f"{written} output rows for {args.rows}"
                times[name].append(seconds)
                peaks[name].append(peak)
                print(f"  {repeat + 1} {name:>5}: {seconds:7.1f} s, peak RSS {peak:5.0f} MB "
                      f"({summary}); columns {header.split(',')[2:]}")
                out.unlink()
    plain, full = statistics.median(times["plain"]), statistics.median(times["full"])
    peak = max(max(p) for p in peaks.values())
    print(f"\nmedian wall time: plain {plain:.1f} s, with --interval 0.9 and the domain "
          f"{full:.1f} s: ratio {full / plain:.3f}x (target <= 1.15x: "
          f"{'met' if full / plain <= 1.15 else 'NOT met'})")
    print(f"largest peak RSS: {peak:.0f} MB (target < 1024 MB: "
          f"{'met' if peak < 1024 else 'NOT met'}); plain {max(peaks['plain']):.0f} MB, full "
          f"{max(peaks['full']):.0f} MB")


if __name__ == "__main__":
    main()
