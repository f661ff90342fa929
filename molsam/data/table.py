"""Reading tables of SMILES and labels (CSV or TSV) into a MolTable.

Robust to what real files contain: a UTF-8 BOM, CRLF line endings, quoted headers with commas,
whitespace around SMILES, empty label cells (missing labels, NaN), gzip compression, and the
dialects spreadsheets save in other locales: `;`, tab or `|` as delimiter and decimal commas
(`-11,01`), told from the header and first rows (molsam.data.dialect) or set with --delimiter
and --decimal. Every error names the file, the line and the column.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from molsam.data.dialect import (
    SAMPLE_BYTES,
    Dialect,
    comma_decimal,
    detect,
    looks_like_comma_decimal,
    sample_lines,
)
from molsam.data.read_options import DEFAULT, ReadOptions
from molsam.data.targets import (
    MISSING_LABELS,
    choose_targets,
    class_names,
    encode_classes,
    explicit_task,
)
from molsam.errors import InputError


csv.field_size_limit(2**31 - 1)  # SMILES of large molecules exceed the 128 KiB default


@dataclass(frozen=True)
class TableHeader:
    """The header of a table file: its path, delimiter and column names (stripped).

    unit: what a row position counts ("line"; "record" in SD files, "sheet row" in Excel
    workbooks, "row number" in Parquet files). problems: position -> reason for rows the reader
    could not read (an unreadable SD record), filled while reading. decimal: the decimal mark of
    label cells ("." or ","). how: how the file was read, for the line that states it
    (`as ';'-separated with decimal commas`; formats.reading_line).
    """

    path: Path
    delimiter: str
    columns: tuple[str, ...]
    unit: str = "line"
    problems: dict[int, str] = field(default_factory=dict, compare=False)
    decimal: str = "."
    how: str = ""

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


def _sample(path: Path) -> tuple[bytes, bool]:
    """The first SAMPLE_BYTES of the file (decompressed) and whether there is more."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as raw:
            data = raw.read(SAMPLE_BYTES + 1)
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise InputError(f"{path}: cannot read ({exc})") from None
    return data[:SAMPLE_BYTES], len(data) > SAMPLE_BYTES


def sniff(path: Path, read: ReadOptions = DEFAULT) -> Dialect:
    """The dialect (molsam.data.dialect.Dialect) of a CSV/TSV file, from its first bytes.

    Raises:
        InputError: an empty file, an undecodable header, an ambiguous delimiter or decimal mark.
    """
    raw, truncated = _sample(path)
    try:
        lines = sample_lines(raw, truncated)
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: line {_first_non_utf8_line(path)}: not a UTF-8 text file ({exc.reason})"
        ) from None
    if not lines or not lines[0].strip():
        raise InputError(f"{path}: empty file (no header line)")
    return detect(path, lines, read.delimiter, read.decimal)


def iter_blocks(
    rows: Iterator[tuple[int, list[str]]], size: int, problems: dict[int, str]
) -> Iterator[tuple[list[list[str]], list[str]]]:
    """Blocks of `size` rows of `iter_table`'s rows: (cells per row, the reader's reason per row
    or "", from `header.problems`)."""
    block: list[list[str]] = []
    reasons: list[str] = []
    for position, cells in rows:
        block.append(cells)
        reasons.append(problems.get(position, ""))  # the reader fills it before yielding the row
        if len(block) == size:
            yield block, reasons
            block, reasons = [], []
    if block:
        yield block, reasons


def iter_table(
    path: str | Path, workers: int | None = 1, read: ReadOptions = DEFAULT
) -> tuple[TableHeader, Iterator[tuple[int, list[str]]]]:
    """Open a table; return its header and an iterator of (line number, cells) per data row.

    Streams: nothing but the current row is held in memory. Blank lines are skipped. A row with
    more cells than the header is an error naming its line; a short row is padded with empty cells.
    The delimiter and decimal mark are `read`'s, else detected (molsam.data.dialect).
    SD, SMILES, Excel and Parquet files go to their readers (molsam.data.formats; same
    interface; positions are SD record numbers, sheet rows or row numbers there; `workers`
    processes parse SD records, None: all cores).
    """
    from molsam.data import formats  # formats builds on this module

    path = Path(path)
    if formats.file_format(path) != "csv":
        return formats.read_rows(path, workers, read)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a CSV or TSV file")
    read.check_format("csv", path)
    dialect = sniff(path, read)
    handle = _open_text(path)
    reader = csv.reader(handle, delimiter=dialect.delimiter)
    try:
        first = next(reader)
    except UnicodeDecodeError as exc:  # the decoder reads ahead: the bad byte may be below
        handle.close()
        raise InputError(
            f"{path}: line {_first_non_utf8_line(path)}: not a UTF-8 text file ({exc.reason})"
        ) from None
    except (csv.Error, OSError, EOFError) as exc:
        handle.close()
        raise InputError(f"{path}: line 1: cannot read the header ({exc})") from None
    header = TableHeader(path, dialect.delimiter, tuple(c.strip() for c in first),
                         decimal=dialect.decimal, how=f"as {dialect.describe()}")
    try:
        refuse_duplicate_columns(header, reader.line_num)
    except InputError:
        handle.close()
        raise

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
        except (OSError, EOFError) as exc:  # a truncated or corrupt .gz
            raise InputError(f"{path}: line {reader.line_num}: cannot read ({exc})") from None
        except UnicodeDecodeError as exc:
            # The decoder reads ahead in blocks, so the csv reader's line count lags behind the
            # bad byte: find its line in the raw bytes instead.
            raise InputError(
                f"{path}: line {_first_non_utf8_line(path)}: not UTF-8 ({exc.reason})"
            ) from None
        finally:
            handle.close()

    return header, rows()


