"""Input formats behind one reader interface: a header (column names) and rows with a position.

Every reader returns `(TableHeader, rows)` where rows yields `(position, cells)`: the position is
what a message names (`header.unit`: a file line for CSV/TSV and SMILES files, a record number
for SD files), the cells are strings in header order. So label parsing, target inference,
invalid-row reports and row-preserving prediction work the same for every format.

- CSV/TSV (.csv, .tsv, .tab, anything else; .gz too): molsam.data.table.iter_table (which
  hands every other format to `read_rows`, so its callers read all formats). Delimiter (`,` `;`
  tab `|`) and decimal mark detected from the header and first rows (molsam.data.dialect).
- Excel workbooks (.xlsx, .xlsm, .xls): molsam.data.excel (python-calamine); the first worksheet
  or --sheet; positions are the sheet's row numbers.
- Parquet files (.parquet, .pq): molsam.data.parquet (pyarrow), one row group at a time;
  positions are row numbers from 1.
- SD files (.sdf, .sd, .mol2-free; .sdf.gz too), read with RDKit's ForwardSDMolSupplier, each
  record on its own, in worker processes (molsam.data.sd_records; streams, gzip too). Columns:
  `smiles` (RDKit's canonical SMILES of the record's structure), `name` (the title line), then
  every SD property (data item) in order of first appearance, as text. A property named exactly
  `smiles` or `name` becomes `<name> (SD)`. A record RDKit cannot read (a malformed block, or
  one that fails sanitization) is a row with an empty SMILES whose reason, RDKit's own message,
  is kept in `header.problems[record]`: it becomes an invalid row with its record number, never
  a shifted row.
- SMILES files (.smi, .smiles; .gz too): one molecule a line, `SMILES<whitespace>name` (the name
  may contain spaces). A first line whose first word is `smiles` (any case) is a header: its
  words name the columns and each line is split into that many fields, the last taking the rest
  of the line (so `SMILES Name SOL` files carry labels). Blank lines and `#` comments are skipped.

Excel and Parquet need the `formats` extra (pip install molsam[formats]), imported only when such
a file is read. `reading_line` states how a file was read (`read eu.csv as ';'-separated with
decimal commas`); `describe_source` says the same without reading the rows.
"""

from __future__ import annotations

import dataclasses
import gzip
import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from molsam.data import excel, parquet
from molsam.data.read_options import DEFAULT, ReadOptions
from molsam.data.table import TableHeader, iter_table, sniff
from molsam.errors import InputError

#: Part of the featurization cache key: bump when a reader turns the same file into other rows.
#: 2: SD records parsed one by one (a record that overruns its `$$$$` no longer hides the next).
#: 3: CSV delimiter (`;`, tab, `|`) and decimal commas detected from the first rows.
READER_VERSION = 3
SD_SUFFIXES = (".sdf", ".sd")
SMI_SUFFIXES = (".smi", ".smiles")
EXCEL_SUFFIXES = excel.SUFFIXES
PARQUET_SUFFIXES = parquet.SUFFIXES
SD_SMILES_COLUMN = "smiles"
SD_NAME_COLUMN = "name"

Rows = Iterator[tuple[int, list[str]]]


def file_format(path: str | Path) -> str:
    """'sdf', 'smi', 'excel', 'parquet' or 'csv' (the default: CSV/TSV), from the name with any
    .gz removed."""
    name = Path(path).name.lower().removesuffix(".gz")
    if name.endswith(SD_SUFFIXES):
        return "sdf"
    if name.endswith(SMI_SUFFIXES):
        return "smi"
    if name.endswith(EXCEL_SUFFIXES):
        return "excel"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return "csv"


_UNITS = {"sdf": "record", "excel": excel.UNIT, "parquet": parquet.UNIT}


def position_unit(path: str | Path) -> str:
    """What a row position counts in messages and reports: 'record' for SD files, 'sheet row'
    for Excel workbooks, 'row number' for Parquet files, else 'line'."""
    return _UNITS.get(file_format(path), "line")


def read_rows(
    path: str | Path, workers: int | None = 1, read: ReadOptions = DEFAULT
) -> tuple[TableHeader, Rows]:
    """Open any supported file; return its header and an iterator of (position, cells).

    Streams: only the current row (or a few batches of SD records, or one Parquet row group) is
    held in memory. `workers`: processes that parse SD records (None: all cores); 1 parses them
    here, as a caller that is itself one of many workers (Ray Data's readers) wants. `read`:
    delimiter and decimal mark of CSV/TSV files, the sheet of a workbook (None: detected, the
    first); --decimal applies to label text in every format.

    Raises:
        InputError naming the file (and line, record or row): missing file, a folder, empty
        file, undecodable text, malformed rows, a corrupt workbook or Parquet file.
        ConfigError: an option for another format (--sheet on a CSV file), a missing extra.
    """
    path = Path(path)
    _check_exists(path)
    kind = file_format(path)
    read.check_format(kind, path)
    if kind == "csv":
        return iter_table(path, workers, read)
    if kind == "sdf":
        header, rows = _read_sd(path, workers)
    elif kind == "smi":
        header, rows = _read_smi(path)
    elif kind == "excel":
        header, rows = excel.read_excel(path, read.sheet)
    else:
        header, rows = parquet.read_parquet(path)
    return dataclasses.replace(header, decimal=read.decimal or "."), rows  # same problems dict


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(
            f"{path}: is a folder, expected a CSV, TSV, SD, SMILES, Excel or Parquet file"
        )


