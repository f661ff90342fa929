"""The files chemists actually have (issue 25): `;`-separated tables with decimal commas, Excel
workbooks and Parquet files, through the one reader interface: same rows, positions a user can
find (line, sheet row, row number), the same refusals as CSV."""

from __future__ import annotations

import csv
import datetime
import sys

import numpy as np
import pytest

from molsam.config import recipe_from_dict
from molsam.data.formats import describe_source, position_unit, read_rows
from molsam.data.pipeline import DataSpec, load_store
from molsam.data.read_options import ReadOptions
from molsam.data.table import iter_table, read_table
from molsam.errors import ConfigError, InputError
from tests.conftest import SHARED_DATA, write_csv
from tests.spreadsheets import write_parquet, write_xlsx

EU = "smiles;freesolv\nCN(C)C(=O)c1ccc(cc1)OC;-11,01\nCCO;-5,0\nc1ccccc1;-0,87\n"
#: Two columns in every row on ',' and on ';', and no SMILES column name to tell them apart.
AMBIGUOUS = "mol;a,b\nCCO;1,5\nCCN;3,5\n"


# --------------------------------------------------------------------------- delimiter, decimal


def test_issue_file_semicolons_and_decimal_commas(tmp_path):
    path = write_csv(tmp_path / "eu.csv", EU)
    header, rows = iter_table(path)
    assert header.columns == ("smiles", "freesolv") and header.decimal == ","
    assert list(rows)[0] == (2, ["CN(C)C(=O)c1ccc(cc1)OC", "-11,01"])  # cells stay as read
    table = read_table(path)
    assert table.target_names == ["freesolv"] and table.task == "regression"
    np.testing.assert_array_equal(table.targets[:, 0], np.float32([-11.01, -5.0, -0.87]))
    assert describe_source(path) == f"read {path} as ';'-separated with decimal commas"


@pytest.mark.parametrize("delimiter, word", [("\t", "tab"), ("|", "'|'"), (";", "';'")])
def test_delimiters_with_decimal_points_and_quoted_cells(tmp_path, delimiter, word):
    rows = [["smiles", "name", "logS"], ["CCO", "ethanol, absolute", "1.5"],
            ["CCN", 'a "quoted" name', "-2.25"], ["C1CC", "broken", ""]]
    path = tmp_path / "t.txt"
    with open(path, "w", newline="") as handle:
        csv.writer(handle, delimiter=delimiter).writerows(rows)
    table = read_table(path, target_columns=["logS"])
    assert table.smiles == ["CCO", "CCN", "C1CC"] and table.lines.tolist() == [2, 3, 4]
    np.testing.assert_array_equal(table.targets[:2, 0], np.float32([1.5, -2.25]))
    assert describe_source(path) == f"read {path} as {word}-separated with decimal points"


def test_moleculenet_esol_as_a_european_export_reads_the_same_table(tmp_path):
    source = SHARED_DATA / "esol.csv"
    if not source.is_file():
        pytest.skip(f"{source} is not here")
    with open(source, newline="") as handle:
        rows = list(csv.reader(handle))
    eu = tmp_path / "esol_eu.csv"
    with open(eu, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter=";")
        writer.writerow(rows[0])
        writer.writerows([[c.replace(".", ",") if _number(c) else c for c in r] for r in rows[1:]])
    plain, local = read_table(source), read_table(eu)
    assert local.smiles == plain.smiles and local.target_names == plain.target_names
    assert local.ignored == plain.ignored and local.lines.tolist() == plain.lines.tolist()
    np.testing.assert_array_equal(local.targets, plain.targets)


def _number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return "." in cell


def test_a_header_cell_with_a_comma_is_told_apart_by_the_smiles_column(tmp_path):
    # Split on ',' this file has two columns in every row too; only ';' gives a SMILES column.
    path = write_csv(tmp_path / "t.csv", "smiles;logS (mol/L, 25 C)\nCCO;-1,5\nCCN;2,25\n")
    table = read_table(path)
    assert table.target_names == ["logS (mol/L, 25 C)"]
    np.testing.assert_array_equal(table.targets[:, 0], np.float32([-1.5, 2.25]))


def test_ambiguous_delimiter_says_what_was_seen_and_which_flag_decides(tmp_path):
    path = write_csv(tmp_path / "amb.csv", AMBIGUOUS)
    with pytest.raises(InputError) as error:
        read_table(path)
    message = str(error.value)
    assert message.startswith(f"{path}: cannot tell the delimiter")
    assert "2 columns on ','" in message and "2 columns on ';'" in message
    assert "--delimiter (data.delimiter)" in message and "\n" not in message
    table = read_table(path, "mol", read=ReadOptions.from_options(delimiter="semicolon"))
    assert table.target_names == ["a,b"] and table.smiles == ["CCO", "CCN"]
    np.testing.assert_array_equal(table.targets[:, 0], np.float32([1.5, 3.5]))
    header, _ = iter_table(path, read=ReadOptions(delimiter=","))
    assert header.columns == ("mol;a", "b")


