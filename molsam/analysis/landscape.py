"""1-D and 2-D loss landscapes along filter-normalized random directions.

Li, Xu, Taylor, Studer, Goldstein, "Visualizing the Loss Landscape of Neural Nets", NeurIPS 2018,
Sec. 4: a random Gaussian direction d, shaped like the weights, is rescaled filter by filter so
that each filter of d has the norm of the same filter of the weights, d_ij <- d_ij / ||d_ij|| *
||theta_ij||. That removes the scale invariance that makes plain random directions compare
networks of different weight norms unfairly. Here a "filter" is a slice along the first axis of
a weight of two or more axes: a row of a Linear weight (one output unit) or of an embedding
table (one code's vector), as the authors' code (net_plotter.normalize_direction) iterates.
Parameters of one axis (biases, LayerNorm scales and shifts) get a zero direction, the
authors' `ignore='biasbn'` setting used for the paper's figures; `one_dim="copy"` uses the
weights themselves instead (their other option).

The 2-D plot uses two independent directions: random high-dimensional vectors are nearly
orthogonal, as the paper notes, so they are not orthogonalized.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from molsam.outputs import naming, save_figure
from molsam.analysis.objective import (
    LossFn,
    Vector,
    generator,
    loss_value,
    random_normal,
    restored,
    set_offset,
)

ONE_DIM = ("zero", "copy")
#: Grid of the paper's filter-normalized plots: [-1, 1] in units of the weights' own scale.
DEFAULT_ALPHAS_1D = tuple(np.linspace(-1.0, 1.0, 21).round(6).tolist())
DEFAULT_ALPHAS_2D = tuple(np.linspace(-1.0, 1.0, 9).round(6).tolist())


def filter_normalized_direction(
    params: Sequence[Tensor], generator_: torch.Generator, one_dim: str = "zero"
) -> Vector:
    """A random direction with the filter norms of `params` (Li et al. 2018, eq. in Sec. 4).

    Args:
        generator_: the CPU generator the Gaussian entries are drawn from (seeded by the caller).
        one_dim: "zero" (biases and norm parameters do not move) or "copy" (they move along
            themselves).
    Returns:
        one tensor per parameter, same shapes, dtypes and devices.
    """
    if one_dim not in ONE_DIM:
        raise ValueError(f"one_dim: {one_dim!r} is not one of {', '.join(ONE_DIM)}")
    direction = random_normal(params, generator_)
    out = []
    for p, d in zip(params, direction):
        w = p.detach()
        if w.dim() <= 1:
            out.append(torch.zeros_like(w) if one_dim == "zero" else w.clone())
            continue
        # Per filter (slice along axis 0); the 1e-10 is the authors' guard for a zero slice.
        d_norm = d.flatten(1).norm(dim=1).view(-1, *[1] * (w.dim() - 1))
        w_norm = w.flatten(1).norm(dim=1).view(-1, *[1] * (w.dim() - 1))
        out.append(d * (w_norm / (d_norm + 1e-10)))
    return out


def loss_landscape_1d(
    loss_fn: LossFn,
    params: Sequence[Tensor],
    alphas: Sequence[float] = DEFAULT_ALPHAS_1D,
    *,
    seed: int = 0,
    direction: Vector | None = None,
    one_dim: str = "zero",
) -> dict:
    """L(w + alpha d) for each alpha, d filter-normalized (seeded) unless given.

    Returns {"alphas": [A], "losses": [A]}; the parameters are restored exactly afterwards.
    """
    params = list(params)
    if direction is None:
        direction = filter_normalized_direction(params, generator(seed), one_dim)
    losses = []
    with restored(params) as origin:
        for alpha in alphas:
            set_offset(params, origin, torch._foreach_mul(direction, float(alpha)))
            losses.append(loss_value(loss_fn))
    return {"alphas": [float(a) for a in alphas], "losses": losses}


def loss_landscape_2d(
    loss_fn: LossFn,
    params: Sequence[Tensor],
    alphas: Sequence[float] = DEFAULT_ALPHAS_2D,
    betas: Sequence[float] | None = None,
    *,
    seed: int = 0,
    directions: tuple[Vector, Vector] | None = None,
    one_dim: str = "zero",
) -> dict:
    """L(w + alpha d1 + beta d2) on the grid alphas x betas (betas default to alphas); d1, d2
    independent filter-normalized directions (one seeded generator, drawn in turn).

    Returns {"alphas": [A], "betas": [B], "losses": [A][B]}; parameters restored exactly.
    """
    params = list(params)
    betas = alphas if betas is None else betas
    if directions is None:
        gen = generator(seed)
        directions = (filter_normalized_direction(params, gen, one_dim),
                      filter_normalized_direction(params, gen, one_dim))
    d1, d2 = directions
    losses = []
    with restored(params) as origin:
        for alpha in alphas:
            row = []
            for beta in betas:
                offset = torch._foreach_add(torch._foreach_mul(d1, float(alpha)),
                                            torch._foreach_mul(d2, float(beta)))
                set_offset(params, origin, offset)
                row.append(loss_value(loss_fn))
            losses.append(row)
    return {"alphas": [float(a) for a in alphas], "betas": [float(b) for b in betas],
            "losses": losses}


# --------------------------------------------------------------------------------- files
def write_landscape_1d(result: dict, csv_path: Path, png_path: Path, title: str = "") -> None:
    """CSV (alpha,loss) and a line plot."""
    with naming(csv_path), open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["alpha", "loss"])
        writer.writerows((f"{a:.6g}", f"{v:.8g}") for a, v in zip(result["alphas"],
                                                                   result["losses"]))
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5, 4), constrained_layout=True)
    axis.plot(result["alphas"], result["losses"], "o-", markersize=3)
    axis.set(xlabel="alpha (filter-normalized direction)", ylabel="training loss", title=title)
    try:
        save_figure(figure, png_path, dpi=100)  # atomic; a full disk: an OSError naming the PNG
    finally:
        plt.close(figure)


def write_landscape_2d(result: dict, csv_path: Path, png_path: Path, title: str = "") -> None:
    """CSV (alpha,beta,loss; one row per grid point) and a filled contour plot as in the
    paper's Fig. 1 and 5."""
    with naming(csv_path), open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["alpha", "beta", "loss"])
        for a, row in zip(result["alphas"], result["losses"]):
            writer.writerows((f"{a:.6g}", f"{b:.6g}", f"{v:.8g}")
                             for b, v in zip(result["betas"], row))
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5, 4), constrained_layout=True)
    grid = np.asarray(result["losses"], dtype=np.float64)  # [A, B]: rows alpha, columns beta
    filled = axis.contourf(result["alphas"], result["betas"], grid.T, levels=20, cmap="viridis")
    axis.contour(result["alphas"], result["betas"], grid.T, levels=20, colors="k",
                 linewidths=0.3)
    figure.colorbar(filled, ax=axis, label="training loss")
    axis.plot([0], [0], "r+")
    axis.set(xlabel="alpha (direction 1)", ylabel="beta (direction 2)", title=title)
    try:
        save_figure(figure, png_path, dpi=100)  # atomic; a full disk: an OSError naming the PNG
    finally:
        plt.close(figure)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
