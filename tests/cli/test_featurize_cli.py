"""`molsam featurize` and `molsam datasets` through Typer's CliRunner."""

from __future__ import annotations

import csv
import json

from typer.testing import CliRunner

from molsam.cli.main import app
from tests.conftest import write_csv

runner = CliRunner()


def test_featurize_writes_store_splits_and_invalid_report(tmp_path):
    data = write_csv(
        tmp_path / "mols.csv",
        "id,smiles,active\n" + "".join(
            f"m{i},{s},{i % 2}\n"
            for i, s in enumerate(["CCO", "C1CC", "c1ccccc1", "CCN", "CC(=O)O", "CCCl",
                                   "c1ccncc1", "C1CCCCC1", "OCC(O)CO", "CC#N"])
        ),
    )
    out = tmp_path / "out"
    result = runner.invoke(app, ["featurize", str(data), "--id-col", "id", "--split", "random",
                                 "--seed", "3", "--out", str(out), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "10 rows, 9 valid, 1 invalid" in result.output
    assert (out / "store.pt").is_file()
    splits = json.loads((out / "splits.json").read_text())
    assert splits["method"] == "random" and splits["seed"] == 3
    n = sum(len(splits[p]["indices"]) for p in ("train", "val", "test"))
    assert n == 9
    with open(out / "invalid_rows.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows == [{"row": "1", "line": "3", "smiles": "C1CC",
                     "reason": "SMILES parse error: 'C1CC' is not valid SMILES syntax"}]


def test_featurize_named_dataset(tmp_path, raw_data_dir):
    result = runner.invoke(app, ["featurize", "clintox", "--out", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert "1484 rows, 1480 valid, 4 invalid" in result.output


def test_featurize_errors_are_one_line(tmp_path):
    data = write_csv(tmp_path / "m.csv", "smi,y\nCCO,1\n")
    result = runner.invoke(app, ["featurize", str(data), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert "no SMILES column 'smiles' (columns: 'smi', 'y')" in result.output
    result = runner.invoke(app, ["featurize", "no_such_dataset_or_file"])
    assert result.exit_code == 2 and "no such file" in result.output
    result = runner.invoke(app, ["featurize", str(data), "--smiles-col", "smi", "--split", "bogus",
                                 "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "'bogus' is not one of scaffold" in result.output


def test_datasets_lists_and_resolves_builtin():
    result = runner.invoke(app, ["datasets"])
    assert result.exit_code == 0 and "chembl2321810" in result.output
    result = runner.invoke(app, ["datasets", "chembl2321810"])
    assert result.exit_code == 0 and result.output.strip().endswith("chembl2321810.csv")
