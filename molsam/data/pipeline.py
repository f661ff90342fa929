"""Data file (CSV/TSV, SD, SMILES, Excel, Parquet) or dataset name -> featurized GraphStore, through a content-addressed cache.

The cache key covers the file's bytes (sha256), the featurizer spec and every reading option, so
the same file read the same way loads in milliseconds instead of being featurized again, and any
change to file or options featurizes anew.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from molsam.chem.spec import DEFAULT_RWSE_STEPS, featurizer_spec
from molsam.data.datasets import (
    cache_dir,
    cache_folder,
    cache_unusable,
    dataset_info,
    dataset_path,
    is_dataset_name,
)
from molsam.data.formats import READER_VERSION, position_unit
from molsam.data.read_options import DEFAULT, ReadOptions
from molsam.data.table import check_binary_labels, iter_table, read_table
from molsam.data.splits import SplitIndices, make_split
from molsam.errors import ConfigError, InputError

if TYPE_CHECKING:  # molsam.data.store imports torch: see _store_class
    from molsam.data.store import GraphStore

TASKS = ("classification", "regression", "multiclass")


@dataclass(frozen=True)
class DataSpec:
    """What to read: a path or dataset name and the columns. None means the default (for a
    named dataset, the registry's choice; for a file: `smiles`, targets inferred as
    molsam.data.targets describes (ID and name columns never), no ID). `read`: delimiter,
    decimal mark and sheet (ReadOptions; detected where None). `feature_columns`: numeric
    columns read as molecule-level features (data.feature_columns)."""

    data: str
    smiles_column: str | None = None
    target_columns: Sequence[str] | None = None
    id_column: str | None = None
    task: str | None = None
    read: ReadOptions = DEFAULT
    feature_columns: Sequence[str] | None = None

    @classmethod
    def from_config(cls, data) -> DataSpec:
        """The spec of a recipe's `data` section (molsam.config.DataConfig), its
        data.delimiter, data.decimal and data.sheet included."""
        get = data.get if isinstance(data, dict) else lambda key: getattr(data, key, None)
        columns = get("feature_columns")
        return cls(get("path"), get("smiles_column"), get("target_columns"), get("id_column"),
                   get("task"), ReadOptions.from_recipe(data),
                   None if columns is None else tuple(columns))

    def resolve(self) -> tuple[Path, str, list[str] | None, str | None, str | None]:
        """(path, smiles column, target columns, id column, task) with defaults filled in."""
        if is_dataset_name(self.data):
            info = dataset_info(self.data)
            return (
                dataset_path(info.name),
                self.smiles_column or info.smiles_column,
                list(self.target_columns) if self.target_columns else _list(info.targets),
                self.id_column or info.id_column,
                self.task or info.task,
            )
        path = Path(self.data).expanduser()
        if not path.exists():
            raise InputError(
                f"{path}: no such file (and not a dataset name; try `molsam datasets`)"
            )
        if path.is_dir():
            raise InputError(f"{path}: is a folder, expected a data file")
        targets = list(self.target_columns) if self.target_columns is not None else None
        return path, self.smiles_column or "smiles", targets, self.id_column, self.task


def _list(values: Sequence[str] | None) -> list[str] | None:
    return None if values is None else list(values)


def _store_class() -> type[GraphStore]:
    """GraphStore, imported on first use. Its module imports torch, which takes seconds: a
    featurizing load_store imports it while the workers run (featurize_many's `meanwhile`), not
    before they start, and the workers are forked before torch is loaded."""
    from molsam.data.store import GraphStore

    return GraphStore


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_store(
    spec: DataSpec,
    *,
    rwse_steps: int = DEFAULT_RWSE_STEPS,
    extras: tuple[str, ...] = (),
    workers: int | None = None,
    use_cache: bool = True,
    strict: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    classes: Sequence[Sequence[str]] | None = None,
) -> GraphStore:
    """Featurize (or load from cache) the molecules of `spec`.

    Args:
        classes: multiclass class names per target to code labels with (a checkpoint's), else
            each column's sorted distinct values.
        on_progress: called as on_progress(done, total) while featurizing.
        strict: an invalid SMILES is an error (naming file, line and reason) instead of a report.
        extras: featurizer extras (molsam.chem.spec.FEATURIZER_EXTRAS), e.g. ("compt",).

    Raises:
        InputError: bad file (see read_table), or not a single valid molecule.
    """
    if spec.task is not None and spec.task not in TASKS:
        raise ConfigError(f"task: {spec.task!r} is not one of {', '.join(TASKS)}")
    path, smiles_column, targets, id_column, task = spec.resolve()
    source_hash = file_sha256(path)
    options = {
        "hash": source_hash,
        "spec": featurizer_spec(rwse_steps, extras),
        "smiles": smiles_column,
        "targets": targets,
        "id": id_column,
        "task": task,
        "classes": None if classes is None else [list(c) for c in classes],
        "reader": READER_VERSION,
        "read": spec.read.cache_key(),
        # only when set: cache keys of stores without feature columns stay as they were
        **({"features": list(spec.feature_columns)} if spec.feature_columns else {}),
    }
    key = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:24]
    cached = cache_dir() / "stores" / f"{path.stem}-{key}.pt"
    if use_cache and _readable_file(cached):
        try:
            store = _store_class().load(cached)
        except InputError:
            store = None  # an unreadable cache entry is rebuilt, never trusted
        if store is not None:
            _check(store, path, strict)
            return store

    table = read_table(
        path, smiles_column, targets, id_column, task=task, classes=classes, read=spec.read,
        feature_columns=spec.feature_columns,
    )
    if table.task == "classification":
        check_binary_labels(table)  # 0/1/2 would pass as labels and inflate positive rates
    total = len(table)
    done = 0

    def progress(n: int) -> None:
        nonlocal done
        done += n
        if on_progress:
            on_progress(done, total)

    from molsam.chem.parallel import featurize_many  # RDKit: only when featurizing

    arrays = featurize_many(
        table.smiles, rwse_steps, workers=workers, on_progress=progress, scaffolds=True,
        meanwhile=_store_class, extras=extras,
    )
    store = _store_class().from_table_arrays(
        table, arrays, task=table.task, rwse_steps=rwse_steps, extras=extras
    )
    store.source_hash = source_hash
    _check(store, path, strict)
    if use_cache:
        _save_to_cache(store, cached)
    return store


def _readable_file(path: Path) -> bool:
    """Is there a cache entry? (False also where the cache folder may not be searched.)"""
    try:
        return path.is_file()
    except OSError:
        return False


def _save_to_cache(store: GraphStore, cached: Path) -> None:
    """Keep the store for next time; a cache that cannot be written (read-only, not creatable,
    a full disk) is said once and skipped: the featurized store is there, only not kept."""
    if cache_folder("stores") is None:
        return
    try:
        store.save(cached)
    except OSError as error:
        cache_unusable(error)


def _check(store: GraphStore, path: Path, strict: bool) -> None:
    if strict and store.invalid:
        first = store.invalid[0]
        raise InputError(
            f"{path}: {position_unit(path)} {first.line}: invalid SMILES {first.smiles!r} ({first.reason}); "
            f"{len(store.invalid)} invalid in all (drop --strict to skip and report them)"
        )
    if len(store) == 0:
        raise InputError(
            f"{path}: not one valid molecule in {len(store.invalid)} rows "
            f"(first reason: {store.invalid[0].reason if store.invalid else 'no rows'})"
        )


def read_column(path: Path, column: str, read: ReadOptions = DEFAULT) -> list[tuple[int, str]]:
    """(line number, stripped cell) of one column (e.g. a split column) in every data row."""
    header, rows = iter_table(path, read=read)
    at = header.column_index(column, "split", "--split-column")
    return [(line, cells[at].strip()) for line, cells in rows]


def split_store(
    store: GraphStore,
    method: str,
    sizes: Sequence[float],
    seed: int,
    *,
    column: str | None = None,
    split_file: str | Path | None = None,
    read: ReadOptions = DEFAULT,
) -> SplitIndices:
    """Split the molecules of a store; `column` names a train/val/test column of its source
    (read with `read`, the options the store was read with)."""
    column_values = places = None
    if method == "column":
        if not column:
            raise ConfigError("split method 'column' needs a split column (--split-column)")
        cells = read_column(Path(store.source), column, read)
        # store.rows maps molecules to data rows, so rows of invalid SMILES shift nothing.
        picked = [cells[row] for row in store.rows]
        column_values = [cell for _, cell in picked]
        unit = position_unit(store.source)
        places = [f"{store.source}: {unit} {line}, column {column!r}" for line, _ in picked]
    return make_split(
        method, store.smiles, sizes, seed, column_values=column_values, split_file=split_file,
        scaffold_ids=store.scaffold_ids, column_places=places,
    )