def test_ambiguous_decimal_mark_names_both_cells_and_the_flag(tmp_path):
    path = write_csv(tmp_path / "mix.csv", "smiles;a;b\nCCO;1.5;2\nCCN;2;2,5\n")
    with pytest.raises(InputError, match=r"mix\.csv: cannot tell the decimal mark: line 2, "
                                         r"column 'a' has '1\.5' \(a decimal point\) and line 3, "
                                         r"column 'b' has '2,5' \(a decimal comma\); choose with "
                                         r"--decimal \(data\.decimal\)"):
        read_table(path)
    table = read_table(path, read=ReadOptions(decimal=","))
    np.testing.assert_array_equal(table.targets, np.float32([[1.5, 2], [2, 2.5]]))


def test_decimal_comma_beyond_the_sample_is_an_error_with_a_hint(tmp_path):
    body = "".join(f"CC{'C' * (i % 5)}O;{i % 3}\n" for i in range(10000))  # past SAMPLE_BYTES
    path = write_csv(tmp_path / "late.csv", "smiles;y\n" + body + "CCCCN;2,5\n")
    with pytest.raises(InputError, match=r"line 10002, column 'y': '2,5' is not a number "
                                         r"\(a decimal comma\? read it with --decimal ,"):
        read_table(path, target_columns=["y"])
    table = read_table(path, target_columns=["y"], read=ReadOptions(decimal=","))
    assert table.targets[-1, 0] == np.float32(2.5)


def test_an_explicit_delimiter_is_used_as_given(tmp_path):
    path = write_csv(tmp_path / "eu.csv", EU)
    with pytest.raises(InputError, match=r"no SMILES column 'smiles' \(columns: "
                                         r"'smiles;freesolv'\)"):
        read_table(path, read=ReadOptions(delimiter=","))
    # A different reading is a different cache entry, never the store of the other reading.
    store = load_store(DataSpec(str(path)), workers=1)
    assert store.target_names == ["freesolv"]
    with pytest.raises(InputError, match="no SMILES column"):
        load_store(DataSpec(str(path), read=ReadOptions(delimiter=",")), workers=1)


def test_options_are_checked_and_refused_where_they_do_not_apply(tmp_path):
    with pytest.raises(ConfigError, match=r"--delimiter: ':' is not one of"):
        ReadOptions.from_options(delimiter=":")
    with pytest.raises(ConfigError, match=r"--decimal: ';' is not one of"):
        ReadOptions.from_options(decimal=";")
    assert ReadOptions.from_options("tab", "comma").delimiter == "\t"
    path = write_csv(tmp_path / "t.csv", "smiles,y\nCCO,1\n")
    with pytest.raises(ConfigError, match=r"t\.csv: --sheet \(data\.sheet\) applies to Excel "
                                          r"workbooks, not CSV/TSV files"):
        iter_table(path, read=ReadOptions(sheet="Data"))
    parquet = write_parquet(tmp_path / "t.parquet", {"smiles": ["CCO"]})
    with pytest.raises(ConfigError, match=r"--delimiter \(data\.delimiter\) applies to CSV/TSV "
                                          r"files, not Parquet files"):
        iter_table(parquet, read=ReadOptions(delimiter=";"))


def test_recipe_keys_reach_the_reader(tmp_path):
    path = write_csv(tmp_path / "amb.csv", AMBIGUOUS)
    recipe = recipe_from_dict({"data": {"path": str(path), "smiles_column": "mol",
                                        "delimiter": "tab", "decimal": "comma", "sheet": "S"}})
    spec = DataSpec.from_config(recipe.data)
    assert spec.read == ReadOptions("\t", ",", "S")
    recipe = recipe_from_dict({"data": {"path": str(path), "smiles_column": "mol",
                                        "delimiter": ";"}})
    store = load_store(DataSpec.from_config(recipe.data), workers=1)
    assert store.target_names == ["a,b"] and store.y[:, 0].tolist() == [1.5, 3.5]
    with pytest.raises(ConfigError, match=r"data\.delimiter: ':' is not one of"):
        recipe_from_dict({"data": {"path": str(path), "delimiter": ":"}})
    with pytest.raises(ConfigError, match=r"data\.decimal"):
        recipe_from_dict({"data": {"path": str(path), "decimal": "point,"}})


