"""Issue 13's deliverable 3: a `molsam tune` search per paper dataset, to a fixed total budget.

    MOLSAM_DATA_DIR=/path/to/moleculenet/raw python benchmarks/tune_six.py \\
        [--datasets esol,clintox,sider,lipo,tox21] [--trials 20] [--jobs 2] [--runs runs]
        [--set KEY=VALUE ...]

For each dataset, in order: `molsam tune recipes/<dataset>.yaml --trials R --jobs J --out
runs/tune-<dataset> --set train.seeds=[0]`, where R is the budget (--trials) minus the trials
the study in runs/tune-<dataset>/study.journal has finished (complete or pruned), so a search cut
short by the end of a session continues where it stopped instead of starting 20 more (`molsam
tune --trials` counts the trials of one call). The recipe's model, schedule and split, one seed
per trial, the default search space (rho, lr, hidden, layers, dropout) and median pruning: the
budget of the bbbp search in docs/RESULTS.md. A finished search's best.yaml is written to
recipes/tuned/<dataset>.yaml (with the shipped recipe's train.seeds and data.path, and a header
naming the search), for benchmarks/suites/tuned-six.yaml (5 seeds, the optimizer each search
tuned) to score beside the untuned ones of benchmarks/suites/defaults-six-*.yaml.

sider is read from the main-set CSV of the data folder beside this project, as in the suites.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SIDER_CSV = ROOT.parent / "shared" / "data" / "moleculenet" / "sider.csv"
DATASETS = ("esol", "clintox", "sider", "lipo", "tox21")


def trials_held(out: Path) -> int:
    """Trials the search in `out` has finished (complete or pruned); 0 if none. Failed ones
    (a search killed mid-trial, a sampled point the recipe refuses) do not use up the budget."""
    from molsam.tune import default_storage, import_optuna, open_storage

    where = default_storage(out)
    if not Path(where.removeprefix("sqlite:///")).is_file():
        return 0
    optuna = import_optuna()
    storage = open_storage(where)
    if "molsam" not in {s.study_name for s in optuna.get_all_study_summaries(storage)}:
        return 0
    return len(finished_trials(optuna.load_study(study_name="molsam", storage=storage)))


def finished_trials(study) -> list:
    """The trials that count against the budget: complete or pruned."""
    return [t for t in study.get_trials(deepcopy=False)
            if t.state.name in ("COMPLETE", "PRUNED")]


def write_tuned_recipe(best: Path, dataset: str, target: Path) -> None:
    """best.yaml as a recipe to ship: the shipped recipe's seeds and data path (the search ran
    one seed, and sider from an absolute path), under a header that says where it came from."""
    import yaml

    from molsam.tune import default_storage, load_study

    shipped = yaml.safe_load((ROOT / "recipes" / f"{dataset}.yaml").read_text())
    recipe = yaml.safe_load(best.read_text())
    recipe["data"]["path"] = shipped["data"]["path"]
    recipe["train"]["seeds"] = shipped["train"]["seeds"]
    study = load_study(default_storage(best.parent))
    finished = finished_trials(study)
    metric = study.user_attrs["molsam"]["metric"]
    header = (
        f"# {dataset}, tuned: the best of {len(finished)} finished trials of `molsam tune "
        f"recipes/{dataset}.yaml`\n"
        f"# (benchmarks/tune_six.py: one seed per trial, the default space over rho, lr, hidden,"
        f" layers\n# and dropout, median pruning), trial {study.best_trial.number}: validation "
        f"{metric} {study.best_value:.4f} (seed 0).\n"
        "# Chosen on validation only; its test scores (5 seeds) are in docs/RESULTS.md.\n"
        f"#   molsam train recipes/tuned/{dataset}.yaml --out runs/{dataset}-tuned\n")
    target.write_text(header + yaml.safe_dump(recipe, sort_keys=False))


def tune(dataset: str, budget: int, jobs: int, runs: Path, sets: list[str]) -> Path | None:
    """Run (or continue) one dataset's search; the path of its best.yaml, None if none yet."""
    out = runs / f"tune-{dataset}"
    remaining = budget - trials_held(out)
    if remaining > 0:
        recipe = ROOT / "recipes" / f"{dataset}.yaml"
        command = [sys.executable, "-m", "molsam", "tune", str(recipe),
                   "--trials", str(remaining), "--jobs", str(jobs), "--out", str(out),
                   "--set", "train.seeds=[0]"]
        if dataset == "sider":
            command += ["--set", f"data.path={SIDER_CSV}"]
        for item in sets:
            command += ["--set", item]
        print(f"== {dataset}: {remaining} of {budget} trials to run", flush=True)
        subprocess.run(command, check=True, cwd=ROOT)
    best = out / "best.yaml"
    return best if best.is_file() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--trials", type=int, default=20, help="total budget per dataset [20]")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--runs", type=Path, default=ROOT / "runs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="passed on to molsam tune (a quick check: train.epochs=2)")
    parser.add_argument("--no-copy", action="store_true",
                        help="leave recipes/tuned/ alone (for a quick check)")
    args = parser.parse_args()
    tuned = ROOT / "recipes" / "tuned"
    if not args.no_copy:
        tuned.mkdir(exist_ok=True)
    for dataset in args.datasets.split(","):
        best = tune(dataset, args.trials, args.jobs, args.runs, args.set)
        if best is not None and not args.no_copy:
            write_tuned_recipe(best, dataset, tuned / f"{dataset}.yaml")
            print(f"== {dataset}: {best} -> recipes/tuned/{dataset}.yaml", flush=True)


if __name__ == "__main__":
    main()
