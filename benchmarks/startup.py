"""Start-up time of the command line: `molsam --help` and every `molsam COMMAND --help`.

    python benchmarks/startup.py [--repeats 7] [--baseline PATH_TO_OTHER_CHECKOUT]

Each command runs in a fresh interpreter (this checkout first on sys.path, the CLI app called
in-process as the `molsam` script does); the figure is the best of `--repeats` wall times, next to a bare `python -c pass` of
the same interpreter measured in the same run (the floor no CLI can beat). `--baseline` times the
same commands from another checkout (e.g. an older commit) in the same run, interleaved.
Target: `molsam --help` under 0.5 s. It also lists which heavy modules (torch, rdkit, matplotlib,
sklearn, numpy) each command's help pulls in: none should.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ([], ["featurize"], ["train"], ["evaluate"], ["predict"], ["datasets"], ["benchmark"])
HEAVY = ("torch", "rdkit", "matplotlib", "sklearn", "numpy", "scipy")
# Runs the CLI's --help in-process, then reports which heavy modules got imported.
PROBE = (
    "import sys\n"
    "from molsam.cli.main import app\n"
    "try:\n"
    "    app(sys.argv[1:] + ['--help'])\n"
    "except SystemExit:\n"
    "    pass\n"
    f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n"
)


def timed(command: list[str], path: Path | None) -> tuple[float, str]:
    env = dict(os.environ)
    if path is not None:
        env["PYTHONPATH"] = str(path)
    start = time.perf_counter()
    # cwd = the checkout: `python -c` puts the working folder first on sys.path
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=path)
    return time.perf_counter() - start, done.stderr.strip().splitlines()[-1:] or [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--baseline", type=Path, default=None)
    args = parser.parse_args()
    trees = {"this": ROOT} | ({"baseline": args.baseline} if args.baseline else {})
    best: dict[tuple[str, str], float] = {}
    heavy: dict[tuple[str, str], str] = {}
    floor = min(timed([sys.executable, "-c", "pass"], None)[0] for _ in range(args.repeats))
    for _ in range(args.repeats):  # interleaved, so machine noise hits every row alike
        for name, tree in trees.items():
            for command in COMMANDS:
                label = " ".join(["molsam", *command, "--help"])
                seconds, last = timed([sys.executable, "-c", PROBE, *command], tree)
                key = (name, label)
                best[key] = min(best.get(key, float("inf")), seconds)
                heavy[key] = last[0]
    print(f"python -c pass (floor): {floor:.3f} s; best of {args.repeats}")
    for label in dict.fromkeys(label for _, label in best):
        cells = [f"{name}: {best[(name, label)]:.3f} s [{heavy[(name, label)] or 'no heavy imports'}]"
                 for name in trees]
        print(f"{label:<28} " + "   ".join(cells))
    top = best[("this", "molsam --help")]
    print(f"molsam --help: {top:.3f} s (target < 0.5 s: {'met' if top < 0.5 else 'NOT met'})")
    if args.baseline:
        print(f"ratio baseline / this for molsam --help: "
              f"{best[('baseline', 'molsam --help')] / top:.1f}x")


if __name__ == "__main__":
    main()
