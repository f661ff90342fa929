"""Which columns are targets, and what their labels mean (pure functions over cells).

Target inference never guesses wrong silently. With no target columns given, every column other
than the SMILES and ID columns is looked at:

- ID or name columns by their name (`id`, `*_id`, `name`, `index`, `compound`, `cas`, ...) are
  never targets;
- by content: integers that are all unique and run in sequence (1, 2, 3, ... row numbers), text
  that is not class labels (more than 50 distinct values, or fewer than two rows per value, such
  as names), a single value, numbers mixed with text, and empty columns are never targets;
- what remains are numbers (0/1 labels or measurements) and class labels (text with 2 to 50
  distinct values). All numeric columns are targets together (classification when every label is
  0 or 1, else regression), or all class-label columns (multiclass). A file that has both cannot
  be told apart: a one-line error lists the candidates and asks for --targets
  (data.target_columns) or data.task.

Every ignored column comes back with its reason, for the CLI to print.

Multiclass labels: the classes of a column are its distinct values **sorted** (code-point order
for text; numeric order for integer labels, named by the integer, e.g. "2"), so the class order
never depends on row order or on which rows a file holds. Labels are stored as float class
indices (NaN for missing) in the same [R, T] array as binary and regression labels.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from molsam.errors import InputError

#: Cells that mean "no label" (an empty cell, or what pandas reads as NaN by default).
MISSING_LABELS = frozenset({"", "nan", "na", "n/a", "none", "null"})
#: Inferred multiclass targets have between 2 and this many classes.
MAX_CLASSES = 50
#: Column names that identify molecules rather than measure them (compared case-insensitively,
#: separators and case changes split words: `CompoundID` -> compound id).
ID_NAMES = frozenset({
    "id", "ids", "idx", "index", "name", "names", "compound", "compounds", "cmpd", "molecule",
    "mol", "no", "nr", "number", "key", "row", "code", "title",
})
#: A word that marks an identifier wherever it appears in a column name.
ID_ANYWHERE = frozenset({
    "cas", "casrn", "cid", "inchi", "inchikey", "chembl", "chemblid", "zinc", "molregno",
    "smiles", "iupac", "unnamed", "synonym", "synonyms", "identifier", "identifiers",
})
#: The last word of a name that marks it as an identifier (`mol_id`, `Compound Name`, `CAS No`).
ID_LAST = frozenset({"id", "ids", "idx", "name", "names", "no", "nr", "number"})


def is_missing(cell: str) -> bool:
    return cell.strip().casefold() in MISSING_LABELS


def _number(cell: str) -> float | None:
    try:
        value = float(cell)
    except ValueError:
        return None
    return value


def is_id_name(name: str) -> bool:
    """True for column names that identify molecules: `ID`, `mol_id`, `CompoundID`, `NAME`,
    `Compound Name`, `CAS No`, `index`, `Unnamed: 0`, `canonical_smiles`, ... (ID_NAMES as the
    whole name, ID_ANYWHERE as any word, ID_LAST as the last word)."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name.strip())
    words = [w for w in re.split(r"[^0-9a-zA-Z]+", spaced.casefold()) if w]
    if not words:
        return True
    return (
        "".join(words) in ID_NAMES or " ".join(words) in ID_NAMES
        or any(w in ID_ANYWHERE for w in words) or words[-1] in ID_LAST
    )


@dataclass(frozen=True)
class ColumnKind:
    """What a column's cells look like. kind: 'binary' (numbers, all 0/1), 'numeric' (other
    numbers), 'classes' (text class labels) or 'ignored' (never a target; `reason` says why).
    values: the distinct present values (for 'classes' and integer-only numeric columns)."""

    kind: str
    reason: str = ""
    values: tuple[str, ...] = ()
    integers: bool = False


