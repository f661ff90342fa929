"""`molsam report`: one self-contained HTML page about a trained run directory."""

from __future__ import annotations

from pathlib import Path

import typer

from molsam.errors import MolsamError


def report(
    run: Path = typer.Argument(..., metavar="RUN", help="Run directory (molsam train --out)."),
    out: Path = typer.Option(
        None, "--out", "-o", help="HTML file to write [default: RUN/report.html]."
    ),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    workers: int = typer.Option(
        None, "--workers", "-j", min=1, help="Featurization processes (default: all cores)."
    ),
) -> None:
    """Recipe, data and split statistics, learning curves, test metrics over seeds, parity
    plot or ROC curve, calibration plots and the worst-predicted test molecules, in one HTML
    file with every figure inline (opens offline)."""
    from molsam.cli.main import fail
    from molsam.report import write_report

    try:
        path = write_report(run, out or run / "report.html", device=device, workers=workers)
    except KeyboardInterrupt:
        typer.echo("interrupted: no report written", err=True)
        raise typer.Exit(code=130) from None
    except MolsamError as error:
        raise fail(error) from None
    typer.echo(f"wrote {path}", err=True)


def register(app: typer.Typer) -> None:
    app.command("report")(report)