def _first_non_utf8_line(path: Path) -> int:
    """1-based line of the first byte sequence that is not UTF-8 (0 if none is found)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as raw:
        for number, line in enumerate(raw, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


def refuse_duplicate_columns(header: TableHeader, line: int | None) -> None:
    """Two columns of one name would become two tasks (or outputs) that cannot be told apart.
    `line`: the header's position (in header.unit), None where it has none (Parquet)."""
    seen: dict[str, int] = {}
    where = "" if line is None else f" {header.unit} {line}:"
    for at, name in enumerate(header.columns):
        if not name:
            continue  # unnamed columns (trailing commas) are never chosen by name
        if name in seen:
            raise InputError(
                f"{header.path}:{where} column {name!r} appears twice (columns "
                f"{seen[name] + 1} and {at + 1}); rename one"
            )
        seen[name] = at


def parse_label(cell: str, path: Path, line: int, column: str, unit: str = "line") -> float:
    """A label cell as float; missing -> NaN; anything else non-numeric is an error naming the
    line (or SD record: `unit`) and column."""
    text = cell.strip()
    if text.casefold() in MISSING_LABELS:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        hint = " (a decimal comma? read it with --decimal , or data.decimal)" if \
            looks_like_comma_decimal(text) else ""
        raise InputError(
            f"{path}: {unit} {line}, column {column!r}: {text!r} is not a number{hint}"
        ) from None
    if math.isinf(value):
        raise InputError(f"{path}: {unit} {line}, column {column!r}: {text!r} is not finite")
    return value


@dataclass
class MolTable:
    """All data rows of a table, before featurization.

    smiles:       [R] stripped SMILES of every data row (valid or not)
    targets:      float32 [R, T], NaN for a missing label (class indices for multiclass)
    target_names: [T] column names
    ids:          [R] values of the ID column, or None
    lines:        int64 [R] position of each row in the file (line, or SD record; see `unit`)
    task:         the targets' task as read or inferred (None without targets)
    classes:      [T] class names per target for multiclass, else None
    ignored:      columns target inference left out -> why (empty when targets were given)
    problems:     data row -> reason, for rows the reader could not read (unreadable SD records)
    features:     float64 [R, C] numeric feature columns (data.feature_columns), NaN where a
                  cell is empty, or None; feature_names: [C] their column names
    """

    source: Path
    smiles_column: str
    smiles: list[str]
    targets: np.ndarray
    target_names: list[str]
    ids: list[str] | None
    lines: np.ndarray
    task: str | None = None
    classes: list[list[str]] | None = None
    ignored: dict[str, str] = field(default_factory=dict)
    unit: str = "line"
    problems: dict[int, str] = field(default_factory=dict)
    features: np.ndarray | None = None
    feature_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.smiles)