def reading_line(header: TableHeader) -> str:
    """`read eu.csv as ';'-separated with decimal commas`: how a file was read, for the user."""
    return f"read {header.path} {header.how}".rstrip()


def describe_source(path: str | Path, read: ReadOptions = DEFAULT) -> str:
    """reading_line for `path` without reading its rows (a cached store's source too): the
    first bytes of a CSV file, a workbook's sheet names, a Parquet file's metadata. Checks the
    options on the way (an ambiguous delimiter, a missing sheet are errors here already)."""
    path = Path(path)
    _check_exists(path)
    kind = file_format(path)
    read.check_format(kind, path)
    if kind == "csv":
        how = f"as {sniff(path, read).describe()}"
    elif kind == "excel":
        how = excel.describe(path, excel.sheet_name(path, read.sheet)[0])
    elif kind == "parquet":
        file = parquet.open_parquet(path)
        how = parquet.describe(file)
        file.close()
    else:
        how = _HOW[kind]
    return f"read {path} {how}"


_HOW = {"sdf": "as an SD file", "smi": "as a SMILES file"}


def _open_binary(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")


# --------------------------------------------------------------------------- SD files

_PROPERTY = re.compile(rb"^>.*?<([^>]*)>")


def _sd_scan(path: Path) -> tuple[list[str], int]:
    """Names of every SD property in the file, in order of first appearance (one text pass, so
    the header is known before the first row is written, as streaming predict needs), and the
    number of `$$$$` separators (records)."""
    names: dict[str, None] = {}
    records = 0
    try:
        with _open_binary(path) as handle:
            for line in handle:
                if line.startswith(b">"):
                    found = _PROPERTY.match(line)
                    if found:
                        names.setdefault(found.group(1).decode("utf-8", "replace").strip(), None)
                elif line.startswith(b"$$$$"):
                    records += 1
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise InputError(f"{path}: cannot read SD file ({exc})") from None
    return [n for n in names if n], records


def _read_sd(path: Path, workers: int | None) -> tuple[TableHeader, Rows]:
    from molsam.chem.parallel import default_workers
    from molsam.data.sd_records import BATCH_RECORDS, parsed_records, split_records

    properties, records = _sd_scan(path)
    derived = (SD_SMILES_COLUMN, SD_NAME_COLUMN)
    shown = [f"{p} (SD)" if p in derived else p for p in properties]
    header = TableHeader(path, ",", (*derived, *shown), unit="record", how=_HOW["sdf"])
    at = {p: 2 + i for i, p in enumerate(properties)}
    width = len(header.columns)
    # Records are parsed in worker processes (molsam.data.sd_records); a pool is not worth
    # starting for a file of one batch.
    workers = (default_workers() if workers is None else workers) if records > BATCH_RECORDS else 1

    def rows() -> Rows:
        handle = _open_binary(path)
        try:
            parsed = parsed_records(split_records(handle), at, width, workers)
            for record, (cells, reason) in enumerate(parsed, start=1):
                if cells is None:
                    header.problems[record] = f"SD record {record} unreadable: {reason}"
                    cells = [""] * width
                yield record, cells
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise InputError(f"{path}: cannot read SD file ({exc})") from None
        finally:
            handle.close()

    return header, rows()


# --------------------------------------------------------------------------- SMILES files


def _read_smi(path: Path) -> tuple[TableHeader, Rows]:
    handle = _open_binary(path)

    def decoded() -> Iterator[tuple[int, str]]:
        # Line by line from bytes, so an undecodable byte is reported on its own line.
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"{path}: line {number}: not UTF-8 ({exc.reason})") from None
            if text.strip() and not text.lstrip().startswith("#"):
                yield number, text

    lines = decoded()
    try:
        first = next(lines, None)
    except (InputError, OSError, EOFError, gzip.BadGzipFile):
        handle.close()
        raise
    if first is None:
        handle.close()
        raise InputError(f"{path}: empty file (no SMILES lines)")
    words = first[1].split()
    has_header = words[0].casefold() == "smiles"
    columns = tuple(words) if has_header else (SD_SMILES_COLUMN, SD_NAME_COLUMN)
    header = TableHeader(path, " ", columns, unit="line", how=_HOW["smi"])
    width = len(columns)

    def split(line: str) -> list[str]:
        cells = [c.strip() for c in line.split(None, width - 1)]
        return cells + [""] * (width - len(cells))

    def rows() -> Rows:
        try:
            if not has_header:
                yield first[0], split(first[1])
            for number, line in lines:
                yield number, split(line)
        finally:
            handle.close()

    return header, rows()