# --------------------------------------------------------------------------- Excel


def _workbook(tmp_path, name="lib.xlsx"):
    """Header on sheet row 3 (two blank rows above, as exports with a title often have), a
    formula label with its cached value, TRUE/FALSE, an invalid SMILES, a blank row."""
    rows = [
        ["smiles", "logS", "active", "ID", "made"],
        ["CCO", 1.5, True, 101, datetime.date(2020, 1, 2)],
        ["c1ccccc1", None, False, 102, None],  # logS: a formula, B5 = B4*2
        ["C1CC", -0.25, True, 103, None],  # invalid SMILES on sheet row 6
        [None, None, None, None, None],  # blank row 7: skipped, like a blank line
        ["CCN", 3.0, False, 104, None],
    ]
    return write_xlsx(tmp_path / name, rows, first_row=3, formulas={"B5": ("B4*2", 3)},
                      other_sheets={"Other": [["smiles", "y"], ["CCCl", 7]]})


def test_excel_rows_are_sheet_rows_with_cached_formula_values(tmp_path):
    path = _workbook(tmp_path)
    header, rows = iter_table(path)
    assert header.columns == ("smiles", "logS", "active", "ID", "made")
    assert header.unit == "sheet row" == position_unit(path)
    assert list(rows) == [
        (4, ["CCO", "1.5", "1", "101", "2020-01-02"]),
        (5, ["c1ccccc1", "3", "0", "102", ""]),  # the formula's cached value, not "=B4*2"
        (6, ["C1CC", "-0.25", "1", "103", ""]),
        (8, ["CCN", "3", "0", "104", ""]),
    ]
    assert describe_source(path) == (f"read {path} as an Excel workbook, sheet 'Data' "
                                     "(formulas as their cached values)")


def test_excel_invalid_rows_report_the_sheet_row(tmp_path):
    path = _workbook(tmp_path)
    table = read_table(path, target_columns=["logS", "active"], task="regression")
    assert table.lines.tolist() == [4, 5, 6, 8]
    np.testing.assert_array_equal(table.targets[:, 0], np.float32([1.5, 3, -0.25, 3]))
    store = load_store(DataSpec(str(path), target_columns=["logS"]), workers=1)
    assert [(r.row, r.line) for r in store.invalid] == [(2, 6)]
    report = store.write_invalid_rows(tmp_path / "invalid.csv").read_text().splitlines()
    assert report[0] == "row,sheet row,smiles,reason" and report[1].startswith("2,6,C1CC,")


def test_excel_sheet_option_and_errors_name_the_sheet_row(tmp_path):
    path = _workbook(tmp_path)
    table = read_table(path, read=ReadOptions(sheet="Other"))
    assert table.smiles == ["CCCl"] and table.lines.tolist() == [2]
    with pytest.raises(InputError, match=r"lib\.xlsx: no sheet 'Nope' \(sheets: 'Data', "
                                         r"'Other'\); choose one with --sheet"):
        read_table(path, read=ReadOptions(sheet="Nope"))
    with pytest.raises(InputError, match=r"lib\.xlsx: sheet row 4, column 'made': "
                                         r"'2020-01-02' is not a number"):
        read_table(path, target_columns=["made"], task="regression")


def test_excel_bad_inputs_are_one_line(tmp_path):
    empty = tmp_path / "empty.xlsx"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.xlsx"
    corrupt.write_bytes(b"PK\x03\x04 this is not a workbook" * 10)
    blank = write_xlsx(tmp_path / "blank.xlsx", [])
    header_only = write_xlsx(tmp_path / "header.xlsx", [["smiles", "y"]])
    no_smiles = write_xlsx(tmp_path / "cols.xlsx", [["mol", "y"], ["CCO", 1]])
    twice = write_xlsx(tmp_path / "twice.xlsx", [["smiles", "y", "y"], ["CCO", 1, 2]],
                       first_row=2)
    for path, message in [
        (empty, r"empty\.xlsx: empty file \(not an Excel workbook\)"),
        (corrupt, r"corrupt\.xlsx: cannot read as an Excel workbook \("),
        (blank, r"blank\.xlsx: sheet 'Data' is empty \(no header row\)"),
        (header_only, r"header\.xlsx: no data rows below the header"),
        (no_smiles, r"cols\.xlsx: no SMILES column 'smiles' \(columns: 'mol', 'y'\)"),
        (twice, r"twice\.xlsx: sheet row 2: column 'y' appears twice"),
    ]:
        with pytest.raises(InputError, match=message) as error:
            read_table(path)
        assert "\n" not in str(error.value)


