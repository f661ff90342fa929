"""`molsam calibrate`: refit a run's (or checkpoints') calibration on labelled molecules and
store it in the checkpoints."""

from __future__ import annotations

from pathlib import Path

import typer

from molsam.cli.predict import DECIMAL_HELP, DELIMITER_HELP, SHEET_HELP
from molsam.errors import MolsamError


def calibrate(
    models: list[Path] = typer.Argument(
        ..., metavar="RUN|MODEL...",
        help="A run directory (every seed_*/best.pt) or checkpoint(s) (.pt)."),
    data: str = typer.Option(
        None, "--data",
        help="Labelled data file (CSV/SD/SMILES/Excel/Parquet) or dataset name to fit on, every "
             "valid molecule (default: the run's saved split)."),
    split: str = typer.Option(
        None, "--split", help="val | test | train | all, of the run's saved split (default: val)."),
    alpha: float = typer.Option(
        0.1, "--alpha", help="Miscoverage of the regression intervals (0.1: 90% intervals)."),
    target: list[str] = typer.Option(
        None, "--target", metavar="MODEL_TASK=COLUMN",
        help="Labels of the model's task MODEL_TASK are in the --data column COLUMN (repeatable)."),
    smiles_col: str = typer.Option(None, "--smiles-col", help="SMILES column of --data."),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Molecules per pass."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    workers: int = typer.Option(None, "--workers", "-j", min=1, help="Featurization processes."),
    delimiter: str = typer.Option(None, "--delimiter", help=DELIMITER_HELP),
    decimal: str = typer.Option(None, "--decimal", help=DECIMAL_HELP),
    sheet: str = typer.Option(None, "--sheet", help=SHEET_HELP),
) -> None:
    """Fit temperature scaling and isotonic regression (classification), or z-scaling of sigma
    and split-conformal intervals (regression), on held-out labelled molecules, and rewrite the
    checkpoints with it (atomically). Several checkpoints also get their ensemble's."""
    from rich.console import Console

    from molsam.calibrate import calibrate as run_calibration
    from molsam.cli.evaluate import parse_targets
    from molsam.cli.main import fail
    from molsam.data.read_options import ReadOptions
    from molsam.errors import ConfigError

    console = Console()
    try:
        read = ReadOptions.from_options(delimiter, decimal, sheet)
        if data is None and read != ReadOptions():
            raise ConfigError("--delimiter, --decimal and --sheet read --data (a run's saved "
                              "split is read as its recipe says)")
        result = run_calibration(
            models, data, split=split, alpha=alpha, smiles_column=smiles_col, device=device,
            batch_size=batch_size, workers=workers, read=read, targets=parse_targets(target),
        )
    except MolsamError as error:
        raise fail(error) from None
    if result.split == "train":
        console.print("[yellow]warning:[/] calibrated on the training split: the models fitted "
                      "these molecules, so sigma and intervals will come out too small")
    console.print(f"[bold]{result.data}[/]: {result.n} molecules")
    for line in result.lines():
        console.print(line, highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate)
