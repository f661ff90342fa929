"""`molsam evaluate`: score checkpoint(s) or a run's replicates on a saved split or a file."""

from __future__ import annotations

from pathlib import Path

import typer

from molsam.cli.predict import DECIMAL_HELP, DELIMITER_HELP, SHEET_HELP
from molsam.errors import MolsamError
from molsam.outputs import output_file, writes_to

#: Per-task rows beyond this go to the JSON only (tox21 has 12, sider 27, toxcast 617).
MAX_TASK_ROWS = 30


def evaluate(
    models: list[Path] = typer.Argument(
        ..., metavar="MODEL...", help="Checkpoint(s) (.pt) or a run directory (all replicates)."
    ),
    data: str = typer.Option(
        None, "--data", help="Data file (CSV/SD/SMILES/Excel/Parquet) or dataset name to score (default: the run's saved split)."
    ),
    split: str = typer.Option(
        None, "--split", help="test | val | train | all, of the run's saved split (default: test)."
    ),
    out: Path = typer.Option(None, "--out", "-o", help="Write all metrics as JSON here."),
    smiles_col: str = typer.Option(None, "--smiles-col", help="SMILES column of --data."),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Molecules per pass."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    workers: int = typer.Option(None, "--workers", "-j", min=1, help="Featurization processes."),
    delimiter: str = typer.Option(None, "--delimiter", help=DELIMITER_HELP),
    decimal: str = typer.Option(None, "--decimal", help=DECIMAL_HELP),
    sheet: str = typer.Option(None, "--sheet", help=SHEET_HELP),
) -> None:
    """Metrics per task and averaged over tasks, for each checkpoint and their ensemble."""
    from rich.console import Console

    from molsam.cli.main import fail
    from molsam.data.read_options import ReadOptions
    from molsam.errors import ConfigError
    from molsam.evaluate import evaluate as run_evaluation

    reading = None
    try:
        read = ReadOptions.from_options(delimiter, decimal, sheet)
        if data is None and read != ReadOptions():
            raise ConfigError("--delimiter, --decimal and --sheet read --data (a run's saved "
                              "split is read as its recipe says)")
        if out is not None:
            output_file(out, "--out")  # before scoring, not after
        if data is not None:
            reading = _reading_line(data, read)
        result = run_evaluation(
            models, data, split=split, smiles_column=smiles_col, device=device,
            batch_size=batch_size, workers=workers, read=read,
        )
        if out is not None:
            with writes_to(out, "--out"):
                result.write_json(out)
    except MolsamError as error:
        raise fail(error) from None
    console = Console()
    if reading:
        console.print(reading, highlight=False, markup=False)
    console.print(f"[bold]{result.data}[/]: {result.n} molecules, {len(result.target_names)} "
                  f"{result.task} task(s)")
    console.print(_summary_table(result))
    if len(result.target_names) > 1:
        console.print(_task_table(result))
    skipped = {k: v for k, v in result.final["skipped"].items() if v}
    if skipped:
        console.print("skipped (single class or no labels): " + ", ".join(
            f"{name} {count} task(s)" for name, count in skipped.items()))
    if out is not None:
        console.print(f"wrote {out}")


def _reading_line(data: str, read) -> str:
    """How --data is read (`read eu.csv as ';'-separated with decimal commas`)."""
    from molsam.data.formats import describe_source
    from molsam.data.pipeline import DataSpec

    return describe_source(DataSpec(data, read=read).resolve()[0], read)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _summary_table(result) -> Table:
    from rich.table import Table

    from molsam.train.metrics import metric_names

    names = metric_names(result.task)
    table = Table(title="mean over tasks" if len(result.target_names) > 1 else None)
    table.add_column("model")
    for name in names:
        table.add_column(name, justify="right")
    for path, scores in result.members:
        table.add_row(str(path), *(_cell(scores["mean"][n]) for n in names))
    if result.ensemble is not None:
        table.add_row(f"[bold]ensemble of {len(result.members)}[/]",
                      *(_cell(result.ensemble["mean"][n]) for n in names))
    return table


def _task_table(result) -> Table:
    from rich.table import Table

    from molsam.train.metrics import metric_names

    names = metric_names(result.task)
    label = "ensemble" if result.ensemble is not None else "model"
    table = Table(title=f"per task ({label})")
    table.add_column("task")
    for name in names:
        table.add_column(name, justify="right")
    tasks = list(result.final["tasks"].items())
    for task, scores in tasks[:MAX_TASK_ROWS]:
        table.add_row(task, *(_cell(scores[n]) for n in names))
    if len(tasks) > MAX_TASK_ROWS:
        table.add_row(f"+{len(tasks) - MAX_TASK_ROWS} tasks (see --out JSON)")
    return table


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
