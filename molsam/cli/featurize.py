"""`molsam featurize`: data file (CSV/TSV, SD, SMILES, Excel, Parquet) or dataset name -> store, splits.json and invalid-row report."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from molsam.cli.predict import DECIMAL_HELP, DELIMITER_HELP, SHEET_HELP
from molsam.data.split_names import DEFAULT_SIZES, METHODS
from molsam.errors import ConfigError, MolsamError
from molsam.outputs import output_folder, writes_to

MAX_TASK_COLUMNS = 4


def parse_sizes(text: str) -> tuple[float, float, float]:
    try:
        sizes = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise ConfigError(f"--sizes: {text!r} is not three comma-separated fractions") from None
    if len(sizes) != 3:
        raise ConfigError(f"--sizes: {text!r} is not three comma-separated fractions")
    return sizes


def featurizer_extras(names: list[str]) -> tuple[str, ...]:
    """--features values checked against molsam.chem.spec.FEATURIZER_EXTRAS (one-line error)."""
    from molsam.chem.spec import FEATURIZER_EXTRAS
    from molsam.errors import ConfigError

    unknown = [n for n in names if n not in FEATURIZER_EXTRAS]
    if unknown:
        raise ConfigError(f"--features {unknown[0]}: not one of {', '.join(FEATURIZER_EXTRAS)}")
    return tuple(dict.fromkeys(names))


def featurize(
    data: str = typer.Argument(..., help="CSV/TSV, SD (.sdf), SMILES (.smi), Excel (.xlsx) or Parquet file, or dataset name (`molsam datasets`)."),
    smiles_col: str = typer.Option(None, "--smiles-col", help="SMILES column [default: smiles]."),
    targets: list[str] = typer.Option(
        None, "--targets", "-t", help="Target column (repeat for several) [default: inferred, ID/name columns never]."
    ),
    id_col: str = typer.Option(None, "--id-col", help="ID column carried through."),
    task: str = typer.Option(None, "--task", help="classification | regression | multiclass [inferred]."),
    split: str = typer.Option("scaffold", "--split", help=f"One of {', '.join(METHODS)}."),
    sizes: str = typer.Option(",".join(map(str, DEFAULT_SIZES)), "--sizes", help="train,val,test"),
    seed: int = typer.Option(0, "--seed", help="Split seed (ignored by `scaffold`)."),
    split_column: str = typer.Option(None, "--split-column", help="Column for --split column."),
    split_file: Path = typer.Option(None, "--split-file", help="JSON for --split file."),
    out: Path = typer.Option(None, "--out", "-o", help="Output folder [default: featurized/NAME]."),
    workers: int = typer.Option(None, "--workers", "-j", help="Processes [default: all cores]."),
    strict: bool = typer.Option(False, "--strict", help="Invalid SMILES are an error."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Featurize even when cached."),
    delimiter: str = typer.Option(None, "--delimiter", help=DELIMITER_HELP),
    decimal: str = typer.Option(None, "--decimal", help=DECIMAL_HELP),
    sheet: str = typer.Option(None, "--sheet", help=SHEET_HELP),
    features: list[str] = typer.Option(
        [], "--features",
        help="Featurizer extras to compute too (repeatable): rdkit2d, morgan_count (what "
             "model.mol_features reads), compt (CoMPT's inputs). Training finds them in the "
             "cache."),
    pe_steps: int = typer.Option(16, "--pe-steps", help="RWSE steps (model.pe_steps)."),
) -> None:
    """Featurize molecules, split them, and write store.pt, splits.json and invalid_rows.csv."""
    from rich.console import Console

    from molsam.cli.main import fail
    from molsam.cli.progress import progress_callback
    from molsam.data.formats import describe_source
    from molsam.data.pipeline import DataSpec, load_store, split_store
    from molsam.data.read_options import ReadOptions
    from molsam.data.targets import targets_line
    from molsam.fileset import write_together

    console = Console(stderr=True)
    try:
        start = time.perf_counter()
        if out is not None:
            output_folder(out, "--out", create=False)  # before featurizing, not after
        read = ReadOptions.from_options(delimiter, decimal, sheet)
        spec = DataSpec(data, smiles_col, targets or None, id_col, task, read)
        # How the file is read (delimiter, decimal mark, sheet), stated with the result; an
        # ambiguous file is refused here, before featurizing.
        reading = describe_source(spec.resolve()[0], read)
        with progress_callback("featurizing") as update:
            store = load_store(
                spec, workers=workers, use_cache=not no_cache, strict=strict, on_progress=update,
                rwse_steps=pe_steps, extras=featurizer_extras(features),
            )
        seconds = time.perf_counter() - start
        # Imported only now: it imports torch, which load_store loads while its workers run
        from molsam.data.split_stats import split_statistics, write_splits_json

        method_sizes = parse_sizes(sizes)
        indices = split_store(
            store, split, method_sizes, seed, column=split_column, split_file=split_file,
            read=read,
        )
        stats, warnings = split_statistics(store, indices)
        out = output_folder(out or Path("featurized") / Path(store.source).stem.lower(), "--out")
        with writes_to(out, "--out"):
            # The three change together: a kill leaves the old set or the new one, never a mix.
            write_together(out, {
                "store.pt": store.save,
                "splits.json": lambda path: write_splits_json(
                    path, store, indices, method=split, seed=seed, sizes=method_sizes,
                    stats=stats),
                "invalid_rows.csv": store.write_invalid_rows,
            })
    except KeyboardInterrupt:
        # Outputs are written only once everything is featurized: nothing partial is left.
        console.print("interrupted: nothing was written")
        raise typer.Exit(code=130) from None
    except MolsamError as error:
        raise fail(error) from None

    total = len(store) + len(store.invalid)
    console.print(reading, highlight=False, markup=False)
    console.print(
        f"[bold]{store.source}[/]: {total} rows, {len(store)} valid, "
        f"{len(store.invalid)} invalid (see {out / 'invalid_rows.csv'}); "
        f"{len(store.target_names)} {store.task or 'unlabeled'} task(s); {seconds:.1f} s"
    )
    console.print(targets_line(store.target_names, store.task, store.ignored, store.classes),
                  highlight=False, markup=False)
    console.print(_split_table(store, stats, split))
    for warning in warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    console.print(f"wrote {out / 'store.pt'}, {out / 'splits.json'}, {out / 'invalid_rows.csv'}")


def _split_table(store, stats: dict, method: str) -> Table:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{method} split")
    table.add_column("part")
    table.add_column("molecules", justify="right")
    table.add_column("scaffolds", justify="right")
    shown = store.target_names[:MAX_TASK_COLUMNS]
    key = {"classification": "positive_rate", "multiclass": "class_counts"}.get(
        store.task or "", "mean"
    )
    label = {"positive_rate": "% positive", "class_counts": "classes"}.get(key, "mean")
    for name in shown:
        table.add_column(f"{name} {label}", justify="right")
    if len(store.target_names) > len(shown):
        table.add_column(f"+{len(store.target_names) - len(shown)} tasks (splits.json)")
    for part, entry in stats.items():
        cells = [part, str(entry["size"]), str(entry["scaffolds"])]
        for name in shown:
            value = entry["tasks"][name][key]
            if isinstance(value, dict):  # class counts
                cells.append(escape(" ".join(f"{c}:{n}" for c, n in value.items())))
            elif value is None:
                cells.append("-")
            else:
                cells.append(f"{100 * value:.1f}" if key == "positive_rate" else f"{value:.3g}")
        if len(store.target_names) > len(shown):
            cells.append("")
        table.add_row(*cells)
    return table


def register(app: typer.Typer) -> None:
    app.command("featurize")(featurize)
