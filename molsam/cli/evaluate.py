"""`molsam evaluate`: score checkpoint(s) or a run's replicates on a saved split or a file."""

from __future__ import annotations

import math
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
    target: list[str] = typer.Option(
        None, "--target", metavar="MODEL_TASK=COLUMN",
        help="Score the model's task MODEL_TASK against the --data column COLUMN (repeatable)."
    ),
) -> None:
    """Metrics per task and averaged over tasks, for each checkpoint and their ensemble, and
    how good their uncertainties are (calibration, intervals, error by training similarity).
    With --out, a reliability diagram and an error-vs-sigma plot are written beside it."""
    from rich.console import Console

    from molsam.cli.main import fail
    from molsam.data.read_options import ReadOptions
    from molsam.errors import ConfigError
    from molsam.evaluate import evaluate as run_evaluation
    from molsam.evaluate import write_uncertainty_plots

    reading = None
    try:
        read = ReadOptions.from_options(delimiter, decimal, sheet)
        targets = parse_targets(target)
        if data is None and read != ReadOptions():
            raise ConfigError("--delimiter, --decimal and --sheet read --data (a run's saved "
                              "split is read as its recipe says)")
        if out is not None:
            output_file(out, "--out")  # before scoring, not after
        if data is not None:
            reading = _reading_line(data, read)
        result = run_evaluation(
            models, data, split=split, smiles_column=smiles_col, device=device,
            batch_size=batch_size, workers=workers, read=read, targets=targets,
        )
        if out is not None:
            with writes_to(out, "--out"):
                write_uncertainty_plots(result, out)
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
    for line in _uncertainty_lines(result):
        console.print(line, highlight=False)
    table = _uncertainty_table(result)
    if table is not None:
        console.print(table)
    table = _similarity_table(result)
    if table is not None:
        console.print(table)
    if out is not None:
        for path in result.plots:
            console.print(f"wrote {path}")
        console.print(f"wrote {out}")


def parse_targets(values: list[str] | None) -> dict[str, str]:
    """{model task: column} from repeated --target MODEL_TASK=COLUMN."""
    from molsam.errors import ConfigError

    targets: dict[str, str] = {}
    for value in values or []:
        task, sep, column = value.partition("=")
        task, column = task.strip(), column.strip()
        if not sep or not task or not column:
            raise ConfigError(f"--target: expected MODEL_TASK=COLUMN, got {value!r}")
        if task in targets and targets[task] != column:
            raise ConfigError(f"--target: task {task!r} is mapped twice ({targets[task]!r} and "
                              f"{column!r})")
        targets[task] = column
    return targets


def _uncertainty_lines(result) -> list[str]:
    """Where sigma and the calibration come from, in a line or two."""
    report = result.final_uncertainty
    if report is None:
        return []
    lines = []
    label = "ensemble" if result.ensemble is not None else "model"
    if result.targets:
        lines.append("labels: " + ", ".join(f"{t} from column {c!r}"
                                           for t, c in result.targets.items()))
    if result.task == "regression":
        lines.append(f"sigma ({label}): " + {
            None: "none (a single model trained with train.loss mse; train.loss mve or an "
                  "ensemble gives one)",
            "mve": "the model's variance head (train.loss mve)",
            "ensemble": "spread of the members' predictions",
            "ensemble_mve": "members' variance heads and the spread of their means",
        }.get(report["sigma"], str(report["sigma"])))
    calibration = report.get("calibration")
    lines.append(f"calibration ({label}): " + (calibration["description"] if calibration else
                                               "none stored (molsam calibrate RUN fits one)"))
    calibrated = report.get("calibrated") if result.task == "regression" else None
    if calibrated and calibrated["skipped"].get("width", 0) > calibrated["skipped"].get(
            "coverage", 0):
        alpha = calibrated.get("alpha") or 0.1
        needed = math.ceil((1 - alpha) / alpha - 1e-9)  # ceil((n + 1)(1 - alpha)) <= n
        lines.append(f"unbounded intervals (width -): a task had fewer than {needed} labelled "
                     f"calibration molecules, too few for {100 * (1 - alpha):g}% coverage")
    return lines


def _uncertainty_table(result) -> Table | None:
    from rich.table import Table

    report = result.final_uncertainty
    if report is None:
        return None
    if result.task == "regression":
        columns = ("nll", "spearman", "miscalibration_area", "ence", "coverage", "width")
        rows = [(name, report.get(name)) for name in ("uncalibrated", "calibrated")]
    else:
        columns = ("ece", "brier")
        rows = [(name, report.get(name)) for name in ("uncalibrated", "temperature", "isotonic")]
    rows = [(name, block) for name, block in rows if block is not None]
    if not rows:
        return None
    table = Table(title="uncertainty (mean over tasks)" if len(result.target_names) > 1
                  else "uncertainty")
    table.add_column("")
    for name in columns:
        table.add_column(name, justify="right")
    for name, block in rows:
        table.add_row(name, *(_cell(block["mean"].get(c)) for c in columns))
    return table


def _similarity_table(result) -> Table | None:
    from rich.table import Table

    report = result.final_uncertainty
    binned = None if report is None else report.get("by_similarity")
    if not binned:
        return None
    table = Table(title=f"{binned['error']} by similarity to the training set (terciles)")
    table.add_column("nearest-neighbour Tanimoto")
    table.add_column("molecules", justify="right")
    table.add_column("mean error", justify="right")
    for row in binned["bins"]:
        low, high = row["low"], row["high"]
        span = "-" if low is None else f"{low:.2f} - {high:.2f}"
        table.add_row(span, str(row["n"]), _cell(row["mean_over_tasks"]))
    return table


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