def column_kind(name: str, cells: Sequence[str]) -> ColumnKind:
    """Classify one column by its name and content (see the module docstring)."""
    if is_id_name(name):
        return ColumnKind("ignored", "an ID or name column (by its name)")
    present = [c.strip() for c in cells if not is_missing(c)]
    if not present:
        return ColumnKind("ignored", "no values")
    numbers = [_number(c) for c in present]
    numeric = [v for v in numbers if v is not None]
    if len(numeric) == len(present):
        if any(not math.isfinite(v) for v in numeric):
            return ColumnKind("numeric")  # parse_label names the infinite cell
        integers = all(v == int(v) for v in numeric)
        if integers and len(numeric) >= 3 and all(b - a == 1 for a, b in zip(numeric, numeric[1:])):
            return ColumnKind("ignored", "unique integers in sequence (row numbers or IDs)")
        distinct = sorted(set(numeric))
        values = tuple(_integer_name(v) for v in distinct) if integers else ()
        if set(distinct) <= {0.0, 1.0}:
            return ColumnKind("binary", values=values, integers=True)
        return ColumnKind("numeric", values=values, integers=integers)
    if numeric:
        return ColumnKind("ignored", "numbers mixed with text")
    distinct = sorted(set(present))
    if len(distinct) == 1:
        return ColumnKind("ignored", f"a single value ({distinct[0]!r})")
    if len(distinct) > MAX_CLASSES or len(present) < 2 * len(distinct):
        return ColumnKind(
            "ignored", f"text with {len(distinct)} distinct values in {len(present)} rows "
            "(names, not class labels)"
        )
    return ColumnKind("classes", values=tuple(distinct))


def _integer_name(value: float) -> str:
    return str(int(value))


def describe(name: str, kind: ColumnKind) -> str:
    if kind.kind == "classes":
        return f"{name!r} ({len(kind.values)} class labels)"
    return f"{name!r} ({'0/1 labels' if kind.kind == 'binary' else 'numbers'})"


@dataclass
class TargetChoice:
    """Target column indices, the task they imply (None: no targets) and ignored columns."""

    indices: list[int]
    task: str | None
    ignored: dict[str, str] = field(default_factory=dict)


def choose_targets(
    path: Path,
    columns: Sequence[str],
    rows: Sequence[list[str]],
    exclude: set[int],
    task: str | None,
) -> TargetChoice:
    """Infer the target columns of a table (module docstring); `exclude`: SMILES and ID columns.

    Raises:
        InputError: numeric and class-label candidates both present (cannot tell which are
            meant), naming every candidate and the options that decide.
    """
    kinds = {
        i: column_kind(columns[i], [cells[i] for cells in rows])
        for i in range(len(columns)) if i not in exclude
    }
    ignored = {columns[i]: k.reason for i, k in kinds.items() if k.kind == "ignored"}
    numeric = [i for i, k in kinds.items() if k.kind in ("binary", "numeric")]
    classes = [i for i, k in kinds.items() if k.kind == "classes"]
    if task == "multiclass":
        # Declared multiclass: integer columns with few values are class labels too.
        for i in numeric:
            k = kinds[i]
            if k.integers and 2 <= len(k.values) <= MAX_CLASSES:
                classes.append(i)
            else:
                ignored[columns[i]] = "numbers, not class labels (data.task is multiclass)"
        return TargetChoice(sorted(classes), "multiclass" if classes else None, ignored)
    if task in ("classification", "regression"):
        for i in classes:
            ignored[columns[i]] = f"class labels (data.task is {task}; use multiclass for them)"
        return TargetChoice(numeric, task if numeric else None, ignored)
    if numeric and classes:
        listed = ", ".join(describe(columns[i], kinds[i]) for i in sorted(numeric + classes))
        raise InputError(
            f"{path}: cannot tell which columns are targets: {listed}; choose with --targets "
            "(data.target_columns) and/or --task (data.task)"
        )
    if classes:
        return TargetChoice(classes, "multiclass", ignored)
    if numeric:
        binary = all(kinds[i].kind == "binary" for i in numeric)
        return TargetChoice(numeric, "classification" if binary else "regression", ignored)
    return TargetChoice([], None, ignored)


