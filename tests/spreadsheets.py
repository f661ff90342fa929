"""Workbooks and Parquet files for the format tests, written here (no binary fixtures).

openpyxl writes formulas without the value Excel would cache next to them (it computes nothing),
so `write_xlsx` puts the cached values into the sheet's XML afterwards, as Excel's own save
would: the reader must return those values, never the formula text.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Sequence
from pathlib import Path


def write_xlsx(
    path: Path,
    rows: Sequence[Sequence[object]],
    *,
    sheet: str = "Data",
    first_row: int = 1,
    formulas: dict[str, tuple[str, object]] | None = None,
    other_sheets: dict[str, Sequence[Sequence[object]]] | None = None,
) -> Path:
    """A workbook whose sheet `sheet` (the first) holds `rows` from row `first_row` (column A);
    `formulas`: cell (e.g. "B5") -> (formula without '=', cached value); `other_sheets` follow."""
    import openpyxl

    book = openpyxl.Workbook()
    ws = book.active
    ws.title = sheet
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            if value is not None:
                ws.cell(row=first_row + r, column=c + 1, value=value)
    for cell, (formula, _) in (formulas or {}).items():
        ws[cell] = f"={formula}"
    for name, other in (other_sheets or {}).items():
        extra = book.create_sheet(name)
        for r, row in enumerate(other):
            for c, value in enumerate(row):
                extra.cell(row=r + 1, column=c + 1, value=value)
    book.save(path)
    if formulas:
        _cache_formula_values(path, formulas)
    return path


def _cache_formula_values(path: Path, formulas: dict[str, tuple[str, object]]) -> None:
    with zipfile.ZipFile(path) as source:
        entries = {info.filename: source.read(info.filename) for info in source.infolist()}
    name = "xl/worksheets/sheet1.xml"
    xml = entries[name].decode()
    for cell, (formula, value) in formulas.items():
        pattern = re.compile(rf'<c r="{cell}"([^>]*)><f>{re.escape(formula)}</f><v\s*/>')
        kind = ' t="str"' if isinstance(value, str) else ""
        xml, found = pattern.subn(
            lambda m: f'<c r="{cell}"{m.group(1)}{kind}><f>{formula}</f><v>{value}</v>', xml)
        assert found == 1, f"formula cell {cell} not found in {name}"
    entries[name] = xml.encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for filename, data in entries.items():
            target.writestr(filename, data)


def write_parquet(path: Path, columns: dict[str, object], row_group_size: int | None = None):
    """A Parquet file of `columns` (name -> list or pyarrow array), `row_group_size` rows per
    row group (several row groups for a streaming test)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(columns)
    pq.write_table(table, path, row_group_size=row_group_size)
    return path
