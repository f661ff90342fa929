"""Parquet files behind the table reader, and the typed input columns a Parquet output keeps.

Read with pyarrow (https://arrow.apache.org/docs/python/parquet.html): `ParquetFile.iter_batches`
decodes one row group at a time into record batches of at most BATCH_ROWS rows, so memory stays
flat whatever the file's size (a corrupt row group is an error naming it and its rows). Columns
are the schema's field names; positions are row numbers counted from 1 (unit `row number`; a
Parquet file has no lines). Every row is a row, an all-null one included.

Cells become the text a CSV export would hold, so labels, target inference and predict work as
for CSV files: Arrow's own cast to string for numbers (shortest round-trip form: 0.1 -> `0.1`,
3.0 -> `3`), strings, dates and decimals; booleans -> `1`/`0` (0/1 labels); null -> empty (a
missing label); nested values (lists, structs) as Python writes them.

`TypedColumns` re-reads the same file in the same order for a Parquet output, which keeps every
input column with its Arrow type (molsam.predict_writers).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from molsam.data.extras import require
from molsam.data.table import TableHeader, refuse_duplicate_columns
from molsam.errors import InputError

SUFFIXES = (".parquet", ".pq")
UNIT = "row number"
#: Rows decoded at a time: one predict block (molsam.predict.BLOCK_ROWS).
BATCH_ROWS = 8192

Rows = Iterator[tuple[int, list[str]]]


def pyarrow(path: object = None):
    """(pyarrow, pyarrow.parquet), or a one-line error naming the file and the extra to install."""
    purpose = f"{path}: reading or writing Parquet" if path else "reading or writing Parquet"
    return require("pyarrow", "pyarrow", purpose), require("pyarrow.parquet", "pyarrow", purpose)


def open_parquet(path: Path):
    """A pyarrow ParquetFile, or an InputError naming the file (empty, not Parquet, corrupt)."""
    pa, pq = pyarrow(path)
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (not a Parquet file)")
    try:
        return pq.ParquetFile(str(path))
    except (pa.ArrowException, OSError, ValueError) as exc:  # ArrowInvalid: not Parquet
        raise InputError(f"{path}: cannot read as Parquet ({_reason(exc)})") from None


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def describe(file) -> str:
    """How the file is read, for formats.reading_line: `as Parquet (N rows in M row groups)`."""
    meta = file.metadata
    groups = meta.num_row_groups
    return f"as Parquet ({meta.num_rows} rows in {groups} row group{'s' if groups != 1 else ''})"


def column_text(array) -> list[str]:
    """One Arrow column as the text cells of the module docstring."""
    pa, _ = pyarrow()
    import pyarrow.compute as pc

    kind = array.type
    if pa.types.is_dictionary(kind):  # categorical columns (pandas' category dtype)
        array = array.dictionary_decode()
        kind = array.type
    if pa.types.is_boolean(kind):
        return ["" if v is None else ("1" if v else "0") for v in array.to_pylist()]
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        values = array.to_pylist()
    elif pa.types.is_nested(kind) or pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        values = [None if v is None else str(v) for v in array.to_pylist()]
    else:
        try:
            values = pc.cast(array, pa.string()).to_pylist()
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
            values = [None if v is None else str(v) for v in array.to_pylist()]
    return ["" if v is None else v for v in values]


def read_parquet(path: Path) -> tuple[TableHeader, Rows]:
    """Header (the schema's names) and (row number, cells) of every row, one row group at a
    time. Raises InputError naming the file (and the row group) for a file pyarrow cannot read."""
    file = open_parquet(path)
    columns = tuple(name.strip() for name in file.schema_arrow.names)
    if not columns:
        raise InputError(f"{path}: a Parquet file without columns")
    header = TableHeader(path, ",", columns, unit=UNIT, how=describe(file))
    refuse_duplicate_columns(header, None)

    pa, _ = pyarrow(path)

    def rows() -> Rows:
        number, groups = 0, file.metadata.num_row_groups
        try:
            for group in range(groups):  # one row group at a time: an error can name it
                first = number + 1
                try:
                    batches = file.iter_batches(batch_size=BATCH_ROWS, row_groups=[group],
                                                use_threads=False)
                    for batch in batches:
                        texts = [column_text(column) for column in batch.columns]
                        for cells in zip(*texts):
                            number += 1
                            yield number, list(cells)
                except (pa.ArrowException, OSError, ValueError) as exc:  # a corrupt page
                    last = first + file.metadata.row_group(group).num_rows - 1
                    raise InputError(
                        f"{path}: row group {group + 1} of {groups} ({UNIT}s {first}-{last}): "
                        f"cannot read Parquet data ({_reason(exc)})"
                    ) from None
        finally:
            file.close()

    return header, rows()


class TypedColumns:
    """The input file's columns `kept` (indices), `n` rows at a time, with their Arrow types:
    a second pass over a Parquet file in the order the reader gave its rows."""

    def __init__(self, path: Path, kept: list[int]):
        self.path = path
        self.file = open_parquet(path)
        self.kept = kept
        self.schema = self.file.schema_arrow
        self._batches = self.file.iter_batches(batch_size=BATCH_ROWS, use_threads=False)
        self._buffer: list = []  # record batches not yet handed out
        self._buffered = 0

    @property
    def fields(self) -> list:
        return [self.schema.field(i) for i in self.kept]

    def take(self, n: int) -> list:
        """The next n rows of the kept columns: one Arrow array per column."""
        pa, _ = pyarrow()
        while self._buffered < n:
            batch = next(self._batches, None)
            if batch is None:
                raise InputError(f"{self.path}: the file changed while it was read")
            self._buffer.append(batch)
            self._buffered += batch.num_rows
        table = pa.Table.from_batches(self._buffer, schema=self.schema)
        head, rest = table.slice(0, n), table.slice(n)
        self._buffer = rest.to_batches() if rest.num_rows else []
        self._buffered = rest.num_rows
        return [head.column(i).combine_chunks() for i in self.kept]

    def close(self) -> None:
        self.file.close()
