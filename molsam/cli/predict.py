"""`molsam predict`: checkpoint(s) or run directory + CSV/SD/SMILES/Excel/Parquet file -> CSV (or Parquet) of predictions, row for row."""

from __future__ import annotations

from pathlib import Path

import typer

from molsam.errors import MolsamError


ENGINES = ("local", "ray")
DELIMITER_HELP = "CSV delimiter: , ; | or tab [default: detected from the header and first rows]."
DECIMAL_HELP = "Decimal mark of labels: . or , [default: detected; a comma only with ; tab |]."
SHEET_HELP = "Excel worksheet to read [default: the first]."
UNCERTAINTY_HELP = (
    "Add uncertainty: ensemble (the members' spread) | dropout (MC dropout) | mve (the model's "
    "own sigma) | auto (what the checkpoints offer). Regression: <task>_std; classification: "
    "calibrated probabilities, <task>_entropy and, with several members or samples, "
    "<task>_disagreement.")


def predict(
    models: list[Path] = typer.Argument(
        ..., metavar="MODEL...",
        help="Checkpoint(s) (.pt) or a run directory (every seed_*/best.pt). With --engine ray: "
        "RUN INPUTS... (the first argument is the model, every other one an input file, folder "
        "or glob).",
    ),
    input_path: Path = typer.Argument(
        ..., metavar="INPUT",
        help="CSV/TSV, SD or SMILES file (.gz too), Excel workbook or Parquet file to predict.",
    ),
    out: str = typer.Option(
        "-", "--out", "-o",
        help="Output CSV (.tsv: TSV, .parquet: Parquet keeping a Parquet input's column types); "
        "'-' writes CSV to stdout. With --engine ray: a folder, one file per input.",
    ),
    smiles_col: str = typer.Option(
        None, "--smiles-col", help="SMILES column (default: the training recipe's, else smiles)."
    ),
    batch_size: int = typer.Option(
        None, "--batch-size", min=1, help="Molecules per forward pass (default: 256 CPU, 1024 GPU)."
    ),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    workers: int = typer.Option(
        None, "--workers", "-j", min=1,
        help="Featurization processes (default: all cores); with --engine ray, scoring actors "
        "(default: one per GPU of the cluster, else one per CPU).",
    ),
    engine: str = typer.Option(
        "local", "--engine", help="local (this machine) | ray (Ray Data; pip install molsam[ray])."
    ),
    address: str = typer.Option(
        None, "--address",
        help="With --engine ray: 'auto' (the cluster this machine is in), ray://HOST:PORT, or none "
        "for a local Ray started by the command.",
    ),
    delimiter: str = typer.Option(None, "--delimiter", help=DELIMITER_HELP),
    decimal: str = typer.Option(None, "--decimal", help=DECIMAL_HELP),
    sheet: str = typer.Option(None, "--sheet", help=SHEET_HELP),
    uncertainty: str = typer.Option(None, "--uncertainty", help=UNCERTAINTY_HELP),
    samples: int = typer.Option(
        None, "--samples", min=2, help="MC-dropout passes per model [default: 20]."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the MC-dropout masks."),
    no_calibration: bool = typer.Option(
        False, "--no-calibration",
        help="Leave the stored calibration out (raw probabilities and sigma).",
    ),
    interval: float = typer.Option(
        None, "--interval",
        help="Regression: <task>_lower, <task>_upper, split-conformal intervals of this "
        "coverage (e.g. 0.9) from the stored calibration.",
    ),
    no_domain: bool = typer.Option(
        False, "--no-domain",
        help="Leave out molsam_train_similarity (Tanimoto to the nearest training molecule) "
        "and molsam_train_neighbors (training molecules above 0.4).",
    ),
) -> None:
    """Predict every row of INPUT; invalid SMILES get empty predictions and a molsam_error."""
    from molsam.cli.main import fail
    from molsam.data.read_options import ReadOptions
    from molsam.errors import ConfigError
    from molsam.predict_uncertainty import PredictOptions

    options = PredictOptions(uncertainty=uncertainty, samples=samples, seed=seed,
                             calibration=not no_calibration, interval=interval,
                             domain=not no_domain)
    try:
        read = ReadOptions.from_options(delimiter, decimal, sheet)
        if engine not in ENGINES:
            raise ConfigError(f"--engine: {engine!r} is not one of {', '.join(ENGINES)}")
        if engine == "ray":
            _predict_ray([*models, input_path], out, smiles_col, batch_size, device, workers,
                         address, read, options)
            return
        if address:
            raise ConfigError("--address is for --engine ray")
        from molsam.predict import load_ensemble, predict_csv

        ensemble = load_ensemble(models, device)
        notes = ensemble.plan(options).notes  # options it cannot honour: refused here
        summary = predict_csv(
            ensemble, input_path, None if out == "-" else out, smiles_column=smiles_col,
            batch_size=batch_size, workers=workers, read=read, options=options,
        )
    except KeyboardInterrupt:
        # The output is renamed into place only when complete (molsam.predict.atomic_output).
        typer.echo(f"interrupted: {'no output written' if out != '-' else 'output incomplete'}",
                   err=True)
        raise typer.Exit(code=130) from None
    except MolsamError as error:
        raise fail(error) from None
    members = f"{len(ensemble)} models" if len(ensemble) > 1 else "1 model"
    for note in notes:  # after the run: an error stays the only line
        typer.echo(note, err=True)
    typer.echo(summary.read, err=True)
    typer.echo(
        f"{summary.rows} rows, {summary.valid} valid, {summary.invalid} invalid; "
        f"{summary.seconds:.1f} s, {summary.per_second:.0f} molecules/s "
        f"({members}, {ensemble.device.type}){'' if out == '-' else f'; wrote {out}'}",
        err=True,
    )


def _predict_ray(paths, out, smiles_col, batch_size, device, workers, address, read,
                 options=None) -> None:
    """RUN INPUTS... on Ray Data: one output file per input in the --out folder."""
    from molsam.errors import ConfigError
    from molsam.predict_ray import predict_files_ray

    if out == "-":
        raise ConfigError("--engine ray writes one file per input: give an --out folder")
    run, inputs = paths[0], paths[1:]
    summary = predict_files_ray(
        [run], inputs, out, address=address, smiles_column=smiles_col, batch_size=batch_size,
        actors=workers, device=device, read=read, options=options,
        on_note=lambda note: typer.echo(note, err=True),
    )
    typer.echo(
        f"{len(inputs)} input(s), {summary.rows} rows, {summary.valid} valid, "
        f"{summary.invalid} invalid; {summary.seconds:.1f} s, {summary.per_second:.0f} "
        f"molecules/s (ray); wrote {out}",
        err=True,
    )


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)
