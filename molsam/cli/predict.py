"""`molsam predict`: checkpoint(s) or run directory + CSV/SD/SMILES file -> CSV of predictions, row for row."""

from __future__ import annotations

from pathlib import Path

import typer

from molsam.errors import MolsamError


def predict(
    models: list[Path] = typer.Argument(
        ..., metavar="MODEL...",
        help="Checkpoint(s) (.pt) or a run directory (every seed_*/best.pt).",
    ),
    input_path: Path = typer.Argument(..., metavar="INPUT", help="CSV/TSV, SD (.sdf) or SMILES (.smi) file (.gz too) to predict."),
    out: str = typer.Option("-", "--out", "-o", help="Output CSV; '-' writes to stdout."),
    smiles_col: str = typer.Option(
        None, "--smiles-col", help="SMILES column (default: the training recipe's, else smiles)."
    ),
    batch_size: int = typer.Option(
        None, "--batch-size", min=1, help="Molecules per forward pass (default: 256 CPU, 1024 GPU)."
    ),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    workers: int = typer.Option(
        None, "--workers", "-j", min=1, help="Featurization processes (default: all cores)."
    ),
) -> None:
    """Predict every row of INPUT; invalid SMILES get empty predictions and a molsam_error."""
    from molsam.cli.main import fail
    from molsam.predict import load_ensemble, predict_csv

    try:
        ensemble = load_ensemble(models, device)
        summary = predict_csv(
            ensemble, input_path, None if out == "-" else out, smiles_column=smiles_col,
            batch_size=batch_size, workers=workers,
        )
    except KeyboardInterrupt:
        # The output is renamed into place only when complete (molsam.predict.atomic_output).
        typer.echo(f"interrupted: {'no output written' if out != '-' else 'output incomplete'}",
                   err=True)
        raise typer.Exit(code=130) from None
    except MolsamError as error:
        raise fail(error) from None
    members = f"{len(ensemble)} models" if len(ensemble) > 1 else "1 model"
    typer.echo(
        f"{summary.rows} rows, {summary.valid} valid, {summary.invalid} invalid; "
        f"{summary.seconds:.1f} s, {summary.per_second:.0f} molecules/s "
        f"({members}, {ensemble.device.type}){'' if out == '-' else f'; wrote {out}'}",
        err=True,
    )


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)
