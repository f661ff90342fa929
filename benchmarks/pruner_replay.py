"""How much training each `tune.pruner` saves, replayed on learning curves that were measured.

Reads every metrics.csv under the given folders (molsam train / benchmark runs: one row per
epoch with a `val_<metric>` column), then replays random 20-trial searches: trials take curves
in a random order, report their best validation score so far each epoch (as molsam.tune does)
to the pruner, and stop when it says so. Prints, per pruner, the epochs trained as a share of
training every trial to the end, the trials that ran to the end, and how often the search
kept (completed) the trial whose final best score is the best of the 20 (the winner). No model
is trained: it takes seconds.

    python benchmarks/pruner_replay.py runs/graphsam-study-bbbp --metric roc_auc

Caveat: the curves a folder holds (e.g. one architecture, several rhos) may be closer to each
other than the points of a real search; the replay measures the pruners' rules, not TPE.
"""

from __future__ import annotations

import argparse
import csv
import math
import random
from pathlib import Path

import optuna
from optuna.trial import TrialState

from molsam.config import PrunerConfig
from molsam.tune import build_pruner

PRUNERS = {
    "none": PrunerConfig(name="none"),
    "median (default: 4 start-up trials, warm-up 5)": PrunerConfig(),
    "median, 2 start-up trials": PrunerConfig(name="median", startup_trials=2),
    "successive_halving (r=3, warm-up 5)": PrunerConfig(name="successive_halving"),
}


def read_curves(roots: list[Path], metric: str) -> list[list[float]]:
    """Best-so-far validation score per epoch, one list per metrics.csv."""
    curves = []
    for root in roots:
        for path in sorted(root.rglob("metrics.csv")):
            with open(path, newline="") as handle:
                values = [float(r[f"val_{metric}"]) for r in csv.DictReader(handle)
                          if r.get(f"val_{metric}") not in (None, "")]
            if values:
                best, running = -math.inf, []
                for v in values:
                    best = max(best, v)
                    running.append(best)
                curves.append(running)
    return curves


def replay(curves: list[list[float]], config: PrunerConfig) -> tuple[int, int, bool]:
    """(epochs trained, trials completed, winner completed) for one search over `curves`."""
    study = optuna.create_study(direction="maximize", pruner=build_pruner(config))
    epochs = completed = 0
    winner = max(range(len(curves)), key=lambda i: curves[i][-1])
    kept = False
    for i, curve in enumerate(curves):
        trial = study.ask()
        for step, value in enumerate(curve):
            epochs += 1
            trial.report(value, step)
            if trial.should_prune():
                study.tell(trial, state=TrialState.PRUNED)
                break
        else:
            study.tell(trial, curve[-1])
            completed += 1
            kept |= i == winner
    return epochs, completed, kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="+", type=Path)
    parser.add_argument("--metric", default="roc_auc")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    curves = read_curves(args.roots, args.metric)
    if not curves:
        raise SystemExit(f"no metrics.csv with a val_{args.metric} column under {args.roots}")
    print(f"{len(curves)} curves, {args.trials}-trial searches (curves drawn with replacement "
          f"when there are fewer), {args.repeats} random orders, seed {args.seed}")
    full = None
    for name, config in PRUNERS.items():
        rng = random.Random(args.seed)  # the same searches for every pruner
        totals = [0, 0, 0, 0]
        for _ in range(args.repeats):
            picked = (rng.sample(curves, args.trials) if len(curves) >= args.trials
                      else [rng.choice(curves) for _ in range(args.trials)])
            epochs, completed, kept = replay(picked, config)
            totals[0] += epochs
            totals[1] += completed
            totals[2] += kept
            totals[3] += sum(len(c) for c in picked)
        full = totals[3]
        print(f"  {name:50s} epochs {totals[0] / full:6.1%} of all  "
              f"completed {totals[1] / args.repeats:5.1f} of {args.trials}  "
              f"winner kept {totals[2] / args.repeats:6.1%}")


if __name__ == "__main__":
    main()
