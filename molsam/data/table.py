"""Reading tables of SMILES and labels (CSV or TSV) into a MolTable.

Robust to what real files contain: a UTF-8 BOM, CRLF line endings, quoted headers with commas,
whitespace around SMILES, empty label cells (missing labels, NaN) and gzip compression. Every
error names the file, the line and the column.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from molsam.errors import InputError

#: Cells that mean "no label" (an empty cell, or what pandas reads as NaN by default).
MISSING_LABELS = frozenset({"", "nan", "na", "n/a", "none", "null"})

csv.field_size_limit(2**31 - 1)  # SMILES of large molecules exceed the 128 KiB default


@dataclass(frozen=True)
class TableHeader:
    """The header of a table file: its path, delimiter and column names (stripped)."""

    path: Path
    delimiter: str
    columns: tuple[str, ...]

    def column_index(self, name: str, role: str, option: str) -> int:
        """Index of column `name`; an error lists the columns that exist and the option to use.

        A case-insensitive match is accepted when the exact name is absent (`SMILES` vs `smiles`).
        """
        if name in self.columns:
            return self.columns.index(name)
        folded = [c.casefold() for c in self.columns]
        if folded.count(name.casefold()) == 1:
            return folded.index(name.casefold())
        existing = ", ".join(repr(c) for c in self.columns)
        raise InputError(
            f"{self.path}: no {role} column {name!r} (columns: {existing}); choose one with {option}"
        )


def _open_text(path: Path) -> io.TextIOBase:
    # utf-8-sig strips a BOM; newline="" lets the csv module handle CRLF and quoted newlines.
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _delimiter(path: Path, first_line: str) -> str:
    name = path.name.removesuffix(".gz")
    if name.endswith((".tsv", ".tab")):
        return "\t"
    if "\t" in first_line and "," not in first_line:
        return "\t"
    return ","


def iter_table(path: str | Path) -> tuple[TableHeader, Iterator[tuple[int, list[str]]]]:
    """Open a table; return its header and an iterator of (line number, cells) per data row.

    Streams: nothing but the current row is held in memory. Blank lines are skipped. A row with
    more cells than the header is an error naming its line; a short row is padded with empty cells.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a CSV or TSV file")
    handle = _open_text(path)
    try:
        first_line = handle.readline()
    except UnicodeDecodeError as exc:
        handle.close()
        raise InputError(f"{path}: not a UTF-8 text file ({exc.reason})") from None
    if not first_line.strip():
        handle.close()
        raise InputError(f"{path}: empty file (no header line)")
    delimiter = _delimiter(path, first_line)
    handle.close()  # reopen rather than seek: gzip text streams cannot seek back cheaply
    handle = _open_text(path)
    reader = csv.reader(handle, delimiter=delimiter)
    header = TableHeader(path, delimiter, tuple(c.strip() for c in next(reader)))

    def rows() -> Iterator[tuple[int, list[str]]]:
        width = len(header.columns)
        try:
            for cells in reader:
                if not cells or (len(cells) == 1 and not cells[0].strip()):
                    continue
                if len(cells) > width:
                    raise InputError(
                        f"{path}: line {reader.line_num}: {len(cells)} fields, "
                        f"but the header has {width}"
                    )
                if len(cells) < width:
                    cells = cells + [""] * (width - len(cells))
                yield reader.line_num, cells
        except csv.Error as exc:
            raise InputError(f"{path}: line {reader.line_num}: malformed CSV ({exc})") from None
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: line {reader.line_num}: not UTF-8 ({exc.reason})") from None
        finally:
            handle.close()

    return header, rows()


def parse_label(cell: str, path: Path, line: int, column: str) -> float:
    """A label cell as float; missing -> NaN; anything else non-numeric is an error."""
    text = cell.strip()
    if text.casefold() in MISSING_LABELS:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise InputError(
            f"{path}: line {line}, column {column!r}: {text!r} is not a number"
        ) from None
    if math.isinf(value):
        raise InputError(f"{path}: line {line}, column {column!r}: {text!r} is not finite")
    return value


def _is_number(text: str) -> bool:
    text = text.strip()
    if text.casefold() in MISSING_LABELS:
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass
class MolTable:
    """All data rows of a table, before featurization.

    smiles:       [R] stripped SMILES of every data row (valid or not)
    targets:      float32 [R, T], NaN for a missing label
    target_names: [T] column names
    ids:          [R] values of the ID column, or None
    lines:        int64 [R] line number of each row in the file (for messages)
    """

    source: Path
    smiles_column: str
    smiles: list[str]
    targets: np.ndarray
    target_names: list[str]
    ids: list[str] | None
    lines: np.ndarray

    def __len__(self) -> int:
        return len(self.smiles)


def read_table(
    path: str | Path,
    smiles_column: str = "smiles",
    target_columns: Sequence[str] | None = None,
    id_column: str | None = None,
) -> MolTable:
    """Read a CSV/TSV file of SMILES and labels.

    Args:
        smiles_column: column holding SMILES (case-insensitive fallback).
        target_columns: label columns; None means every other column whose cells are all numbers
            or empty (the ID column excluded). An empty list means no labels (prediction input).
        id_column: optional column carried through to reports and outputs.

    Raises:
        InputError naming file, line and column: missing column, non-numeric label, empty file,
        a file with a header but no data rows.
    """
    header, rows = iter_table(path)
    smiles_at = header.column_index(smiles_column, "SMILES", "--smiles-col")
    id_at = header.column_index(id_column, "ID", "--id-col") if id_column else None
    records = list(rows)
    if not records:
        raise InputError(f"{header.path}: no data rows below the header")

    if target_columns is None:
        candidates = [i for i in range(len(header.columns)) if i not in (smiles_at, id_at)]
        target_at = [
            i
            for i in candidates
            if all(_is_number(cells[i]) for _, cells in records)
            and any(cells[i].strip() for _, cells in records)
        ]
    else:
        target_at = [header.column_index(c, "target", "--targets") for c in target_columns]
    names = [header.columns[i] for i in target_at]

    targets = np.empty((len(records), len(target_at)), dtype=np.float32)
    for r, (line, cells) in enumerate(records):
        for t, i in enumerate(target_at):
            targets[r, t] = parse_label(cells[i], header.path, line, names[t])

    return MolTable(
        source=header.path,
        smiles_column=header.columns[smiles_at],
        smiles=[cells[smiles_at].strip() for _, cells in records],
        targets=targets,
        target_names=names,
        ids=None if id_at is None else [cells[id_at].strip() for _, cells in records],
        lines=np.array([line for line, _ in records], dtype=np.int64),
    )


def infer_task(targets: np.ndarray) -> str:
    """'classification' when every present label is 0 or 1, else 'regression'."""
    present = targets[~np.isnan(targets)]
    if present.size and np.isin(present, (0.0, 1.0)).all():
        return "classification"
    return "regression"