def read_table(
    path: str | Path,
    smiles_column: str = "smiles",
    target_columns: Sequence[str] | None = None,
    id_column: str | None = None,
    *,
    task: str | None = None,
    classes: Sequence[Sequence[str]] | None = None,
    read: ReadOptions = DEFAULT,
    feature_columns: Sequence[str] | None = None,
) -> MolTable:
    """Read a CSV/TSV, SD, SMILES, Excel or Parquet file of molecules and labels
    (molsam.data.formats).

    Args:
        smiles_column: column holding SMILES (case-insensitive fallback).
        target_columns: label columns; None infers them (molsam.data.targets: ID and name
            columns never, numeric columns or class-label columns, an error where it cannot
            tell). An empty list means no labels (prediction input).
        id_column: optional column carried through to reports and outputs.
        task: classification, regression, multiclass or None (inferred from the labels).
        classes: for multiclass, the class names per target to code labels with (a model's);
            None takes each column's sorted distinct values.
        read: delimiter, decimal mark and sheet (ReadOptions; None fields: detected).
        feature_columns: numeric columns read as molecule-level features (empty cells: NaN);
            never targets.

    Raises:
        InputError naming file, line (or SD record) and column: missing column, non-numeric
        label, unknown class, empty file, a file with a header but no data rows, targets that
        cannot be told apart.
    """
    # All of it is read: SD records on all cores.
    header, rows = iter_table(path, workers=None, read=read)
    smiles_at = header.column_index(smiles_column, "SMILES", "--smiles-col")
    id_at = header.column_index(id_column, "ID", "--id-col") if id_column else None
    feature_at = [header.column_index(c, "feature", "data.feature_columns")
                  for c in feature_columns or ()]
    records = list(rows)
    if not records:
        if header.unit == "record":
            raise InputError(f"{header.path}: no SD records (an empty SD file)")
        if header.unit == "row number":
            raise InputError(f"{header.path}: no data rows (a Parquet file of 0 rows)")
        raise InputError(f"{header.path}: no data rows below the header")
    if header.decimal == ",":  # label cells only: SMILES and IDs stay as read
        kept = {smiles_at, id_at} - {None}
        records = [
            (position, [c if i in kept else comma_decimal(c) for i, c in enumerate(cells)])
            for position, cells in records
        ]
    cells_only = [cells for _, cells in records]

    ignored: dict[str, str] = {}
    if target_columns is None:
        choice = choose_targets(
            header.path, header.columns, cells_only,
            ({smiles_at, id_at} | set(feature_at)) - {None}, task,
        )
        target_at, ignored, task = choice.indices, choice.ignored, choice.task
    else:
        target_at = [header.column_index(c, "target", "--targets") for c in target_columns]
        if task is None and target_at:
            task = explicit_task(header.path, header.columns, cells_only, target_at) or None
    names = [header.columns[i] for i in target_at]

    targets = np.empty((len(records), len(target_at)), dtype=np.float32)
    class_lists: list[list[str]] | None = None
    if task == "multiclass":
        class_lists = []
        for t, i in enumerate(target_at):
            column = [(line, cells[i]) for line, cells in records]
            found = list(classes[t]) if classes is not None else class_names(
                header.path, names[t], column, header.unit
            )
            targets[:, t] = encode_classes(header.path, names[t], column, found, header.unit)
            class_lists.append(found)
    else:
        for r, (line, cells) in enumerate(records):
            for t, i in enumerate(target_at):
                targets[r, t] = parse_label(cells[i], header.path, line, names[t], header.unit)
        if task is None and target_at:
            task = infer_task(targets)

    features = None
    if feature_at:
        features = np.array([[parse_label(cells[i], header.path, line, header.columns[i],
                                          header.unit) for i in feature_at]
                             for line, cells in records], dtype=np.float64)
    positions = [line for line, _ in records]
    at_row = {p: r for r, p in enumerate(positions)}
    return MolTable(
        source=header.path,
        smiles_column=header.columns[smiles_at],
        smiles=[cells[smiles_at].strip() for _, cells in records],
        targets=targets,
        target_names=names,
        ids=None if id_at is None else [cells[id_at].strip() for _, cells in records],
        lines=np.array(positions, dtype=np.int64),
        task=task if target_at else None,
        classes=class_lists,
        ignored=ignored,
        unit=header.unit,
        problems={at_row[p]: why for p, why in header.problems.items() if p in at_row},
        features=features,
        feature_names=[header.columns[i] for i in feature_at],
    )


def non_binary_labels(labels: np.ndarray) -> np.ndarray:
    """Mask of labels a classification task cannot use: present (not NaN) and neither 0 nor 1."""
    return ~np.isnan(labels) & ~np.isin(labels, (0.0, 1.0))


def check_binary_labels(table: MolTable) -> None:
    """Refuse a label other than 0/1 (or missing) for a classification task, naming the file,
    line and column of the first one: such labels would pass as 'positive' and inflate rates."""
    bad = non_binary_labels(table.targets)
    if bad.any():
        row, task = np.argwhere(bad)[0]
        raise InputError(
            f"{table.source}: {table.unit} {int(table.lines[row])}, "
            f"column {table.target_names[task]!r}: "
            f"label {float(table.targets[row, task]):g} is not 0 or 1, which classification "
            f"needs ({int(bad.sum())} such label(s) in all)"
        )


def infer_task(targets: np.ndarray) -> str:
    """'classification' when every present label is 0 or 1, else 'regression'."""
    present = targets[~np.isnan(targets)]
    if present.size and np.isin(present, (0.0, 1.0)).all():
        return "classification"
    return "regression"
