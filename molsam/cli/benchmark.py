"""`molsam benchmark SUITE.yaml [--out DIR] [--report-only]`: a datasets x optimizers x seeds
grid, resumable, written up as results.csv, results.md and results.png."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from molsam.errors import InputError, MolsamError

log = logging.getLogger("molsam")


def benchmark(
    suite: Path = typer.Argument(..., help="Suite YAML (datasets, optimizers, seeds, set)."),
    out: Path = typer.Option(None, "--out", "-o", help="Benchmark folder [default: runs/NAME]."),
    report_only: bool = typer.Option(
        False, "--report-only", help="Train nothing: write the tables from the finished cells."
    ),
    jobs: int = typer.Option(
        1, "--jobs", "-j", min=1,
        help="Cells trained at once, one process each (each uses train.threads torch threads).",
    ),
) -> None:
    """Train every unfinished cell of the grid (rerun to resume), then write the results table
    (CSV and Markdown) and a plot of test metric against training time."""
    from molsam.benchmark import load_suite, run_benchmark, write_results
    from molsam.cli.main import fail

    out = out or Path("runs") / suite.stem
    try:
        loaded = load_suite(suite)
        if report_only:
            if not (out / "cells").is_dir():
                raise InputError(f"--out {out}: holds no benchmark cells to report "
                                 f"(run `molsam benchmark {suite} --out {out}` first)")
            results = write_results(loaded, out)
        else:
            results = run_benchmark(loaded, out, jobs=jobs, on_cell=_report_cell,
                                    on_progress=_report_epoch)
    except KeyboardInterrupt:
        typer.echo(f"interrupted: finished cells are kept; rerun `molsam benchmark {suite} "
                   f"--out {out}` to continue", err=True)
        raise typer.Exit(code=130) from None
    except MolsamError as error:
        raise fail(error) from None
    typer.echo((out / "results.md").read_text())
    if results["missing"]:
        typer.echo(f"{len(results['missing'])} cell(s) not run yet", err=True)
    typer.echo(f"results: {out}/results.csv, results.md, results.png", err=True)


def _report_cell(info: dict) -> None:
    cell = info["cell"]
    name = f"[{info['index'] + 1}/{info['total']}] {cell.dataset} {cell.optimizer} seed {cell.seed}"
    if info["status"] == "done":
        log.info(f"{name}: finished earlier, kept")
    elif info["status"] in ("start", "resume"):
        log.info(f"{name}: {'resuming' if info['status'] == 'resume' else 'training'} "
                 f"in {info['run_dir']}")
    else:
        summary = info["summary"]
        metric = summary["metric"]
        test = summary["test"].get("mean", {}).get(metric) or {}
        score = "-" if test.get("mean") is None else f"{test['mean']:.4f}"
        log.info(f"{name}: test {metric} {score}, {summary['graphs_per_s']['mean']:.1f} graphs/s, "
                 f"{info['wall_seconds']:.0f} s")


def _report_epoch(info: dict) -> None:
    if info.get("done_epoch"):
        val = "-" if info["val"] is None else f"{info['val']:.4f}"
        log.info(f"  epoch {info['epoch'] + 1}/{info['epochs']}: loss {info['loss']:.4f} "
                 f"val {info['metric']} {val} {info['graphs_per_s']:.0f} graphs/s")


def register(app: typer.Typer) -> None:
    app.command("benchmark")(benchmark)
