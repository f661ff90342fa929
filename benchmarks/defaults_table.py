"""Issue 9's target table: GraphSAM as a recipe ships it against Adam, per dataset.

Reads the cells.csv of one or more `molsam benchmark` grids (e.g. defaults-six-small and
defaults-six-large) and prints, per dataset, on the seeds that the baseline and every column of
the family have:
- the family's column with the best mean *validation* metric (`--family graphsam` picks among
  graphsam_r0.005, graphsam_r0.05, ...): the rho a recipe ships, chosen without looking at test;
  or, with `--fixed COLUMN`, that one column everywhere (one global default);
- its test metric and the baseline's (mean ± sample std over seeds), the difference paired by
  seed, how many seeds it wins, and the relative change (positive = better, for ROC-AUC and for
  RMSE alike);
- training cost against the baseline: seconds per epoch (train_seconds / epochs_run, so that
  early stopping does not count as a speed-up), ratio of the means over the paired seeds;
- the flatness of both, where the grid measured it (top Hessian eigenvalue, rho-sharpness).
Then the summary the issue's target asks for: on how many datasets the chosen column's mean test
metric is at least the baseline's, the mean relative change, and the cost ratio pooled over
datasets.

    python benchmarks/defaults_table.py runs/defaults-six-small runs/defaults-six-large \\
        [--baseline adam | graphsam@val] [--family graphsam | --fixed graphsam_r0.005]
        [--seeds 0,1,2,3,4]

`--baseline graphsam@val` compares with GraphSAM as each recipe ships it (per dataset, the rho
column with the best mean validation metric over all its seeds): e.g. the tuned recipes of
benchmarks/suites/tuned-six.yaml against the untuned ones, `--fixed tuned`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_table import HIGHER_IS_BETTER, RHO_COLUMN, mean_std, number, read_cells  # noqa: E402

FLATNESS = ("top_eigenvalue", "sharpness_rho0.05")


def seconds_per_epoch(row: dict) -> float:
    return float(row["train_seconds"]) / max(int(row["epochs_run"]), 1)


def dataset_row(dataset: str, rows: list[dict], args) -> dict | None:
    """One dataset's comparison, or None when the grid has no cells for both columns yet."""
    metric = rows[0]["metric"]
    sign = 1.0 if metric in HIGHER_IS_BETTER else -1.0
    columns: dict[str, dict[int, dict]] = defaultdict(dict)
    for row in rows:
        columns[row["optimizer"]][int(row["seed"])] = row

    def family_of(name: str) -> list[str]:
        return [c for c in columns if (m := RHO_COLUMN.match(c)) and m["family"] == name]

    def by_validation(names: list[str], cells: dict[str, dict[int, dict]]) -> str:
        """The column of `names` with the best mean validation metric over its seeds in cells."""
        return max(names, key=lambda name: sign * statistics.mean(
            float(r["val"]) for r in cells[name].values()))

    # `--baseline FAMILY@val`: per dataset, the family's column that validation picks over all
    # its seeds (the rho each recipe ships), so a tuned column meets what a user runs untuned.
    base_family = args.baseline[:-len("@val")] if args.baseline.endswith("@val") else None
    candidates = family_of(base_family) if base_family else [args.baseline]
    baseline = by_validation(candidates, columns) if candidates and all(
        c in columns for c in candidates) else None
    wanted = [args.fixed] if args.fixed else family_of(args.family)
    if baseline is None or not wanted or any(c not in columns for c in wanted):
        return None
    seeds = set(columns[baseline]).intersection(*(set(columns[c]) for c in wanted))
    if args.seeds is not None:
        seeds &= args.seeds
    if not seeds:
        return None
    columns = {name: {s: r for s, r in cells.items() if s in seeds}
               for name, cells in columns.items() if name in (baseline, *wanted)}
    # The family's column with the best mean validation metric over the kept seeds.
    chosen = args.fixed or by_validation(wanted, columns)
    base, pick = columns[baseline], columns[chosen]
    base_test = [float(base[s]["test"]) for s in sorted(seeds)]
    pick_test = [float(pick[s]["test"]) for s in sorted(seeds)]
    paired = [p - b for p, b in zip(pick_test, base_test)]
    base_mean, pick_mean = statistics.mean(base_test), statistics.mean(pick_test)
    cost = (statistics.mean(seconds_per_epoch(pick[s]) for s in seeds)
            / statistics.mean(seconds_per_epoch(base[s]) for s in seeds))
    flat = {}
    for key in FLATNESS:
        values = [[number(cells[s].get(key, "")) for s in seeds] for cells in (base, pick)]
        if all(v is not None for vs in values for v in vs):
            flat[key] = tuple(statistics.mean(vs) for vs in values)
    return {
        "dataset": dataset, "metric": metric, "seeds": len(seeds), "chosen": chosen,
        "baseline": baseline,
        "val": statistics.mean(float(r["val"]) for r in pick.values()),
        "base": mean_std(base_test), "pick": mean_std(pick_test), "paired": mean_std(paired),
        "better": sum(sign * d > 0 for d in paired),
        "at_least": sign * (pick_mean - base_mean) >= 0,
        "relative": sign * (pick_mean - base_mean) / abs(base_mean), "cost": cost, "flat": flat,
    }


