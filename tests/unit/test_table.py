"""Reading real-world tables: BOM, CRLF, quoted headers, whitespace, missing labels, bad input."""

from __future__ import annotations

import gzip
import math

import numpy as np
import pytest

from molsam.data.table import infer_task, read_table
from molsam.errors import InputError
from tests.conftest import write_csv


def test_bom_crlf_quoted_header_whitespace_and_missing_labels(tmp_path):
    path = write_csv(
        tmp_path / "odd.csv",
        '\ufeffsmiles,"tox, liver",id,score\n'
        "  CCO ,1,m1,0.5\n"
        'c1ccccc1,,"m,2",1.5\n'
        "CC(=O)O,0,m3,\n",
        newline="\r\n",
    )
    table = read_table(path, id_column="id")
    assert table.smiles == ["CCO", "c1ccccc1", "CC(=O)O"]
    assert table.target_names == ["tox, liver", "score"]
    assert table.ids == ["m1", "m,2", "m3"]
    assert table.targets[0].tolist() == [1.0, 0.5]
    assert math.isnan(table.targets[1, 0]) and math.isnan(table.targets[2, 1])
    assert table.lines.tolist() == [2, 3, 4]


def test_tsv_and_gzip(tmp_path):
    tsv = write_csv(tmp_path / "a.tsv", "smiles\ty\nCCO\t1.0\nCCN\t2.0\n")
    assert read_table(tsv).targets[:, 0].tolist() == [1.0, 2.0]
    gz = tmp_path / "a.csv.gz"
    gz.write_bytes(gzip.compress(b"smiles,y\nCCO,3\n"))
    assert read_table(gz).targets.tolist() == [[3.0]]


def test_default_targets_are_the_numeric_columns(tmp_path):
    path = write_csv(tmp_path / "t.csv", "name,smiles,a,b,note\nx,CCO,1,,hello\ny,CCN,0,2.5,bye\n")
    table = read_table(path)
    assert table.target_names == ["a", "b"]


def test_missing_column_lists_existing_columns(tmp_path):
    path = write_csv(tmp_path / "t.csv", "SMILE,y\nCCO,1\n")
    with pytest.raises(InputError) as info:
        read_table(path)
    message = str(info.value)
    assert "t.csv" in message and "'smiles'" in message and "'SMILE', 'y'" in message
    assert "\n" not in message


def test_smiles_column_matches_case_insensitively(tmp_path):
    path = write_csv(tmp_path / "t.csv", "SMILES,y\nCCO,1\n")
    assert read_table(path).smiles == ["CCO"]


def test_missing_target_column(tmp_path):
    path = write_csv(tmp_path / "t.csv", "smiles,y\nCCO,1\n")
    with pytest.raises(InputError, match=r"no target column 'z'.*'smiles', 'y'"):
        read_table(path, target_columns=["z"])


def test_non_numeric_label_names_line_and_column(tmp_path):
    path = write_csv(tmp_path / "t.csv", "smiles,y\nCCO,1\nCCN,active\n")
    with pytest.raises(InputError, match=r"t.csv: line 3, column 'y': 'active' is not a number"):
        read_table(path, target_columns=["y"])


def test_empty_file_and_header_only(tmp_path):
    with pytest.raises(InputError, match="empty file"):
        read_table(write_csv(tmp_path / "e.csv", ""))
    with pytest.raises(InputError, match="no data rows"):
        read_table(write_csv(tmp_path / "h.csv", "smiles,y\n"))


def test_missing_file_and_too_many_fields(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_table(tmp_path / "absent.csv")
    path = write_csv(tmp_path / "w.csv", "smiles,y\nCCO,1,2\n")
    with pytest.raises(InputError, match="line 2: 3 fields, but the header has 2"):
        read_table(path)


def test_na_spellings_are_missing_labels(tmp_path):
    path = write_csv(tmp_path / "t.csv", "smiles,y\nC,NA\nCC,nan\nCCC, \nCCCC,1\n")
    assert np.isnan(read_table(path).targets[:3, 0]).all()


def test_infer_task():
    assert infer_task(np.array([[0.0], [1.0], [np.nan]])) == "classification"
    assert infer_task(np.array([[0.0], [0.5]])) == "regression"