def explicit_task(
    path: Path, columns: Sequence[str], rows: Sequence[list[str]], target_at: Sequence[int]
) -> str:
    """The task of explicitly chosen targets when none is given: multiclass when every target
    holds only text labels; otherwise classification (all 0/1) or regression, where a text cell
    is an error naming its row (parse_label). Text and numeric targets together are an error."""
    text, numbers = [], []
    for i in target_at:
        present = [c for cells in rows if not is_missing(c := cells[i])]
        if present and all(_number(c) is None for c in present):
            text.append(columns[i])
        else:
            numbers.append(columns[i])
    if text and numbers:
        raise InputError(
            f"{path}: targets {', '.join(map(repr, numbers))} hold numbers but "
            f"{', '.join(map(repr, text))} hold class labels; one model has one task: train them "
            "separately (or set --task)"
        )
    return "multiclass" if text else ""


def class_names(
    path: Path, column: str, cells: Sequence[tuple[int, str]], unit: str = "line"
) -> list[str]:
    """The sorted classes of one multiclass column: integer labels in numeric order (named by
    the integer), else text in code-point order. cells: (position, cell) pairs.

    Raises:
        InputError: a non-integer number among numeric labels, or fewer than two classes.
    """
    present = [(p, c.strip()) for p, c in cells if not is_missing(c)]
    numbers = [_number(c) for _, c in present]
    if present and all(v is not None for v in numbers):
        for (position, text), value in zip(present, numbers):
            if not math.isfinite(value) or value != int(value):
                raise InputError(
                    f"{path}: {unit} {position}, column {column!r}: {text!r} is not a class "
                    "label (multiclass labels are text or integers)"
                )
        names = [_integer_name(v) for v in sorted(set(numbers))]
    else:
        names = sorted({text for _, text in present})
    if len(names) < 2:
        raise InputError(
            f"{path}: column {column!r} has {len(names)} class(es) {names}; a multiclass task "
            "needs at least 2"
        )
    return names


def encode_classes(
    path: Path,
    column: str,
    cells: Sequence[tuple[int, str]],
    classes: Sequence[str],
    unit: str = "line",
) -> np.ndarray:
    """Class indices (float, NaN for missing) of (position, cell) pairs under `classes`.

    Raises:
        InputError: a label that is not one of `classes`, naming its row, column and the classes.
    """
    index = {name: i for i, name in enumerate(classes)}
    out = np.full(len(cells), np.nan, dtype=np.float32)
    for r, (position, cell) in enumerate(cells):
        if is_missing(cell):
            continue
        text = cell.strip()
        key = text if text in index else _canonical_integer(text)
        if key not in index:
            shown = ", ".join(map(repr, classes[:10])) + (", ..." if len(classes) > 10 else "")
            raise InputError(
                f"{path}: {unit} {position}, column {column!r}: {text!r} is not one of the "
                f"classes ({shown})"
            )
        out[r] = index[key]
    return out


def _canonical_integer(text: str) -> str | None:
    value = _number(text)
    if value is None or not math.isfinite(value) or value != int(value):
        return None
    return _integer_name(value)


def targets_line(
    target_names: Sequence[str],
    task: str | None,
    ignored: dict[str, str],
    classes: Sequence[Sequence[str]] | None = None,
) -> str:
    """One line for the user: the targets (with task, and classes for multiclass) and every
    column that target inference ignored, with the reason."""
    if target_names:
        shown = []
        for t, name in enumerate(target_names):
            extra = f": {', '.join(classes[t])}" if classes else ""
            shown.append(f"{name!r} ({task}{extra})")
        line = f"targets: {', '.join(shown)}"
    else:
        line = "targets: none"
    if ignored:
        line += "; ignored columns: " + ", ".join(f"{n!r} ({why})" for n, why in ignored.items())
    return line
