"""SD and SMILES files behind the table reader: columns, positions, unreadable records."""

from __future__ import annotations

import gzip

import pytest
from rdkit import Chem

from molsam.data.store import GraphStore
from molsam.data.table import iter_table, read_table
from molsam.errors import InputError
from tests.solubility import molecules, write_solubility_sdf

SD_COLUMNS = ("smiles", "name", "ID", "NAME", "SOL", "SOL_classification")


def test_sd_file_rows_keep_properties_and_record_numbers(tmp_path):
    path = write_solubility_sdf(tmp_path / "sol.sdf", n=6, bad_record=3)
    header, rows = iter_table(path)
    rows = list(rows)
    assert header.columns == SD_COLUMNS and header.unit == "record"
    assert [p for p, _ in rows] == list(range(1, 8))
    assert rows[2][1] == [""] * 6  # the unreadable record is a row, never skipped or shifted
    assert "SD record 3 unreadable" in header.problems[3] and "valence" in header.problems[3]
    assert set(header.problems) == {3}
    expected = [Chem.MolToSmiles(m) for m in molecules(6)]
    assert [cells[0] for _, cells in rows if cells[0]] == expected
    assert rows[3][1][1:4] == ["nci-3", "3", "compound C2"]  # record 4 holds molecule 3
    assert rows[6][1][2] == "6"


def test_sd_gz_reads_the_same_rows(tmp_path):
    plain = write_solubility_sdf(tmp_path / "a.sdf", n=5, bad_record=2)
    packed = tmp_path / "a.sdf.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    a_header, a_rows = iter_table(plain)
    b_header, b_rows = iter_table(packed)
    assert list(a_rows) == list(b_rows) and a_header.columns == b_header.columns
    assert b_header.problems.keys() == {2}


def test_sd_labels_and_invalid_record_report(tmp_path):
    path = write_solubility_sdf(tmp_path / "sol.sdf", n=6, bad_record=3)
    table = read_table(path, target_columns=["SOL"])
    assert table.task == "regression" and table.lines.tolist() == list(range(1, 8))
    assert table.problems.keys() == {2}  # data row 2 is record 3
    store = GraphStore.from_table(table, rwse_steps=4, workers=1)
    assert len(store) == 6 and [(r.row, r.line) for r in store.invalid] == [(2, 3)]
    assert store.invalid[0].reason.startswith("SD record 3 unreadable")
    report = store.write_invalid_rows(tmp_path / "invalid.csv").read_text().splitlines()
    assert report[0] == "row,record,smiles,reason" and report[1].startswith("2,3,,")


def test_sd_label_error_names_the_record(tmp_path):
    path = write_solubility_sdf(tmp_path / "sol.sdf", n=6, bad_record=None)
    with pytest.raises(InputError, match=r"sol.sdf: record 1, column 'NAME': 'compound A0' is not"):
        read_table(path, target_columns=["NAME", "SOL"], task="regression")


def test_sd_property_named_like_a_derived_column_is_kept_apart(tmp_path):
    mol = Chem.MolFromSmiles("CCO")
    mol.SetProp("_Name", "ethanol")
    mol.SetProp("smiles", "OCC")
    path = tmp_path / "p.sdf"
    with Chem.SDWriter(str(path)) as writer:
        writer.write(mol)
    header, rows = iter_table(path)
    assert header.columns == ("smiles", "name", "smiles (SD)")
    assert list(rows) == [(1, ["CCO", "ethanol", "OCC"])]


def test_smiles_file_with_and_without_header(tmp_path):
    plain = tmp_path / "a.smi"
    plain.write_text("CCO ethanol, absolute\n\n# a comment\nc1ccccc1\tbenzene\nC1CC\n")
    header, rows = iter_table(plain)
    assert header.columns == ("smiles", "name")
    assert list(rows) == [(1, ["CCO", "ethanol, absolute"]), (4, ["c1ccccc1", "benzene"]),
                          (5, ["C1CC", ""])]
    labeled = tmp_path / "b.smi"
    labeled.write_text("SMILES Name SOL\nCCO ethanol 0.5\nCCN ethylamine 1.5\n")
    table = read_table(labeled, smiles_column="SMILES")
    assert table.target_names == ["SOL"] and table.targets[:, 0].tolist() == [0.5, 1.5]
    assert table.ignored == {"Name": "an ID or name column (by its name)"}


def test_smiles_file_non_utf8_byte_names_its_line(tmp_path):
    path = tmp_path / "bad.smi"
    path.write_bytes(b"CCO a\nCCN b\nCC\xff c\nCCC d\n")
    header, rows = iter_table(path)
    with pytest.raises(InputError, match=r"bad.smi: line 3: not UTF-8"):
        list(rows)


def test_rdkit_shipped_sd_file_reads_with_its_own_properties():
    from tests.solubility import NCI

    table = read_table(NCI, target_columns=["CLOGP"])
    assert len(table) == 200 and table.task == "regression" and not table.problems
    with open(NCI, "rb") as handle:
        first = next(Chem.ForwardSDMolSupplier(handle))
    assert table.smiles[0] == Chem.MolToSmiles(first)  # the structure, not a text property
    assert table.targets[0, 0] == pytest.approx(float(first.GetProp("CLOGP")))
    header, _ = iter_table(NCI)
    assert {"SMILES", "ISM", "AMW"} <= set(header.columns) and header.columns[:2] == ("smiles",
                                                                                      "name")


def test_empty_sd_file_is_one_line(tmp_path):
    path = tmp_path / "empty.sdf"
    path.write_text("")
    with pytest.raises(InputError, match=r"empty.sdf: no SD records"):
        read_table(path)
