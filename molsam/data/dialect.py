"""Delimiter and decimal mark of a delimited text table, told from its header and first rows.

Chemists' tables come from spreadsheets saved in their locale: `;`-separated with decimal commas
(`-11,01`) in much of Europe, tab-separated from copy-paste, `|` from some databases. Reading such
a file as comma-separated gives one column named `smiles;freesolv`, so the dialect is detected
instead of assumed, from the first SAMPLE_BYTES of the file:

- Delimiter: each of `,` `;` tab `|` splits the header and the sampled rows (Python's csv module,
  so quoted fields count as one); a delimiter that splits the header into 2 or more columns scores
  the number of rows with exactly the header's width. The best score wins. A tie is broken by the
  header: the delimiter under which one header cell is a SMILES column name (`smiles`,
  `canonical_smiles`, ...) wins; otherwise the file is ambiguous and the error says what each
  delimiter gave and that --delimiter (data.delimiter) decides. A header that no delimiter splits
  is one column (a list of SMILES). `.tsv` and `.tab` files are tab-separated.
- Decimal mark: a decimal comma only when the delimiter is not a comma and the sampled cells hold
  numbers that parse only that way (`-11,01`) and none with a decimal point (`-11.01`); both kinds
  is ambiguous (the error names a cell of each and --decimal, data.decimal). Thousands separators
  are not read: `1.234,5` is not a number.

csv.Sniffer is not used: it guesses from character frequencies and quietly picks a wrong
delimiter on short files (and has no notion of a decimal mark).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from molsam.errors import ConfigError, InputError

#: The delimiters detected, with the word a message uses for each.
DELIMITERS = {",": "','", ";": "';'", "\t": "tab", "|": "'|'"}
#: Spellings accepted by --delimiter and data.delimiter (a tab is awkward to type).
DELIMITER_NAMES = {",": ",", ";": ";", "\t": "\t", "|": "|", "\\t": "\t", "tab": "\t",
                   "comma": ",", "semicolon": ";", "pipe": "|"}
DECIMAL_NAMES = {".": ".", ",": ",", "point": ".", "comma": ","}
#: Bytes of the file the dialect is told from (the header and, typically, hundreds of rows).
SAMPLE_BYTES = 1 << 16

_COMMA_NUMBER = re.compile(r"[+-]?(?:\d+,\d*|,\d+)(?:[eE][+-]?\d+)?")
_POINT_NUMBER = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?")
_SMILES_NAME = re.compile(r"\w*smiles\w*")


@dataclass(frozen=True)
class Dialect:
    delimiter: str
    decimal: str = "."

    def describe(self) -> str:
        """`';'-separated with decimal commas`, as the read line states it."""
        marks = "commas" if self.decimal == "," else "points"
        name = DELIMITERS.get(self.delimiter, repr(self.delimiter))
        return f"{name}-separated with decimal {marks}"


def delimiter_option(value: str | None, option: str = "--delimiter") -> str | None:
    """The delimiter a user named (`;`, `tab`, `\\t`, ...), or None (detect)."""
    if value is None:
        return None
    if value not in DELIMITER_NAMES:
        raise ConfigError(
            f"{option}: {value!r} is not one of ',', ';', '|', tab (also: comma, semicolon, pipe)"
        )
    return DELIMITER_NAMES[value]


def decimal_option(value: str | None, option: str = "--decimal") -> str | None:
    """The decimal mark a user named (`.`, `,`, `point`, `comma`), or None (detect)."""
    if value is None:
        return None
    if value not in DECIMAL_NAMES:
        raise ConfigError(f"{option}: {value!r} is not one of '.', ',' (also: point, comma)")
    return DECIMAL_NAMES[value]


def comma_decimal(cell: str) -> str:
    """`-11,01` -> `-11.01`; any other cell unchanged (text, or a number with a point)."""
    if "," not in cell:
        return cell
    text = cell.strip()
    return text.replace(",", ".") if _COMMA_NUMBER.fullmatch(text) else cell


def looks_like_comma_decimal(cell: str) -> bool:
    return _COMMA_NUMBER.fullmatch(cell.strip()) is not None


def sample_lines(raw: bytes, truncated: bool) -> list[str]:
    """Decoded lines of the first bytes of a file (CRLF or LF; a UTF-8 BOM dropped). The last
    line is dropped when the sample cut it; sampling stops before an undecodable line (the reader
    names that line when it gets there). Raises UnicodeDecodeError for the first line only."""
    lines = raw.split(b"\n")
    if truncated and len(lines) > 1:
        lines = lines[:-1]
    out = []
    for number, line in enumerate(lines, start=1):
        try:
            out.append(line.decode("utf-8-sig" if number == 1 else "utf-8").rstrip("\r"))
        except UnicodeDecodeError:
            if number == 1:
                raise
            break
    return out


def detect(
    path: Path, lines: Sequence[str], delimiter: str | None = None, decimal: str | None = None
) -> Dialect:
    """The dialect of a table whose first lines are `lines` (the header first); `delimiter` and
    `decimal` (already normalized) are used as given.

    Raises:
        InputError: the delimiter or the decimal mark cannot be told (what was seen, and the
            option that decides).
    """
    if delimiter is None:
        name = path.name.lower().removesuffix(".gz")
        delimiter = "\t" if name.endswith((".tsv", ".tab")) else _detect_delimiter(path, lines)
    if decimal is None:
        decimal = "." if delimiter == "," else _detect_decimal(path, lines, delimiter)
    return Dialect(delimiter, decimal)


def _split(lines: Sequence[str], delimiter: str) -> list[tuple[int, list[str]]]:
    """(line number, cells) of each non-blank row the csv module reads from `lines`."""
    reader = csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter)
    rows = []
    try:
        for cells in reader:
            if cells and not (len(cells) == 1 and not cells[0].strip()):
                rows.append((reader.line_num, cells))
    except csv.Error:
        pass  # a quoted field the sample cut: the rows before it are evidence enough
    return rows


def _detect_delimiter(path: Path, lines: Sequence[str]) -> str:
    scores: dict[str, tuple[int, int, list[str]]] = {}  # delimiter -> (score, width, header)
    for delimiter in DELIMITERS:
        rows = _split(lines, delimiter)
        if not rows or len(rows[0][1]) < 2:
            continue
        width = len(rows[0][1])
        scores[delimiter] = (sum(len(c) == width for _, c in rows[1:]), width, rows[0][1])
    if not scores:
        return ","  # one column: a list of SMILES
    best = max(score for score, _, _ in scores.values())
    tied = [d for d, (score, _, _) in scores.items() if score == best]
    if len(tied) > 1:
        named = [d for d in tied
                 if any(_SMILES_NAME.fullmatch(c.strip().casefold()) for c in scores[d][2])]
        if len(named) == 1:
            return named[0]
        seen = " and ".join(f"{scores[d][1]} columns on {DELIMITERS[d]}" for d in tied)
        rows = len(_split(lines, tied[0])) - 1
        raise InputError(
            f"{path}: cannot tell the delimiter: the header and first {rows} rows split into "
            f"{seen}; choose with --delimiter (data.delimiter)"
        )
    return tied[0]


def _detect_decimal(path: Path, lines: Sequence[str], delimiter: str) -> str:
    rows = _split(lines, delimiter)
    header = [c.strip() for c in rows[0][1]] if rows else []
    comma = point = None
    for line, cells in rows[1:]:
        for at, cell in enumerate(cells):
            text = cell.strip()
            if comma is None and _COMMA_NUMBER.fullmatch(text):
                comma = (line, at, text)
            elif point is None and _POINT_NUMBER.fullmatch(text):
                point = (line, at, text)
        if comma and point:
            def where(found: tuple[int, int, str]) -> str:
                line, at, text = found
                column = f", column {header[at]!r}" if at < len(header) else ""
                return f"line {line}{column} has {text!r}"

            raise InputError(
                f"{path}: cannot tell the decimal mark: {where(point)} (a decimal point) and "
                f"{where(comma)} (a decimal comma); choose with --decimal (data.decimal)"
            )
    return "," if comma else "."
