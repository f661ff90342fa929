"""One markdown row per `molsam tune` search: what the search cost and what it chose.

    python benchmarks/tune_summary.py runs/tune-bbbp-j2 runs/tune-esol ... [--epochs 30]

Per search (an --out folder of `molsam tune`, read through its study storage):
- trials complete / pruned / failed (failed: a killed search's, or a point the recipe refused);
- epochs trained, as a share of what the finished trials would have trained had none stopped
  early (trials x --epochs): what pruning and the recipe's patience saved together;
- wall time from the first trial's start to the last one's end (a search continued in a later
  session counts the gap between sessions too: the table says which searches were continued);
- the best trial's number, parameters and validation score (seed 0: the searches tune one seed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from tune_six import finished_trials  # noqa: E402

PARAMS = ("model.hidden", "model.layers", "model.dropout", "optim.lr", "optim.rho")


def summary_row(out: Path, epochs: int) -> str:
    from molsam.tune import default_storage, load_study

    study = load_study(default_storage(out))
    trials = study.get_trials(deepcopy=False)
    count = {state: sum(t.state.name == state for t in trials)
             for state in ("COMPLETE", "PRUNED", "FAIL")}
    finished = finished_trials(study)
    # The last reported step is the last epoch index (one seed per trial: step = epoch).
    trained = sum(max(t.intermediate_values, default=-1) + 1 for t in finished)
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    wall_min = (max(ends) - min(starts)).total_seconds() / 60 if starts and ends else float("nan")
    best = study.best_trial
    params = " | ".join(f"{best.params[k]:.3g}" if isinstance(best.params[k], float)
                        else str(best.params[k]) for k in PARAMS)
    metric = study.user_attrs.get("molsam", {}).get("metric", "value")
    return (f"| {out.name} | {count['COMPLETE']} / {count['PRUNED']} / {count['FAIL']} | "
            f"{trained / max(len(finished) * epochs, 1):.0%} | {wall_min:.0f} min | "
            f"{best.number} | {params} | {metric} {best.value:.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("searches", nargs="+", type=Path, help="molsam tune --out folders")
    parser.add_argument("--epochs", type=int, default=30, help="train.epochs of the searches")
    args = parser.parse_args()
    print("| search | complete / pruned / failed | epochs trained | wall | best trial | "
          f"{' | '.join(PARAMS)} | best val (seed 0) |")
    print("|" + "---|" * (6 + len(PARAMS)))
    for out in args.searches:
        print(summary_row(out, args.epochs))


if __name__ == "__main__":
    main()