# --------------------------------------------------------------------------- Parquet


def _parquet(tmp_path, n=11, row_group_size=4):
    import pyarrow as pa

    smiles = [["CCO", "CCN", "c1ccccc1", "C1CC", "CCCl"][i % 5] for i in range(n)]
    columns = {
        "id": pa.array(range(100, 100 + n), pa.int32()),
        "smiles": smiles,
        "y": pa.array([None if i == 2 else i / 10 for i in range(n)], pa.float64()),
        "flag": [i % 2 == 0 for i in range(n)],
        "w": pa.array([0.1] * n, pa.float32()),
    }
    return write_parquet(tmp_path / "lib.parquet", columns, row_group_size=row_group_size)


def test_parquet_rows_stream_over_row_groups_as_text(tmp_path):
    import pyarrow.parquet as pq

    path = _parquet(tmp_path)
    assert pq.ParquetFile(path).metadata.num_row_groups == 3
    header, rows = iter_table(path)
    rows = list(rows)
    assert header.columns == ("id", "smiles", "y", "flag", "w") and header.unit == "row number"
    assert [p for p, _ in rows] == list(range(1, 12))
    assert rows[0][1] == ["100", "CCO", "0", "1", "0.1"]  # float32 0.1 reads as 0.1
    assert rows[2][1] == ["102", "c1ccccc1", "", "1", "0.1"]  # null: a missing label
    assert rows[10][1] == ["110", "CCO", "1", "1", "0.1"]
    table = read_table(path, target_columns=["y"])
    assert table.targets[2, 0] != table.targets[2, 0] and table.targets[5, 0] == np.float32(0.5)
    assert describe_source(path) == f"read {path} as Parquet (11 rows in 3 row groups)"


def test_parquet_invalid_rows_report_the_row_number(tmp_path):
    store = load_store(DataSpec(str(_parquet(tmp_path)), target_columns=["y"]), workers=1)
    assert [(r.row, r.line) for r in store.invalid] == [(3, 4), (8, 9)]
    report = store.write_invalid_rows(tmp_path / "invalid.csv").read_text().splitlines()
    assert report[0] == "row,row number,smiles,reason" and report[1].startswith("3,4,C1CC,")


def test_parquet_bad_inputs_are_one_line(tmp_path):
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 not really parquet PAR1")
    none = write_parquet(tmp_path / "none.parquet", {"smiles": np.array([], dtype=object)})
    cols = write_parquet(tmp_path / "cols.parquet", {"mol": ["CCO"]})
    for path, message in [
        (empty, r"empty\.parquet: empty file \(not a Parquet file\)"),
        (corrupt, r"corrupt\.parquet: cannot read as Parquet \("),
        (none, r"none\.parquet: no data rows \(a Parquet file of 0 rows\)"),
        (cols, r"cols\.parquet: no SMILES column 'smiles' \(columns: 'mol'\)"),
    ]:
        with pytest.raises(InputError, match=message) as error:
            read_table(path)
        assert "\n" not in str(error.value)


def test_a_corrupt_row_group_is_named_after_the_rows_before_it(tmp_path):
    import pyarrow.parquet as pq

    path = _parquet(tmp_path, n=12, row_group_size=4)
    column = pq.ParquetFile(path).metadata.row_group(1).column(1)  # smiles of rows 5-8
    data = bytearray(path.read_bytes())
    start = column.data_page_offset
    data[start:start + column.total_compressed_size] = b"\xff" * column.total_compressed_size
    path.write_bytes(bytes(data))
    header, rows = iter_table(path)
    read = []
    with pytest.raises(InputError, match=r"lib\.parquet: row group 2 of 3 \(row numbers 5-8\): "
                                         r"cannot read Parquet data \("):
        for position, _ in rows:
            read.append(position)
    assert read == [1, 2, 3, 4]  # rows are never shifted past the bad group


@pytest.mark.parametrize("module, name, suffix", [
    ("pyarrow", "pyarrow", ".parquet"), ("python_calamine", "python-calamine", ".xlsx")])
def test_a_missing_extra_is_one_line_saying_what_to_install(tmp_path, monkeypatch, module, name,
                                                           suffix):
    path = tmp_path / f"lib{suffix}"
    path.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, module, None)  # `import module` raises ImportError
    with pytest.raises(ConfigError) as error:
        read_rows(path)
    assert str(error.value).endswith(f"needs {name}, which is not installed: "
                                     "pip install molsam[formats]")
    assert "\n" not in str(error.value)
