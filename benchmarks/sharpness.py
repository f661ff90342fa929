"""Seconds of `molsam sharpness` on a bbbp default model (recipes/bbbp.yaml: GPS hidden 64 x 3
layers; 1,631 training molecules of the deterministic scaffold split), CPU.

1. Trains that model briefly (2 epochs, seed 0) unless --run names a run directory.
2. Baseline, in this process: one forward pass of the training loss over the whole training set,
   one gradient, one Hessian-vector product (median CPU seconds of 3 each, 1 thread): the
   units the measurements are built from.
3. The command as a user types it (a child process, per thread count): defaults, then with
   --landscape. Reported: wall seconds, CPU seconds (the child's user + sys), wall seconds per
   part (from the JSON), and the CPU time in baseline forward passes. With one thread the CPU
   time is what the command takes on an idle core; on a shared machine the wall time is not.

    MOLSAM_DATA_DIR=/work/shared/data/moleculenet/raw nice -n 10 \\
        .venv/bin/python benchmarks/sharpness.py [--run DIR] [--threads 1 2] [--no-landscape]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "import sys; from molsam.cli.main import app; sys.exit(app())"]


def train(out: Path) -> Path:
    """molsam train recipes/bbbp.yaml for 2 epochs, one seed."""
    subprocess.run([*CLI, "train", str(ROOT / "recipes" / "bbbp.yaml"), "--out", str(out),
                    "--set", "train.epochs=2", "--set", "train.seeds=[0]"], check=True)
    return out


def median_seconds(fn, repeats: int = 3) -> float:
    """Median CPU seconds of this process (one thread: the time it takes on an idle core, and
    far less sensitive than wall time to other processes on a shared machine)."""
    times = []
    for _ in range(repeats):
        started = time.process_time()
        fn()
        times.append(time.process_time() - started)
    return statistics.median(times)


def baseline(checkpoint: Path) -> dict:
    from molsam.analysis.objective import gradient, hessian_vector_product, loss_value
    from molsam.analysis.sharpness import checkpoint_objective

    torch.set_num_threads(1)
    objective = checkpoint_objective(checkpoint, workers=1)
    vector = [torch.ones_like(p) for p in objective.params]
    return {
        "forward": median_seconds(lambda: loss_value(objective.loss_fn)),
        "gradient": median_seconds(lambda: gradient(objective.loss_fn, objective.params)),
        "hvp": median_seconds(
            lambda: hessian_vector_product(objective.loss_fn, objective.params, vector)),
        "molecules": objective.n,
    }


def run_command(run: Path, out: Path, threads: int, landscape: bool) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([*CLI, "sharpness", str(run), "--out", str(out), "--threads", str(threads),
                    "--device", "cpu", "-j", "1",
                    "--landscape" if landscape else "--no-landscape"],
                   check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    report = json.loads(out.read_text())["replicates"][0]
    return {"wall": wall, "cpu": cpu, "parts": report["seconds"],
            "eigen_iterations": report["top_eigenvalue"]["iterations"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="existing bbbp run directory (else train one)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-landscape", action="store_true", help="skip the --landscape run")
    args = parser.parse_args()
    os.environ.setdefault("MOLSAM_DATA_DIR", "/work/shared/data/moleculenet/raw")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        run = args.run or train(scratch / "bbbp")
        base = baseline(run / "seed_0" / "best.pt")
        print(f"bbbp default model, {base['molecules']} training molecules; baseline (1 thread, "
              f"CPU s): forward {base['forward']:.2f}, gradient {base['gradient']:.2f}, "
              f"HVP {base['hvp']:.2f}")
        cases = [(t, False) for t in args.threads]
        if not args.no_landscape:
            cases += [(args.threads[0], True)]
        for threads, landscape in cases:
            result = run_command(run, scratch / f"s{threads}{landscape}.json", threads, landscape)
            parts = ", ".join(f"{k} {v:.1f}" for k, v in result["parts"].items() if k != "total")
            print(f"molsam sharpness --threads {threads}"
                  f"{' --landscape' if landscape else ''}: wall {result['wall']:.1f} s, "
                  f"cpu {result['cpu']:.1f} s = {result['cpu'] / base['forward']:.0f} forward "
                  f"passes; parts (wall s): {parts}; {result['eigen_iterations']} power iterations")


if __name__ == "__main__":
    main()