def parse_seeds(text: str | None) -> set[int] | None:
    return None if text is None else {int(s) for s in text.split(",")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("grids", nargs="+", type=Path, help="molsam benchmark --out folders")
    parser.add_argument("--baseline", default="adam",
                        help="a column, or FAMILY@val: that family's column validation picks, "
                             "per dataset (graphsam@val: GraphSAM as the recipes ship it)")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--family", default="graphsam",
                        help="pick this family's rho per dataset by validation [graphsam]")
    choice.add_argument("--fixed", help="one column for every dataset instead")
    parser.add_argument("--seeds", type=parse_seeds, help="only these seeds, e.g. 0,1,2")
    args = parser.parse_args()

    by_dataset: dict[str, list[dict]] = defaultdict(list)
    for grid in args.grids:
        for row in read_cells(grid / "cells.csv"):
            by_dataset[row["dataset"]].append(row)
    results = [r for d, rows in by_dataset.items() if (r := dataset_row(d, rows, args))]
    name = args.fixed or f"{args.family} (rho by validation)"
    print(f"| dataset | metric | seeds | {args.baseline} test | column | its val | its test | "
          f"paired − {args.baseline} | seeds better | relative | s/epoch vs {args.baseline} | "
          f"eigenvalue {args.baseline} → it | rho-sharpness@0.05 {args.baseline} → it |")
    print("|" + "---|" * 13)
    for r in results:
        flat = [f"{pair[0]:.3g} → {pair[1]:.3g}" if (pair := r["flat"].get(k)) else "-"
                for k in FLATNESS]
        base = r["base"] if r["baseline"] == args.baseline else f"{r['base']} ({r['baseline']})"
        print(f"| {r['dataset']} | {r['metric']} | {r['seeds']} | {base} | {r['chosen']} | "
              f"{r['val']:.4f} | {r['pick']} | {r['paired']} | {r['better']}/{r['seeds']} | "
              f"{100 * r['relative']:+.1f}% | {r['cost']:.2f}x | {flat[0]} | {flat[1]} |")
    if results:
        wins = sum(r["at_least"] for r in results)
        mean_relative = statistics.mean(r["relative"] for r in results)
        costs = [r["cost"] for r in results]
        print(f"\n{name}: mean test >= {args.baseline}'s on {wins} of {len(results)} datasets; "
              f"mean relative change {100 * mean_relative:+.2f}%; seconds per epoch "
              f"{statistics.mean(costs):.2f}x {args.baseline}'s (mean over datasets, "
              f"{min(costs):.2f}-{max(costs):.2f}x)")


if __name__ == "__main__":
    main()
