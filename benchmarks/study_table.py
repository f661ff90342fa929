"""Seed statistics of a `molsam benchmark` grid: the tables issue 9's study reports.

Reads the grid's cells.csv (one row per dataset x column x seed) and prints, per dataset:
- per column: seeds, validation and test metric (mean ± sample std over seeds), the test
  difference against the baseline column paired by seed (same seed = same initialization and
  batch order, so the pairing removes most of the seed-to-seed spread) with its std and how many
  seeds the column wins, and the flatness columns the grid measured (mean over seeds);
- the Spearman rank correlation over all cells between each flatness measure and the test
  metric (scipy.stats.spearmanr), and between validation and test;
- for each family of columns that differ only by rho (`<family>_r<rho>`), the rhos ranked by
  mean validation metric: the selection issue 9 asks for ("the two best rhos by validation"),
  made without looking at test.

    python benchmarks/study_table.py runs/graphsam-study-bbbp [--baseline adam] [--complete]
        [--drop COLUMN ...]

It also draws BENCHMARK/study_<dataset>.png: test metric against the top Hessian eigenvalue,
one point per cell (log x axis), and validation and test metric against rho per family.

Only seeds that every reported column has are used when --complete is given, so that a grid
still running compares columns on the same seeds.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import statistics
from collections import defaultdict
from pathlib import Path

from scipy.stats import spearmanr

FLATNESS = ("sam_cos_mean", "top_eigenvalue", "hessian_trace", "sharpness_rho0.01",
            "sharpness_rho0.05")
HIGHER_IS_BETTER = {"roc_auc", "prc_auc", "accuracy", "balanced_accuracy", "macro_f1", "r2"}
RHO_COLUMN = re.compile(r"^(?P<family>.+)_r(?P<rho>[0-9.]+)$")


def read_cells(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def number(text: str) -> float | None:
    return float(text) if text not in ("", None) else None


def mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def dataset_table(rows: list[dict], baseline: str, seeds: set[int] | None) -> list[str]:
    """Markdown lines for one dataset's cells."""
    metric = rows[0]["metric"]
    sign = 1.0 if metric in HIGHER_IS_BETTER else -1.0
    by_column: dict[str, dict[int, dict]] = defaultdict(dict)
    for row in rows:
        seed = int(row["seed"])
        if seeds is None or seed in seeds:
            by_column[row["optimizer"]][seed] = row
    base = by_column.get(baseline, {})
    flat = [c for c in FLATNESS if any(number(r.get(c, "")) is not None for r in rows)]
    header = ["column", "seeds", f"val {metric}", f"test {metric}",
              f"test − {baseline} (paired)", "seeds better", *flat]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for column, cells in by_column.items():
        val = [float(r["val"]) for r in cells.values()]
        test = [float(r["test"]) for r in cells.values()]
        paired = [float(r["test"]) - float(base[s]["test"]) for s, r in cells.items() if s in base]
        better = sum(sign * d > 0 for d in paired)
        flat_means = []
        for key in flat:
            values = [v for v in (number(r.get(key, "")) for r in cells.values()) if v is not None]
            flat_means.append(f"{statistics.mean(values):.4g}" if values else "-")
        lines.append("| " + " | ".join([
            column, str(len(cells)), mean_std(val), mean_std(test),
            "-" if column == baseline or not paired else mean_std(paired),
            "-" if column == baseline or not paired else f"{better}/{len(paired)}",
            *flat_means]) + " |")
    return lines


def correlations(rows: list[dict]) -> list[str]:
    """Spearman rank correlation of each flatness measure (and of validation) with test."""
    lines = []
    for key in ("val", *FLATNESS):
        pairs = [(number(r.get(key, "")), float(r["test"])) for r in rows]
        pairs = [(x, y) for x, y in pairs if x is not None]
        if len(pairs) < 4:
            continue
        result = spearmanr([x for x, _ in pairs], [y for _, y in pairs])
        if not math.isnan(result.statistic):
            lines.append(f"- Spearman({key}, test) = {result.statistic:+.2f} over {len(pairs)} "
                         f"cells (p = {result.pvalue:.2g})")
    return lines


