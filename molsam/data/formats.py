"""Input formats behind one reader interface: a header (column names) and rows with a position.

Every reader returns `(TableHeader, rows)` where rows yields `(position, cells)`: the position is
what a message names (`header.unit`: a file line for CSV/TSV and SMILES files, a record number
for SD files), the cells are strings in header order. So label parsing, target inference,
invalid-row reports and row-preserving prediction work the same for every format.

- CSV/TSV (.csv, .tsv, .tab, anything else; .gz too): molsam.data.table.iter_table (which
  hands every other format to `read_rows`, so its callers read all formats).
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
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from molsam.data.table import TableHeader, iter_table
from molsam.errors import InputError

#: Part of the featurization cache key: bump when a reader turns the same file into other rows.
#: 2: SD records parsed one by one (a record that overruns its `$$$$` no longer hides the next).
READER_VERSION = 2
SD_SUFFIXES = (".sdf", ".sd")
SMI_SUFFIXES = (".smi", ".smiles")
SD_SMILES_COLUMN = "smiles"
SD_NAME_COLUMN = "name"

Rows = Iterator[tuple[int, list[str]]]


def file_format(path: str | Path) -> str:
    """'sdf', 'smi' or 'csv' (the default: CSV/TSV), from the name with any .gz removed."""
    name = Path(path).name.lower().removesuffix(".gz")
    if name.endswith(SD_SUFFIXES):
        return "sdf"
    if name.endswith(SMI_SUFFIXES):
        return "smi"
    return "csv"


def position_unit(path: str | Path) -> str:
    """What a row position counts in messages and reports: 'record' for SD files, else 'line'."""
    return "record" if file_format(path) == "sdf" else "line"


def read_rows(path: str | Path, workers: int | None = 1) -> tuple[TableHeader, Rows]:
    """Open any supported file; return its header and an iterator of (position, cells).

    Streams: only the current row (or a few batches of SD records) is held in memory.
    `workers`: processes that parse SD records (None: all cores); 1 parses them here, as a
    caller that is itself one of many workers (Ray Data's readers) wants.

    Raises:
        InputError naming the file (and line or record): missing file, a folder, empty file,
        undecodable text, malformed rows.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a CSV, TSV, SD or SMILES file")
    kind = file_format(path)
    if kind == "sdf":
        return _read_sd(path, workers)
    if kind == "smi":
        return _read_smi(path)
    return iter_table(path)


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
    header = TableHeader(path, ",", (*derived, *shown), unit="record")
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
    header = TableHeader(path, " ", columns, unit="line")
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
