"""GraphSAM's perturbation direction against the exact SAM direction, per epoch (the GraphSAM
paper's Fig. 3 evidence), from a `molsam benchmark` folder whose GraphSAM cells logged it
(`train.log_sam_cosine: true`).

For every column (optimizer or variant) with the diagnostic, prints the per-epoch mean over seeds
of cos(e_t, g_t) (mean over the epoch's steps), the smallest per-step cosine seen, and the norms
‖e‖ and ‖g‖, and draws cos per epoch as a PNG.

    python benchmarks/sam_cosine.py runs/graphsam-study-bbbp [--out sam_cosine.png]
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path


def read_cells(root: Path) -> dict[str, dict[int, list[dict]]]:
    """{column: {epoch: [row of each seed]}} for cells whose metrics.csv has the diagnostic."""
    found: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for metrics in sorted(root.glob("cells/*/*/seed_*/seed_*/metrics.csv")):
        column = f"{metrics.parents[3].name}/{metrics.parents[2].name}"
        with open(metrics, newline="") as handle:
            for row in csv.DictReader(handle):
                if row.get("sam_cos_mean"):
                    found[column][int(row["epoch"])].append(row)
    return found


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("benchmark", type=Path, help="a molsam benchmark --out folder")
    parser.add_argument("--out", type=Path, default=None, help="PNG [default: BENCHMARK/sam_cosine.png]")
    args = parser.parse_args()
    cells = read_cells(args.benchmark)
    if not cells:
        raise SystemExit(f"{args.benchmark}: no cell logged the SAM cosine (train.log_sam_cosine)")
    print("| column | epochs | seeds | cos mean (all epochs) | cos mean epochs 0-1 | cos mean epochs >= 2 "
          "| min cos | ‖e‖ mean | ‖g‖ mean |")
    print("|---|---|---|---|---|---|---|---|---|")
    curves = {}
    for column, epochs in sorted(cells.items()):
        per_epoch = {e: mean([float(r["sam_cos_mean"]) for r in rows]) for e, rows in epochs.items()}
        curves[column] = sorted(per_epoch.items())
        rows = [r for rs in epochs.values() for r in rs]
        early = [v for e, v in per_epoch.items() if e < 2]
        late = [v for e, v in per_epoch.items() if e >= 2]
        seeds = max(len(rs) for rs in epochs.values())
        print(f"| {column} | {len(epochs)} | {seeds} | {mean([float(r['sam_cos_mean']) for r in rows]):.3f} "
              f"| {mean(early) if early else float('nan'):.3f} | {mean(late) if late else float('nan'):.3f} "
              f"| {min(float(r['sam_cos_min']) for r in rows):.3f} "
              f"| {mean([float(r['e_norm_mean']) for r in rows]):.3f} "
              f"| {mean([float(r['g_norm_mean']) for r in rows]):.3f} |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4), constrained_layout=True)
    for column, points in curves.items():
        axis.plot([e for e, _ in points], [v for _, v in points], marker=".", label=column)
    axis.axhline(0.0, color="grey", linewidth=0.8)
    axis.set(xlabel="epoch", ylabel="mean cos(e, g_SAM) over the epoch's steps",
             title="GraphSAM's estimate vs the exact SAM direction")
    axis.legend(fontsize="x-small")
    out = args.out or args.benchmark / "sam_cosine.png"
    figure.savefig(out, dpi=100)
    print(f"plot: {out}")


if __name__ == "__main__":
    main()
