"""SD records parsed in worker processes give the rows, record numbers and RDKit messages (line
numbers included) of one supplier reading the whole file, and a record that overruns its `$$$$`
no longer hides the next one."""

from __future__ import annotations

import gzip
import io

import pytest
from rdkit import Chem, rdBase

from molsam.chem import parallel
from molsam.data import table as table_module
from molsam.data import sd_records
from molsam.data.table import iter_table
from tests.solubility import BAD_RECORD, write_solubility_sdf


def _one_supplier_rows(path, columns):
    """The previous reader, verbatim in substance: one ForwardSDMolSupplier over the file."""
    at = {name: i for i, name in enumerate(columns) if i >= 2}
    opener = gzip.open if path.suffix == ".gz" else open
    rows, problems = [], {}
    with opener(path, "rb") as handle:
        supplier = Chem.ForwardSDMolSupplier(handle, sanitize=True, removeHs=True)
        record = 0
        while True:
            with rdBase.CaptureErrorLog() as capture:
                try:
                    mol = next(supplier)
                except StopIteration:
                    break
            record += 1
            cells = [""] * len(columns)
            if mol is None:
                problems[record] = (
                    f"SD record {record} unreadable: {sd_records.rdkit_reason(capture.messages)}"
                )
            else:
                cells[0] = Chem.MolToSmiles(mol)
                cells[1] = mol.GetProp("_Name").strip() if mol.HasProp("_Name") else ""
                for name in mol.GetPropNames():
                    if name in at:
                        cells[at[name]] = mol.GetProp(name).strip()
            rows.append((record, cells))
    return rows, problems


@pytest.mark.parametrize("name, workers", [("many.sdf", 2), ("many.sdf.gz", 2), ("many.sdf", 1)])
def test_workers_read_what_one_supplier_reads(tmp_path, name, workers):
    # 151 records: three batches, the unsanitizable one in the second (line numbers shifted)
    path = write_solubility_sdf(tmp_path / name, n=150, bad_record=70)
    header, rows = iter_table(path, workers=workers)
    rows = list(rows)
    expected_rows, expected_problems = _one_supplier_rows(path, header.columns)
    assert len(rows) == 151 > 2 * sd_records.BATCH_RECORDS
    assert rows == expected_rows
    assert header.problems == expected_problems and set(header.problems) == {70}
    assert "ending on line" in header.problems[70]  # a file line number, as before


def test_a_record_overrunning_its_separator_hides_no_other_record(tmp_path):
    good = Chem.MolToMolBlock(Chem.MolFromSmiles("CCO")) + "$$$$\n"
    lines = good.splitlines(keepends=True)
    # a record that declares 3 atoms but holds 2 atom lines: its parser reads the `$$$$` line
    cut = "".join(lines[:6]) + "$$$$\n"
    path = tmp_path / "cut.sdf"
    path.write_text(good + cut + good + good)
    header, rows = iter_table(path)
    rows = list(rows)
    # one supplier over the file yields 3 records here (the good one after `cut` vanishes)
    assert len(_one_supplier_rows(path, header.columns)[0]) == 3
    assert [position for position, _ in rows] == [1, 2, 3, 4]
    assert [cells[0] for _, cells in rows] == ["CCO", "", "CCO", "CCO"]
    # the `$$$$` it read is line 7 of the record and line 18 of the file (11 lines precede it)
    assert set(header.problems) == {2} and "'$$$$' on line 18" in header.problems[2]


def test_an_overrunning_record_reads_the_same_wherever_a_batch_ends(tmp_path):
    good = Chem.MolToMolBlock(Chem.MolFromSmiles("CCO")) + "$$$$\n"
    cut = "".join(good.splitlines(keepends=True)[:6]) + "$$$$\n"
    size = sd_records.BATCH_RECORDS
    for at in (size - 1, size, size + 5):  # last of a batch, first of the next, inside one
        path = tmp_path / f"cut{at}.sdf"
        path.write_text(good * at + cut + good * 3)
        header, rows = iter_table(path)
        smiles = [cells[0] for _, cells in rows]
        assert smiles == ["CCO"] * at + [""] + ["CCO"] * 3, at
        assert set(header.problems) == {at + 1}
        assert f"on line {11 * at + 7}" in header.problems[at + 1]


def test_split_records_counts_the_lines_before_each_record():
    text = b"a\nM  END\n$$$$\nb\n\nM  END\n$$$$\r\n\n  \n"
    records = list(sd_records.split_records(io.BytesIO(text)))
    assert records == [(0, b"a\nM  END\n$$$$\n"), (3, b"b\n\nM  END\n$$$$\r\n")]  # blank tail
    unterminated = list(sd_records.split_records(io.BytesIO(b"x\n$$$$\ny\nM  END\n")))
    assert unterminated == [(0, b"x\n$$$$\n"), (2, b"y\nM  END\n")]
    assert BAD_RECORD.count("$$$$") == 1


def test_read_table_parses_sd_records_on_all_cores(tmp_path, monkeypatch):
    monkeypatch.setattr(parallel, "default_workers", lambda: 2)  # a pool on any machine
    started = []
    start_pool = parallel.start_pool
    monkeypatch.setattr(parallel, "start_pool", lambda n: started.append(n) or start_pool(n))
    path = write_solubility_sdf(tmp_path / "many.sdf", n=100, bad_record=None)
    table = table_module.read_table(path, target_columns=["SOL"])
    assert started == [2] and len(table) == 100
    assert table.smiles == [cells[0] for _, cells in _one_supplier_rows(path, (
        "smiles", "name", "ID", "NAME", "SOL", "SOL_classification"))[0]]