def rho_ranking(rows: list[dict], seeds: set[int] | None) -> list[str]:
    """Per `<family>_r<rho>` family: rhos by mean validation metric, best first."""
    metric = rows[0]["metric"]
    sign = 1.0 if metric in HIGHER_IS_BETTER else -1.0
    val: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        match = RHO_COLUMN.match(row["optimizer"])
        if match and (seeds is None or int(row["seed"]) in seeds):
            val[match["family"]][float(match["rho"])].append(float(row["val"]))
    lines = []
    for family, by_rho in val.items():
        ranked = sorted(by_rho.items(), key=lambda item: -sign * statistics.mean(item[1]))
        text = ", ".join(f"{rho:g} ({statistics.mean(v):.4f}, n={len(v)})" for rho, v in ranked)
        lines.append(f"- {family}: rho by mean validation {metric}, best first: {text}")
    return lines


def plot_dataset(rows: list[dict], dataset: str, out: Path) -> Path:
    """Two panels: test vs top eigenvalue per cell; val and test vs rho per rho family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = rows[0]["metric"]
    figure, (flat_axis, rho_axis) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    by_family: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        match = RHO_COLUMN.match(row["optimizer"])
        by_family[match["family"] if match else row["optimizer"]].append(row)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (family, members) in enumerate(sorted(by_family.items())):
        color = colors[index % len(colors)]
        points = [(number(r.get("top_eigenvalue", "")), float(r["test"])) for r in members]
        points = [(x, y) for x, y in points if x is not None]
        if points:
            flat_axis.scatter([max(x, 1e-3) for x, _ in points], [y for _, y in points],
                              label=family, s=14, color=color)
        by_rho: dict[float, list[dict]] = defaultdict(list)
        for row in members:
            match = RHO_COLUMN.match(row["optimizer"])
            if match:
                by_rho[float(match["rho"])].append(row)
        if len(by_rho) > 1:
            rhos = sorted(by_rho)
            for key, style in (("val", "--"), ("test", "-")):
                values = [[float(r[key]) for r in by_rho[rho]] for rho in rhos]
                rho_axis.errorbar(rhos, [statistics.mean(v) for v in values],
                                  yerr=[statistics.stdev(v) if len(v) > 1 else 0.0 for v in values],
                                  linestyle=style, marker="o", capsize=3, color=color,
                                  label=f"{family} {key}")
    flat_axis.set(xscale="log", xlabel="top Hessian eigenvalue at best.pt (training split)",
                  ylabel=f"test {metric}", title=f"{dataset}: flatness vs test, one point per cell")
    flat_axis.legend(fontsize="x-small")
    rho_axis.set(xscale="log", xlabel="rho", ylabel=metric,
                 title="mean ± std over seeds (dashed: validation)")
    rho_axis.legend(fontsize="x-small")
    path = out / f"study_{dataset}.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("benchmark", type=Path, help="a molsam benchmark --out folder")
    parser.add_argument("--baseline", default="adam", help="column to pair against [adam]")
    parser.add_argument("--complete", action="store_true",
                        help="use only the seeds that every column of a dataset has")
    parser.add_argument("--drop", action="append", default=[], metavar="COLUMN",
                        help="leave a column out (repeatable), e.g. one stopped after fewer seeds")
    args = parser.parse_args()
    cells = read_cells(args.benchmark / "cells.csv")
    by_dataset: dict[str, list[dict]] = defaultdict(list)
    for row in cells:
        if row["optimizer"] not in args.drop:
            by_dataset[row["dataset"]].append(row)
    for dataset, rows in by_dataset.items():
        seeds = None
        if args.complete:
            per_column: dict[str, set[int]] = defaultdict(set)
            for row in rows:
                per_column[row["optimizer"]].add(int(row["seed"]))
            seeds = set.intersection(*per_column.values())
            rows = [r for r in rows if int(r["seed"]) in seeds]
        print(f"## {dataset}" + (f" (seeds {sorted(seeds)})" if seeds is not None else ""))
        print("\n".join(dataset_table(rows, args.baseline, seeds)))
        print()
        print("\n".join(correlations(rows)))
        print("\n".join(rho_ranking(rows, seeds)))
        print(f"plot: {plot_dataset(rows, dataset, args.benchmark)}")
        print()


if __name__ == "__main__":
    main()
