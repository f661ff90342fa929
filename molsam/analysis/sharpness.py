"""Flatness of a trained model: rho-sharpness, the Hessian's top eigenvalue and trace, and loss
landscapes (molsam.analysis.landscape), on the training loss over a whole split.

Every measurement is a pure function of a `loss_fn` (molsam.analysis.objective: the full-data
loss at the parameters' current values) and the parameter list; it moves the parameters and puts
them back bitwise. Randomness (start vectors, probes, directions) comes from a CPU generator
seeded by `seed`, so the same checkpoint, data and seed give the same numbers.

`measure_checkpoint` is the one-call entry: a checkpoint file, its run's saved split (train by
default), the checkpoint's own loss (molsam.train.losses.masked_loss on targets standardized with
its scaler), dropout off.

Definitions (w: all trainable parameters as one vector, global L2 norm as molsam.optim uses):
- rho-sharpness  S(rho) = max_{||e|| <= rho} L(w + e) - L(w)   (Foret et al., "Sharpness-Aware
  Minimization for Efficiently Improving Generalization", ICLR 2021, eq. 1; Keskar et al., "On
  Large-Batch Training for Deep Learning: Generalization Gap and Sharp Minima", ICLR 2017).
- lambda_max: the largest eigenvalue of the Hessian of L at w, by power iteration on
  Hessian-vector products (as PyHessian: Yao et al., "PyHessian: Neural Networks Through the
  Lens of the Hessian", IEEE BigData 2020).
- tr(H) by Hutchinson's estimator E[v^T H v] with Rademacher v (Hutchinson, "A stochastic
  estimator of the trace of the influence matrix for Laplacian smoothing splines", 1989).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from molsam.analysis.landscape import (
    DEFAULT_ALPHAS_1D,
    DEFAULT_ALPHAS_2D,
    loss_landscape_1d,
    loss_landscape_2d,
    write_landscape_1d,
    write_landscape_2d,
)
from molsam.analysis.objective import (
    LossFn,
    dataset_loss,
    dot,
    generator,
    gradient,
    hessian_vector_product,
    hessian_vector_products,
    loss_value,
    norm,
    random_normal,
    random_rademacher,
    restored,
    scaled,
    set_offset,
    trainable,
)
from molsam.devices import cpu_threads

__all__ = [
    "rho_sharpness", "top_hessian_eigenvalue", "hessian_trace", "loss_landscape_1d",
    "loss_landscape_2d", "measure", "measure_checkpoint", "measure_run", "summarize",
    "checkpoint_objective",
    "DEFAULT_RHOS",
]

#: Radii of the default report: around GraphSAM's default rho (0.01) and SAM's usual 0.05.
DEFAULT_RHOS = (0.005, 0.01, 0.05)
#: Defaults sized to measure a bbbp-size default model (hidden 64 x 3 layers, ~1,600 training
#: molecules) in about a minute on one idle CPU core (benchmarks/sharpness.py): a gradient
#: costs ~2.5 forward passes, a Hessian-vector product ~9 (~7 when several share a pass, as
#: the trace's probes do). The trace is the least precise part at this budget (its stderr is
#: reported; it falls as 1/sqrt(probes)).
DEFAULT_STEPS = 3
DEFAULT_ITERS = 20
DEFAULT_TOL = 1e-3
DEFAULT_PROBES = 4


def rho_sharpness(
    loss_fn: LossFn,
    params: Sequence[Tensor],
    rhos: Sequence[float] = DEFAULT_RHOS,
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
) -> list[dict]:
    """max_{||e|| <= rho} L(w + e) - L(w) for each rho, by projected gradient ascent on e.

    Step 1 is SAM's perturbation e = rho g / ||g|| (g = grad L(w), shared by every rho); each
    further step projects e + t grad L(w + e) onto the ball with an unbounded step t, i.e.
    e <- rho grad L(w + e) / ||grad L(w + e)||. For a convex loss (near a minimum) this never
    decreases L(w + e) (it maximizes the linearization over the ball: a conditional-gradient
    step), and on a quadratic it is power iteration towards the trust-region maximizer. The
    ascent is a lower bound on the true max; the best of its iterates (and e = 0) is reported.

    Cost per rho: steps - 1 gradients and one loss evaluation (plus one gradient in all).
    At a stationary point (g = 0) the first direction is a seeded Gaussian.

    Returns:
        one dict per rho: rho, sharpness (>= 0), loss L(w), perturbed_loss (L(w) + sharpness),
        sam_sharpness (after step 1 alone: what one SAM step sees), ascent (L(w + e_k) - L(w)
        for k = 1..steps).
    """
    if steps < 1:
        raise ValueError(f"steps: expected an int >= 1, got {steps!r}")
    rhos = [float(r) for r in rhos]
    if any(not np.isfinite(r) or r < 0 for r in rhos):
        raise ValueError(f"rhos: expected finite numbers >= 0, got {rhos}")
    params = list(params)
    results = []
    with restored(params) as origin:
        loss, start = gradient(loss_fn, params)
        if norm(start) == 0.0:
            start = random_normal(params, generator(seed))
        for rho in rhos:
            ascent: list[float] = []
            direction = start
            for step in range(steps if rho > 0 else 0):
                set_offset(params, origin, scaled(direction, rho / norm(direction)))
                if step == steps - 1:
                    ascent.append(loss_value(loss_fn) - loss)
                    break
                value, direction = gradient(loss_fn, params)
                ascent.append(value - loss)
                if norm(direction) == 0.0:  # a stationary point on the sphere: nowhere to go
                    break
            sharpness = max([0.0, *ascent])
            results.append({
                "rho": rho, "sharpness": sharpness, "loss": loss,
                "perturbed_loss": loss + sharpness,
                "sam_sharpness": ascent[0] if ascent else 0.0, "ascent": ascent,
            })
    return results


def top_hessian_eigenvalue(
    loss_fn: LossFn,
    params: Sequence[Tensor],
    iters: int = DEFAULT_ITERS,
    tol: float = DEFAULT_TOL,
    seed: int = 0,
) -> dict:
    """The largest eigenvalue of the Hessian of L at w, by power iteration on H v.

    The estimate at each iteration is the Rayleigh quotient v^T H v of the unit iterate; it has
    converged when it changes by less than tol relative to itself. Power iteration finds the
    eigenvalue of largest magnitude; if that is negative, the largest one is found by a second
    power iteration on H - lambda I (whose dominant eigenvalue is lambda_max - lambda).

    Returns:
        eigenvalue (lambda_max), iterations (Hessian-vector products used), converged (bool),
        dominant (the largest-magnitude eigenvalue), history (Rayleigh quotients per iteration),
        vector (the unit vector u whose Rayleigh quotient u^T H u is `eigenvalue`: a list of
        tensors, not JSON; hessian_trace can deflate with it).
    """
    if iters < 1:
        raise ValueError(f"iters: expected an int >= 1, got {iters!r}")
    if not tol > 0:
        raise ValueError(f"tol: expected a number > 0, got {tol!r}")
    params = list(params)
    gen = generator(seed)
    with restored(params):  # nothing moves; the guard keeps the contract obvious
        dominant, used, converged, history, vector = _power_iteration(
            loss_fn, params, random_normal(params, gen), 0.0, iters, tol)
        eigenvalue = dominant
        if dominant < 0:
            shifted, more, converged, more_history, vector = _power_iteration(
                loss_fn, params, random_normal(params, gen), dominant, iters, tol)
            eigenvalue = shifted + dominant
            used += more
            history += [h + dominant for h in more_history]
    return {"eigenvalue": eigenvalue, "iterations": used, "converged": converged,
            "dominant": dominant, "history": history, "vector": vector}


def _power_iteration(
    loss_fn: LossFn, params: list[Tensor], v: Vector, shift: float, iters: int, tol: float
) -> tuple[float, int, bool, list[float], Vector]:
    """Power iteration on H - shift I from v.

    Returns (estimate, iterations, converged, history, u): estimate is exactly the Rayleigh
    quotient u^T (H - shift I) u of the unit vector u returned.
    """
    v = scaled(v, 1.0 / norm(v))
    history: list[float] = []
    for i in range(1, iters + 1):
        hv = hessian_vector_product(loss_fn, params, v)
        if shift:
            torch._foreach_add_(hv, v, alpha=-shift)
        estimate = dot(v, hv)
        history.append(estimate)
        size = norm(hv)
        if size == 0.0:  # v is in the null space: H - shift I is zero along it
            return estimate, i, True, history, v
        if i > 1 and abs(estimate - history[-2]) < tol * abs(estimate):
            return estimate, i, True, history, v
        if i < iters:
            v = scaled(hv, 1.0 / size)
    return history[-1], iters, False, history, v


def hessian_trace(
    loss_fn: LossFn,
    params: Sequence[Tensor],
    probes: int = DEFAULT_PROBES,
    seed: int = 0,
    deflate: tuple[Vector, float] | None = None,
) -> dict:
    """tr(H) by Hutchinson's estimator: the mean of v^T H v over Rademacher probes v.

    For Rademacher probes the variance of one sample is 2 sum_{i != j} H_ij^2: a diagonal
    Hessian gives the exact trace, but one dominated by a top eigenpair (lambda, u), as trained
    networks' are, gives a standard deviation near sqrt(2) lambda per probe. `deflate` = (u,
    u^T H u) for a unit vector u (top_hessian_eigenvalue's `vector` and `eigenvalue`) removes
    that part exactly: tr(H) = u^T H u + tr(P H P) with P = I - u u^T, and the second term is
    estimated from the probes P v (unbiased for any unit u; the rank-1 deflation of Meyer,
    Musco, Musco, Woodruff, "Hutch++: Optimal Stochastic Trace Estimation", SOSA 2021).

    Returns:
        trace (the estimate), stderr (sample std of the probes / sqrt(probes); None for one
        probe), probes, deflated (bool), samples (each probe's v^T H v, or (Pv)^T H (Pv)).
    """
    if probes < 1:
        raise ValueError(f"probes: expected an int >= 1, got {probes!r}")
    params = list(params)
    gen = generator(seed)
    probe_vectors = []
    for _ in range(probes):
        v = random_rademacher(params, gen)
        if deflate is not None:
            u = deflate[0]
            torch._foreach_add_(v, u, alpha=-dot(u, v))  # v <- P v
        probe_vectors.append(v)
    with restored(params):  # one pass over the data for all probes (hessian_vector_products)
        products = hessian_vector_products(loss_fn, params, probe_vectors)
    samples = [dot(v, hv) for v, hv in zip(probe_vectors, products)]
    values = np.asarray(samples, dtype=np.float64)
    stderr = float(values.std(ddof=1) / np.sqrt(probes)) if probes > 1 else None
    base = float(deflate[1]) if deflate is not None else 0.0
    return {"trace": base + float(values.mean()), "stderr": stderr, "probes": probes,
            "deflated": deflate is not None, "samples": samples}


# ------------------------------------------------------------------------------ reports
def measure(
    loss_fn: LossFn,
    params: Sequence[Tensor],
    *,
    rhos: Sequence[float] = DEFAULT_RHOS,
    steps: int = DEFAULT_STEPS,
    iters: int = DEFAULT_ITERS,
    tol: float = DEFAULT_TOL,
    probes: int = DEFAULT_PROBES,
    seed: int = 0,
    landscape: bool = True,
    alphas_1d: Sequence[float] = DEFAULT_ALPHAS_1D,
    alphas_2d: Sequence[float] = DEFAULT_ALPHAS_2D,
    out_dir: str | Path | None = None,
    title: str = "",
) -> dict:
    """Every measurement of this module on one loss, as a JSON-ready dict.

    A part is skipped (its key None, or [] for rho_sharpness) when its count is 0: rhos=(),
    iters=0, probes=0, landscape=False. The trace is deflated by the top eigenvector when both
    are measured (see hessian_trace).

    Keys: loss, rho_sharpness (list, see rho_sharpness), top_eigenvalue, trace, landscape
    (None, or the 1-D and 2-D grids, plus file paths when `out_dir` is given: landscape_1d.csv,
    landscape_1d.png, landscape_2d.csv, landscape_2d.png), seconds (wall time per part), settings.
    """
    params = list(params)
    seconds = {}
    started = time.perf_counter()
    sharpness = rho_sharpness(loss_fn, params, rhos, steps, seed) if len(rhos) else []
    seconds["rho_sharpness"] = time.perf_counter() - started
    started = time.perf_counter()
    eigen = top_hessian_eigenvalue(loss_fn, params, iters, tol, seed) if iters else None
    seconds["top_eigenvalue"] = time.perf_counter() - started
    started = time.perf_counter()
    trace = None
    if probes:
        deflate = (eigen.pop("vector"), eigen["eigenvalue"]) if eigen else None
        trace = hessian_trace(loss_fn, params, probes, seed, deflate)
    elif eigen:
        eigen.pop("vector")
    seconds["trace"] = time.perf_counter() - started
    surfaces = None
    if landscape:
        started = time.perf_counter()
        surfaces = {"one_dim": "zero", "1d": loss_landscape_1d(loss_fn, params, alphas_1d,
                                                               seed=seed),
                    "2d": loss_landscape_2d(loss_fn, params, alphas_2d, seed=seed)}
        if out_dir is not None:
            out_dir = Path(out_dir)
            out_dir.mkdir(parents=True, exist_ok=True)
            files = {name: str(out_dir / name) for name in (
                "landscape_1d.csv", "landscape_1d.png", "landscape_2d.csv", "landscape_2d.png")}
            write_landscape_1d(surfaces["1d"], out_dir / "landscape_1d.csv",
                               out_dir / "landscape_1d.png", title)
            write_landscape_2d(surfaces["2d"], out_dir / "landscape_2d.csv",
                               out_dir / "landscape_2d.png", title)
            surfaces["files"] = files
        seconds["landscape"] = time.perf_counter() - started
    seconds["total"] = sum(seconds.values())
    return {
        "loss": sharpness[0]["loss"] if sharpness else loss_value(loss_fn),
        "parameters": int(sum(p.numel() for p in params)),
        "rho_sharpness": sharpness,
        "top_eigenvalue": eigen,
        "trace": trace,
        "landscape": surfaces,
        "seconds": seconds,
        "settings": {"rhos": [float(r) for r in rhos], "steps": steps, "iters": iters,
                     "tol": tol, "probes": probes, "seed": seed},
    }


def measure_checkpoint(
    checkpoint_path: str | Path,
    data: str | None = None,
    split: str = "train",
    rhos: Sequence[float] = DEFAULT_RHOS,
    seed: int = 0,
    landscape: bool = True,
    out_dir: str | Path | None = None,
    *,
    steps: int = DEFAULT_STEPS,
    iters: int = DEFAULT_ITERS,
    tol: float = DEFAULT_TOL,
    probes: int = DEFAULT_PROBES,
    points_1d: int = len(DEFAULT_ALPHAS_1D),
    points_2d: int = len(DEFAULT_ALPHAS_2D),
    batch_size: int = 512,
    smiles_column: str | None = None,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    workers: int | None = None,
) -> dict:
    """Flatness of one checkpoint on its training loss over a split (see `measure`).

    Args:
        checkpoint_path: a best.pt / last.pt written by molsam train.
        data: None measures on the run's saved split (splits.json next to the checkpoint or one
            folder up; `split` train, val, test or all); a CSV path or dataset name measures on
            every valid molecule of it (split must then be "all" or "train", read as all).
        out_dir: where the landscape CSV/PNG files go (none written when None).
        points_1d, points_2d: landscape grid: points_1d alphas, points_2d x points_2d (alpha,
            beta), evenly spaced over [-1, 1] (the paper's range for filter-normalized
            directions). Each point is one forward pass over the data.
        batch_size: molecules per loss term (memory vs speed; the value does not change the loss
            beyond float rounding).
        threads: torch intra-op threads on the CPU for this call (restored afterwards); None
            keeps the process's setting. molsam's default elsewhere is 1 (molsam.devices).
    Returns:
        measure()'s dict plus checkpoint, data, split, n (molecules), task.
    Raises:
        CheckpointError, InputError, ConfigError: one-line messages naming the file at fault.
    """
    objective = checkpoint_objective(checkpoint_path, data, split, batch_size=batch_size,
                                     smiles_column=smiles_column, device=device, workers=workers)
    path = objective.path
    alphas_1d, alphas_2d = _grid(points_1d), _grid(points_2d)
    with cpu_threads(objective.device, threads) if threads else nullcontext():
        result = measure(
            objective.loss_fn, objective.params, rhos=rhos, steps=steps, iters=iters, tol=tol,
            probes=probes, seed=seed, landscape=landscape, out_dir=out_dir,
            title=f"{path.parent.name}/{path.name}", alphas_1d=alphas_1d, alphas_2d=alphas_2d)
    return {"checkpoint": str(path), "data": objective.source_name, "split": objective.split,
            "n": objective.n, "task": objective.task, **result}


@dataclass
class CheckpointObjective:
    """A checkpoint's training loss over a set of molecules, ready for the measurements.

    loss_fn: molsam.analysis.objective.dataset_loss of `model` (eval mode); params: its
    trainable parameters; n: molecules; split: the part of the saved split (or "all").
    """

    path: Path
    model: torch.nn.Module
    loss_fn: LossFn
    params: list[Tensor]
    device: torch.device
    task: str
    split: str
    n: int
    source_name: str


def checkpoint_objective(
    checkpoint_path: str | Path,
    data: str | None = None,
    split: str = "train",
    *,
    batch_size: int = 512,
    smiles_column: str | None = None,
    device: str | torch.device = "cpu",
    workers: int | None = None,
) -> CheckpointObjective:
    """Load a checkpoint and the molecules it is measured on (see measure_checkpoint): the loss
    is masked_loss on its task, regression targets standardized with its own scaler."""
    from molsam.evaluate import labeled_molecules
    from molsam.predict import load_ensemble

    ensemble = load_ensemble([checkpoint_path], device)
    labeled = labeled_molecules(
        ensemble, data, split=(None if data is not None and split == "train" else split),
        default_split="train", smiles_column=smiles_column, workers=workers)
    targets = labeled.labels.astype(np.float64)
    scaler = ensemble.scalers[0]
    if ensemble.task == "regression" and scaler is not None:  # the scale the model trained on
        targets = (targets - np.asarray(scaler["mean"])) / np.asarray(scaler["std"])
    model = ensemble.models[0]
    source = labeled.store.batch_source(ensemble.device)
    loss_fn = dataset_loss(model, source, labeled.indices, targets, ensemble.task, batch_size,
                           num_classes=ensemble.num_classes)
    return CheckpointObjective(
        path=ensemble.paths[0], model=model, loss_fn=loss_fn, params=trainable(model),
        device=ensemble.device, task=ensemble.task, split=labeled.split,
        n=int(len(labeled.indices)), source_name=labeled.source_name)


def _grid(points: int) -> tuple[float, ...]:
    if points < 2:
        raise ValueError(f"landscape points: expected an int >= 2, got {points!r}")
    return tuple(np.linspace(-1.0, 1.0, points).round(6).tolist())


def measure_run(
    path: str | Path,
    data: str | None = None,
    split: str = "train",
    rhos: Sequence[float] = DEFAULT_RHOS,
    seed: int = 0,
    landscape: bool = True,
    out_dir: str | Path | None = None,
    **options,
) -> dict:
    """measure_checkpoint for every replicate of a run directory (seed_*/best.pt, by seed) or
    for one checkpoint file; `options` as measure_checkpoint's keyword-only arguments.

    Landscape files go to out_dir/<replicate folder, e.g. seed_0>/.
    Returns {"replicates": [measure_checkpoint results], "summary": {quantity: {mean, std, n}}}
    with quantities loss, sharpness@<rho>, eigenvalue, trace, seconds (std over replicates,
    ddof=0, as run summaries use).
    """
    from molsam.predict import resolve_model_paths

    replicates = []
    for file in resolve_model_paths([path]):
        folder = None
        if out_dir is not None:
            name = file.parent.name if file.parent.name.startswith("seed_") else file.stem
            folder = Path(out_dir) / name
        replicates.append(measure_checkpoint(file, data, split, rhos, seed, landscape, folder,
                                             **options))
    return {"replicates": replicates, "summary": summarize(replicates)}


def summarize(replicates: Sequence[dict]) -> dict:
    """Mean, std (ddof=0) and count over replicates of each headline number."""
    from molsam.train.metrics import mean_std

    columns: dict[str, list] = {"loss": [r["loss"] for r in replicates]}
    for i, rho in enumerate(replicates[0]["settings"]["rhos"] if replicates else []):
        columns[f"sharpness@{rho:g}"] = [r["rho_sharpness"][i]["sharpness"] for r in replicates]
    columns["eigenvalue"] = [(r["top_eigenvalue"] or {}).get("eigenvalue") for r in replicates]
    columns["trace"] = [(r["trace"] or {}).get("trace") for r in replicates]
    columns["seconds"] = [r["seconds"]["total"] for r in replicates]
    summary = {}
    for key, values in columns.items():
        mean, std, n = mean_std(values)
        summary[key] = {"mean": mean, "std": std, "n": n}
    return summary
