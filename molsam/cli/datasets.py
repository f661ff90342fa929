"""`molsam datasets`: list the named datasets, or print the local file of one (fetching it)."""

from __future__ import annotations

import typer
from molsam.errors import MolsamError


def datasets(
    name: str = typer.Argument(None, help="Print the local path of this dataset's file."),
) -> None:
    """List named datasets; with NAME, print the path of its local file (downloading it once)."""
    from rich.console import Console
    from rich.table import Table

    from molsam.cli.main import fail
    from molsam.data.datasets import REGISTRY, dataset_info, dataset_path

    if name:
        try:
            typer.echo(dataset_path(dataset_info(name).name))
        except MolsamError as error:
            raise fail(error) from None
        return
    table = Table(title="named datasets (MOLSAM_DATA_DIR: a local folder of the original files)")
    for column in ("name", "file", "task", "metric", "targets", "description"):
        table.add_column(column)
    for info in REGISTRY.values():
        targets = "all numeric" if info.targets is None else str(len(info.targets))
        table.add_row(
            info.name, info.filename, info.task, info.metric, targets, info.description
        )
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("datasets")(datasets)
