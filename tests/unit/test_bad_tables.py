"""The rest of the bad-input corpus for tables: each refusal names the file, the line and the
column, at the right place."""

from __future__ import annotations

import csv
import gzip

import pytest

from molsam.data.pipeline import DataSpec, load_store, split_store
from molsam.data.table import read_table
from molsam.errors import InputError
from molsam.predict import load_ensemble, predict_csv
from tests.conftest import write_csv
from tests.unit.test_predict import make_run


def test_duplicate_input_columns_are_refused(tmp_path):
    path = write_csv(tmp_path / "d.csv", "smiles,p_np,p_np\nCCO,1,0\n")
    with pytest.raises(InputError, match=r"d\.csv: line 1: column 'p_np' appears twice "
                                         r"\(columns 2 and 3\); rename one"):
        read_table(path)
    # unnamed columns (trailing commas) are not names, so they are not duplicates
    assert read_table(write_csv(tmp_path / "t.csv", "smiles,y,,\nCCO,1,,\n")).target_names == ["y"]


@pytest.mark.parametrize("gz", [False, True])
def test_non_utf8_byte_is_reported_on_its_line(tmp_path, gz):
    # Far below the decoder's first read-ahead block, so the csv reader has not reached it yet.
    rows = [f"C{'C' * (i % 7)}O,{i % 2}" for i in range(3000)]
    text = ("smiles,y\n" + "\n".join(rows) + "\n").encode()
    lines = text.split(b"\n")
    lines[2500] = b"CC\xe9O,1"  # line 2501 of the file (Latin-1 e-acute)
    data = b"\n".join(lines)
    path = tmp_path / ("d.csv.gz" if gz else "d.csv")
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(InputError, match=r"line 2501: not UTF-8"):
        read_table(path)
    header_only = tmp_path / "h.csv"
    header_only.write_bytes(b"smil\xe9s,y\nCCO,1\n")
    with pytest.raises(InputError, match=r"h\.csv: line 1: not a UTF-8 text file"):
        read_table(header_only)


def test_bad_split_label_names_file_line_and_column_after_invalid_rows(tmp_path):
    path = write_csv(tmp_path / "s.csv", "smiles,y,part\nnot_a_smiles,1,train\nC1CC,0,val\n"
                                         "CCO,1,train\nCCN,0,test\nCCC,1,holdout\nCCCl,0,val\n")
    store = load_store(DataSpec(str(path), "smiles", ["y"]), workers=1)
    assert len(store.invalid) == 2  # two invalid rows above the bad label
    with pytest.raises(InputError, match=r"s\.csv: line 6, column 'part': 'holdout' is not one "
                                         r"of train, val, test"):
        split_store(store, "column", (0.8, 0.1, 0.1), 0, column="part")


def test_labels_beyond_0_1_under_classification_are_refused_at_featurize(tmp_path):
    path = write_csv(tmp_path / "labels012.csv",
                     "smiles,a,b\nCCO,1,0\nCCN,0,1\nCCC,1,2\nCCCl,,1\n")
    with pytest.raises(InputError,
                       match=r"labels012\.csv: line 4, column 'b': label 2 is not 0 or 1"):
        load_store(DataSpec(str(path), "smiles", ["a", "b"], task="classification"),
                   workers=1, use_cache=False)
    # the same labels are fine as a regression task
    store = load_store(DataSpec(str(path), "smiles", ["a", "b"], task="regression"), workers=1)
    assert store.task == "regression"


def test_predicting_a_file_molsam_wrote_keeps_one_error_column(tmp_path):
    run, _ = make_run(tmp_path / "run", steps=1)
    ensemble = load_ensemble([run], device="cpu")
    first, second, third = (tmp_path / f"p{i}.csv" for i in (1, 2, 3))
    predict_csv(ensemble, write_csv(tmp_path / "in.csv", "smiles,y\nCCO,1\nC1CC,0\n"), first,
                workers=1)
    predict_csv(ensemble, first, second, workers=1)
    predict_csv(ensemble, second, third, workers=1)
    with open(third, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["smiles", "y", "y_pred", "y_pred2", "y_pred3", "molsam_error"]
    assert len(set(rows[0])) == len(rows[0])
    assert rows[2][-1] and rows[1][-1] == ""  # C1CC is invalid; this run's reason is the one kept
    assert rows[1][2] == rows[1][3] == rows[1][4]  # the same model three times
