"""Excel workbooks (.xlsx, .xlsm, .xls) behind the table reader, read with python-calamine.

python-calamine (https://github.com/dimastbk/python-calamine) binds calamine, a Rust reader of
xlsx/xlsm/xlsb/xls/ods files. It was chosen over openpyxl because it reads the legacy binary
.xls too and is several times faster (openpyxl parses the XML in Python). It reads what the
workbook stored: a formula cell gives its cached value, the result Excel computed when the file
was last saved (never the formula text; a workbook saved by a program that does not compute
formulas has no cached value, and such a cell reads empty, like an Excel error value such as
#DIV/0! or #N/A: a missing label).

Layout: the first worksheet unless a sheet is named (--sheet, data.sheet). The first row with
any non-empty cell is the header; rows with no value are skipped, as blank lines of a CSV file
are. Positions are the sheet's own row numbers (those Excel shows), so every message and
invalid_rows.csv point at the row a chemist sees; the unit is `sheet row`.

Cells become the text a CSV export would hold, so labels, target inference and predict work as
for CSV files: numbers in the shortest form that reads back to the same float (3.0 -> `3`,
0.1 -> `0.1`), TRUE/FALSE -> `1`/`0` (0/1 labels), dates and times in ISO 8601.

Memory: calamine holds the sheet's cells while rows are read (an Excel sheet has at most
1,048,576 rows); rows are handed over one at a time.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterator
from pathlib import Path

from molsam.data.extras import require
from molsam.data.table import TableHeader, refuse_duplicate_columns
from molsam.errors import InputError

SUFFIXES = (".xlsx", ".xlsm", ".xls")
UNIT = "sheet row"

Rows = Iterator[tuple[int, list[str]]]


def cell_text(value: object) -> str:
    """A cell as the text a CSV file would hold (module docstring)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 2**53:
            return str(int(value))
        return repr(value) if math.isfinite(value) else ""
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if value is None:
        return ""
    return str(value)  # int, timedelta


def _texts(values: list) -> list[str]:
    # Text cells (SMILES, names) are most cells: they skip the function call.
    return [v if v.__class__ is str else cell_text(v) for v in values]


def _calamine():
    return require("python_calamine", "python-calamine", "reading Excel workbooks")


def sheet_name(path: Path, sheet: str | None):
    """(`sheet`, or the name of the first worksheet; the open workbook): sheet names are read
    without reading any sheet's cells.

    Raises:
        InputError: an empty file, a file that is not a workbook, a sheet name it lacks.
    """
    calamine = _calamine()
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (not an Excel workbook)")
    try:
        book = calamine.CalamineWorkbook.from_path(str(path))
        names = [m.name for m in book.sheets_metadata
                 if m.typ == calamine.SheetTypeEnum.WorkSheet]
    except (calamine.CalamineError, OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read as an Excel workbook ({_reason(exc)})") from None
    if sheet is None:
        if not names:
            raise InputError(f"{path}: the workbook has no worksheet")
        return names[0], book
    if sheet not in names:
        shown = ", ".join(map(repr, names)) or "none"
        raise InputError(
            f"{path}: no sheet {sheet!r} (sheets: {shown}); choose one with --sheet (data.sheet)"
        )
    return sheet, book


def open_sheet(path: Path, sheet: str | None):
    """(the sheet's name, the calamine sheet, its cells read) of `sheet` or the first worksheet.

    Raises:
        InputError: see sheet_name; a sheet calamine cannot read.
    """
    calamine = _calamine()
    name, book = sheet_name(path, sheet)
    try:
        return name, book.get_sheet_by_name(name)
    except (calamine.CalamineError, OSError, ValueError) as exc:
        raise InputError(f"{path}: sheet {name!r} cannot be read ({_reason(exc)})") from None


def _reason(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def describe(path: Path, sheet: str) -> str:
    """How the workbook is read, for formats.reading_line."""
    return f"as an Excel workbook, sheet {sheet!r} (formulas as their cached values)"


def read_excel(path: Path, sheet: str | None = None) -> tuple[TableHeader, Rows]:
    """Header and (sheet row, cells) of every non-empty row below it (module docstring).

    Raises:
        InputError naming the file (and sheet row): see open_sheet; an empty sheet; two columns
            of one name.
    """
    name, data = open_sheet(path, sheet)
    if data.start is None:  # no cell at all (calamine's row iterator needs one)
        raise InputError(f"{path}: sheet {name!r} is empty (no header row)")
    rows = enumerate(data.iter_rows(), start=1)  # from row 1, empty rows above the data included
    for number, values in rows:
        cells = _texts(values)
        if any(c.strip() for c in cells):
            break
    else:
        raise InputError(f"{path}: sheet {name!r} is empty (no header row)")
    header = TableHeader(path, ",", tuple(c.strip() for c in cells), unit=UNIT,
                         how=describe(path, name))
    refuse_duplicate_columns(header, number)

    def body() -> Rows:
        for number, values in rows:
            cells = _texts(values)
            if any(cells):
                yield number, cells

    return header, body()
