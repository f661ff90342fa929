"""Learning curves as a PNG (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

import csv
from pathlib import Path


def plot_learning_curves(run_dir: Path, seeds: list[int], metric: str, out: Path) -> Path:
    """Train loss and validation/test `metric` per epoch, one line per replicate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for seed in seeds:
        path = run_dir / f"seed_{seed}" / "metrics.csv"
        if not path.exists():
            continue
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        epochs = [int(r["epoch"]) for r in rows]
        left.plot(epochs, [float(r["train_loss"]) for r in rows], label=f"seed {seed}")
        for part, style in (("val", "-"), ("test", "--")):
            values = [float(r[f"{part}_{metric}"]) if r.get(f"{part}_{metric}") else None
                      for r in rows]
            points = [(e, v) for e, v in zip(epochs, values) if v is not None]
            if points:
                right.plot(*zip(*points), style, label=f"{part} seed {seed}")
    left.set(xlabel="epoch", ylabel="train loss", title="training loss")
    right.set(xlabel="epoch", ylabel=metric, title=f"validation / test {metric}")
    for axis in (left, right):
        if axis.lines:
            axis.legend(fontsize="small")
    from molsam.outputs import save_figure

    try:
        save_figure(figure, out, dpi=100)  # atomic; a full disk: an OSError naming curves.png
    finally:
        plt.close(figure)
    return out
