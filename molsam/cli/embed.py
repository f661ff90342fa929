"""`molsam embed`: a checkpoint or run directory + any file predict reads -> the molecular
representation the model's head reads, row for row (.npy, .csv, .tsv or .parquet)."""

from __future__ import annotations

from pathlib import Path

import typer

from molsam.errors import MolsamError


def embed(
    model: Path = typer.Argument(
        ..., metavar="RUN",
        help="Checkpoint (.pt) or run directory (its first replicate's best.pt).",
    ),
    input_path: Path = typer.Argument(
        ..., metavar="INPUT",
        help="CSV/TSV, SD or SMILES file (.gz too), Excel workbook or Parquet file.",
    ),
    out: Path = typer.Option(
        ..., "--out", "-o",
        help=".npy: float32 [rows, D], NaN rows for invalid SMILES, listed in NAME.errors.csv; "
        ".csv/.tsv/.parquet: input columns + emb_0..emb_{D-1} + molsam_error.",
    ),
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
    delimiter: str = typer.Option(None, "--delimiter", help="CSV delimiter [default: detected]."),
    decimal: str = typer.Option(None, "--decimal", help="Decimal mark [default: detected]."),
    sheet: str = typer.Option(None, "--sheet", help="Excel worksheet [default: the first]."),
) -> None:
    """Write every row's pooled molecular representation (the vector the prediction head
    reads: GPS readout, CoMPT pooling, plus scaled molecule features); invalid SMILES are
    flagged as in predict."""
    from molsam.cli.main import fail
    from molsam.data.read_options import ReadOptions
    from molsam.embed import embed_file

    try:
        read = ReadOptions.from_options(delimiter, decimal, sheet)
        summary = embed_file(
            model, input_path, out, smiles_column=smiles_col, device=device,
            batch_size=batch_size, workers=workers, read=read,
            on_note=lambda note: typer.echo(note, err=True),
        )
    except KeyboardInterrupt:
        typer.echo("interrupted: no output written", err=True)
        raise typer.Exit(code=130) from None
    except MolsamError as error:
        raise fail(error) from None
    typer.echo(summary.read, err=True)
    typer.echo(
        f"{summary.rows} rows, {summary.valid} valid, {summary.invalid} invalid; "
        f"{summary.width} numbers a molecule; {summary.seconds:.1f} s; wrote "
        f"{', '.join(summary.files)}", err=True,
    )


def register(app: typer.Typer) -> None:
    app.command("embed")(embed)
