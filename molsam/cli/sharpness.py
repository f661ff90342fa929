"""`molsam sharpness`: flatness of a checkpoint or of every replicate of a run (JSON + table)."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from molsam.errors import ConfigError, MolsamError
from molsam.outputs import output_file, writes_to


def parse_rhos(values: list[str]) -> list[float]:
    """--rho values, each one number or a comma-separated list: ["0.01,0.05", "0.1"]."""
    rhos = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            try:
                rho = float(item)
            except ValueError:
                raise ConfigError(f"--rho: {item!r} is not a number") from None
            if not math.isfinite(rho) or rho < 0:
                raise ConfigError(f"--rho: {item} is not a finite number >= 0")
            rhos.append(rho)
    return rhos


def default_out(model: Path) -> Path:
    """RUN_DIR/sharpness.json for a run, or sharpness-<name>.json beside a checkpoint file."""
    return model / "sharpness.json" if model.is_dir() else model.with_name(
        f"sharpness-{model.stem}.json")


def sharpness(
    model: Path = typer.Argument(
        ..., metavar="RUN_DIR|CHECKPOINT",
        help="A run directory (every seed_*/best.pt) or one checkpoint (.pt)."),
    data: str = typer.Option(
        None, "--data", help="CSV path or dataset name to measure on (default: the run's split)."),
    split: str = typer.Option(
        "train", "--split", help="train | val | test | all, of the run's saved split."),
    out: Path = typer.Option(
        None, "--out", "-o",
        help="JSON file (default: RUN_DIR/sharpness.json, or sharpness-NAME.json beside a "
             "checkpoint); landscapes go to a folder of the same name without .json."),
    rho: list[str] = typer.Option(
        ["0.005,0.01,0.05"], "--rho", help="Radii for rho-sharpness: a comma list, repeatable."),
    steps: int = typer.Option(3, "--steps", min=1, help="Ascent steps per rho (1 = SAM's step)."),
    iters: int = typer.Option(
        20, "--iters", min=0, help="Power iterations at most for the top eigenvalue (0: skip)."),
    tol: float = typer.Option(1e-3, "--tol", help="Relative change that stops them."),
    probes: int = typer.Option(4, "--probes", min=0, help="Hutchinson probes (0: skip trace)."),
    landscape: bool = typer.Option(
        False, "--landscape/--no-landscape",
        help="1-D and 2-D loss landscapes as CSV + PNG (one forward pass per grid point)."),
    points: int = typer.Option(21, "--points", min=2, help="Landscape 1-D grid points."),
    grid: int = typer.Option(9, "--grid", min=2, help="Landscape 2-D grid: GRID x GRID points."),
    seed: int = typer.Option(0, "--seed", help="Seed of start vectors, probes and directions."),
    batch_size: int = typer.Option(512, "--batch-size", min=1, help="Molecules per pass."),
    smiles_col: str = typer.Option(None, "--smiles-col", help="SMILES column of --data."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    threads: int = typer.Option(
        None, "--threads", min=1, help="CPU threads for the measurements (default: 1)."),
    workers: int = typer.Option(None, "--workers", "-j", min=1, help="Featurization processes."),
) -> None:
    """rho-sharpness, top Hessian eigenvalue and trace of the training loss (dropout off,
    seeded), and optional loss landscapes, per replicate."""
    from rich.console import Console

    from molsam.analysis.sharpness import measure_run
    from molsam.cli.main import fail
    from molsam.devices import DEFAULT_CPU_THREADS
    from molsam.jsonio import write_json_atomic

    console = Console()
    try:
        rhos = parse_rhos(rho)
        if not tol > 0:
            raise ConfigError(f"--tol: {tol} is not a number > 0")
        if out is not None:
            output_file(out, "--out")  # before measuring, not after
        out = out or default_out(model)
        with console.status(f"measuring {model} ..."):
            result = measure_run(
                model, data, split, rhos, seed, landscape, out.with_suffix(""), steps=steps,
                iters=iters, tol=tol, probes=probes, points_1d=points, points_2d=grid,
                batch_size=batch_size, smiles_column=smiles_col, device=device,
                threads=threads or DEFAULT_CPU_THREADS, workers=workers)
        with writes_to(out, "--out"):
            write_json_atomic(out, result)
    except MolsamError as error:
        raise fail(error) from None
    first = result["replicates"][0]
    console.print(f"[bold]{first['data']}[/]: {first['n']} molecules, {first['task']} loss")
    console.print(_table(result, rhos))
    for replicate in result["replicates"]:
        if replicate["landscape"] and "files" in replicate["landscape"]:
            folder = Path(replicate["landscape"]["files"]["landscape_2d.png"]).parent.parent
            console.print(f"landscapes (CSV, PNG): {folder}/")
            break
    console.print(f"wrote {out}")


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _table(result: dict, rhos: list[float]):
    from rich.table import Table

    table = Table()
    table.add_column("checkpoint")
    table.add_column("loss", justify="right")
    for rho in rhos:
        table.add_column(f"S(rho={rho:g})", justify="right")
    table.add_column("lambda_max (iters)", justify="right")
    table.add_column("trace +- se", justify="right")
    table.add_column("s", justify="right")
    for r in result["replicates"]:
        eigen, trace = r["top_eigenvalue"], r["trace"]
        eigen_cell = "-" if eigen is None else (
            f"{eigen['eigenvalue']:.4g} ({eigen['iterations']}"
            f"{'' if eigen['converged'] else ', not converged'})")
        trace_cell = "-" if trace is None else (
            f"{trace['trace']:.4g} +- {_number(trace['stderr'], 2)}")
        path = Path(r["checkpoint"])
        table.add_row(f"{path.parent.name}/{path.name}", _number(r["loss"]),
                      *(_number(s["sharpness"]) for s in r["rho_sharpness"]),
                      eigen_cell, trace_cell, f"{r['seconds']['total']:.1f}")
    if len(result["replicates"]) > 1:
        summary = result["summary"]

        def cell(key: str) -> str:
            s = summary.get(key) or {}
            if s.get("mean") is None:
                return "-"
            return f"{s['mean']:.4g} +- {s['std']:.2g}"

        table.add_row("[bold]mean +- std[/]", cell("loss"),
                      *(cell(f"sharpness@{rho:g}") for rho in rhos), cell("eigenvalue"),
                      cell("trace"), cell("seconds"))
    return table


def register(app: typer.Typer) -> None:
    app.command("sharpness")(sharpness)
