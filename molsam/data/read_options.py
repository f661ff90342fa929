"""How to read a data file when detection is not wanted: --delimiter, --decimal, --sheet on the
command line, data.delimiter, data.decimal, data.sheet in a recipe.

None everywhere means detect (molsam.data.dialect) or take the first sheet. An option that does
not apply to the file's format is an error, never ignored: `--sheet` on a CSV file most likely
means the wrong file was given.
"""

from __future__ import annotations

from dataclasses import dataclass

from molsam.data.dialect import decimal_option, delimiter_option
from molsam.errors import ConfigError

#: formats.file_format's kinds, as messages name them.
FORMAT_NAMES = {"csv": "CSV/TSV", "sdf": "SD", "smi": "SMILES", "excel": "Excel",
                "parquet": "Parquet"}


@dataclass(frozen=True)
class ReadOptions:
    """delimiter: `,` `;` `\\t` `|` or None (detect); decimal: `.` `,` or None (detect; a
    comma only for non-comma delimiters); sheet: an Excel sheet name or None (the first)."""

    delimiter: str | None = None
    decimal: str | None = None
    sheet: str | None = None

    @classmethod
    def from_options(
        cls, delimiter: str | None = None, decimal: str | None = None, sheet: str | None = None,
        *, keys: tuple[str, str, str] = ("--delimiter", "--decimal", "--sheet"),
    ) -> ReadOptions:
        """Validated options from the user's spellings (`tab`, `comma`, ...); `keys` name the
        options in messages (the CLI flags, or the recipe keys)."""
        if sheet is not None and not sheet.strip():
            raise ConfigError(f"{keys[2]}: expected a sheet name, got {sheet!r}")
        return cls(delimiter_option(delimiter, keys[0]), decimal_option(decimal, keys[1]), sheet)

    @classmethod
    def from_recipe(cls, data: object) -> ReadOptions:
        """From a recipe's data section: a DataConfig or its dict (a checkpoint's recipe; one
        written before these keys existed has none of them)."""
        get = data.get if isinstance(data, dict) else lambda key: getattr(data, key, None)
        return cls.from_options(
            get("delimiter"), get("decimal"), get("sheet"),
            keys=("data.delimiter", "data.decimal", "data.sheet"),
        )

    def check_format(self, kind: str, path: object) -> None:
        """Refuse options that do not apply to a file of format `kind` (formats.file_format)."""
        shown = FORMAT_NAMES.get(kind, kind)
        if self.delimiter is not None and kind != "csv":
            raise ConfigError(
                f"{path}: --delimiter (data.delimiter) applies to CSV/TSV files, not {shown} files"
            )
        if self.sheet is not None and kind != "excel":
            raise ConfigError(
                f"{path}: --sheet (data.sheet) applies to Excel workbooks, not {shown} files"
            )

    def cache_key(self) -> dict:
        return {"delimiter": self.delimiter, "decimal": self.decimal, "sheet": self.sheet}


DEFAULT = ReadOptions()
