"""Where predict's output rows go: CSV/TSV text, or a Parquet file (by the output's name).

Both take the same rows (molsam.predict.score_block: the kept input cells as read, prediction
cells formatted to 9 significant digits, the molsam_error cell), so every format holds the same
rows, columns and values. A Parquet output (`-o NAME.parquet`, written with pyarrow's
ParquetWriter, one row group per predict block) types its columns:

- input columns: a Parquet input's own Arrow types (re-read alongside, molsam.data.parquet.
  TypedColumns), so integers stay integers and dates dates; other inputs' cells are strings;
- prediction columns (values, probabilities, `_std`): float64, null for an invalid SMILES, each
  the float of the CSV's cell; a multiclass target's predicted class and molsam_error: strings
  (molsam_error "" when the row is valid, as in the CSV).

A Parquet output is written to a temporary file beside it, renamed into place when complete.
Excel outputs are refused: a workbook would cap outputs at 1,048,576 rows and need a writer
dependency; CSV opens in every spreadsheet.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from molsam.errors import ConfigError
from molsam.outputs import naming, output_file, temp_beside, writes_to

PARQUET_OUTPUTS = (".parquet", ".pq")
TSV_OUTPUTS = (".tsv", ".tab")
EXCEL_OUTPUTS = (".xlsx", ".xlsm", ".xls")
#: Kinds of output columns (molsam.predict.output_kinds).
INPUT, NUMBER, TEXT = "input", "number", "text"


def output_format(destination: object) -> str:
    """'parquet', 'tsv' or 'csv' (the default, stdout and streams too) from the output's name.

    Raises:
        ConfigError: an Excel name (predict does not write workbooks).
    """
    if destination is None or hasattr(destination, "write"):
        return "csv"
    name = str(destination).lower()
    if name.endswith(PARQUET_OUTPUTS):
        return "parquet"
    if name.endswith(EXCEL_OUTPUTS):
        raise ConfigError(
            f"--out {destination}: predict writes CSV, TSV or Parquet files, not Excel "
            "workbooks; name it .csv (it opens in Excel), .tsv or .parquet"
        )
    return "tsv" if name.endswith(TSV_OUTPUTS) else "csv"


class CsvRows:
    """csv.writer over a text handle; the header is written first."""

    def __init__(self, handle: TextIO, columns: Sequence[str], delimiter: str = ","):
        self._writer = csv.writer(handle, delimiter=delimiter, lineterminator="\n")
        self._writer.writerow(columns)

    def writerows(self, rows: Sequence[Sequence[str]]) -> None:
        self._writer.writerows(rows)


class ParquetRows:
    """Rows to a pyarrow ParquetWriter, typed as the module docstring says.

    columns, kinds: the output's names and kinds (INPUT, NUMBER, TEXT); typed: the input's kept
    columns with their Arrow types (a Parquet input), else None (input cells as strings)."""

    def __init__(self, path: Path, columns: Sequence[str], kinds: Sequence[str], typed=None):
        from molsam.data.parquet import pyarrow

        self.pa, pq = pyarrow(path)
        self.kinds = list(kinds)
        self.typed = typed
        types = iter(typed.fields) if typed is not None else None
        fields = []
        for name, kind in zip(columns, kinds):
            if kind == INPUT and types is not None:
                fields.append(self.pa.field(name, next(types).type))
            else:
                fields.append(self.pa.field(name, self.pa.float64() if kind == NUMBER
                                            else self.pa.string()))
        self.schema = self.pa.schema(fields)
        self._writer = pq.ParquetWriter(str(path), self.schema)

    def writerows(self, rows: Sequence[Sequence[str]]) -> None:
        pa = self.pa
        typed = iter(self.typed.take(len(rows))) if self.typed is not None else None
        arrays = []
        for at, (kind, field) in enumerate(zip(self.kinds, self.schema)):
            if kind == INPUT and typed is not None:
                arrays.append(next(typed))
            elif kind == NUMBER:
                arrays.append(pa.array([float(r[at]) if r[at] else None for r in rows],
                                       pa.float64()))
            else:
                arrays.append(pa.array([r[at] for r in rows], pa.string()))
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))

    def close(self) -> None:
        self._writer.close()


@contextmanager
def parquet_output(
    destination: str | Path, columns: Sequence[str], kinds: Sequence[str], typed=None
) -> Iterator[ParquetRows]:
    """ParquetRows into a temporary file next to `destination`, renamed over it on success and
    removed on any error (Ctrl-C too); a bad destination is one line before any work. `typed`
    (TypedColumns) is closed in every case."""
    temp = None
    try:
        path = output_file(destination, "--out")
        with writes_to(path, "--out"):
            fd, temp = temp_beside(path)  # removes the temp files of a killed predict first
        # Held open (and locked) until the end: another predict's sweep leaves it alone.
        with os.fdopen(fd, "rb"), naming(path, temp, "--out"):
            sink = ParquetRows(Path(temp), columns, kinds, typed)
            try:
                yield sink
            finally:
                sink.close()
            os.replace(temp, path)
    finally:
        if typed is not None:
            typed.close()
        if temp is not None and os.path.exists(temp):
            os.unlink(temp)
