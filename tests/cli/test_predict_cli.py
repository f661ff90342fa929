"""`molsam predict` and `molsam evaluate` through Typer's CliRunner: outputs equal the trained
model's, stdout mode, refusals of corrupt and foreign checkpoints (exit 2, one line)."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from molsam.cli.main import app
from tests.conftest import write_csv
from tests.unit.test_predict import SMILES, make_run, reference

runner = CliRunner()


def test_predict_file_equals_trained_model_and_reports_summary(tmp_path):
    run, models = make_run(tmp_path / "run")
    inp = write_csv(tmp_path / "in.csv", "smiles\n" + "\n".join(SMILES + ["C1CC"]) + "\n")
    out = tmp_path / "pred.csv"
    result = runner.invoke(app, ["predict", str(run / "seed_0" / "best.pt"), str(inp),
                                 "-o", str(out), "--workers", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert f"{len(SMILES) + 1} rows, {len(SMILES)} valid, 1 invalid" in result.stderr
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    expected = reference(models, SMILES, "classification")[0, :, 0]
    np.testing.assert_allclose([float(r["y"]) for r in rows[:-1]], expected, atol=1e-6)
    assert rows[-1]["y"] == "" and "parse error" in rows[-1]["molsam_error"]


def test_predict_without_out_writes_csv_to_stdout_only(tmp_path):
    run, _ = make_run(tmp_path / "run", seeds=(0, 1), steps=1)
    inp = write_csv(tmp_path / "in.csv", "smiles\nCCO\nCCN\n")
    result = runner.invoke(app, ["predict", str(run), str(inp), "--workers", "1"])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["smiles", "y", "y_std", "molsam_error"] and len(rows) == 3
    assert "2 rows, 2 valid, 0 invalid" in result.stderr
    assert "rows" not in result.stdout  # the summary never pollutes the CSV
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "run"]


@pytest.mark.parametrize("kind", ["corrupt", "foreign", "version", "pickle"])
def test_bad_checkpoint_is_refused_in_one_line(tmp_path, kind):
    run, _ = make_run(tmp_path / "run", steps=1)
    bad = tmp_path / "bad.pt"
    if kind == "corrupt":
        data = (run / "seed_0" / "best.pt").read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    elif kind == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, bad)
    elif kind == "version":
        ckpt = torch.load(run / "seed_0" / "best.pt", weights_only=True)
        torch.save({**ckpt, "format_version": 99}, bad)
    else:  # an arbitrary Python object must never be unpickled
        torch.save({"format": "molsam-checkpoint", "payload": np.random.default_rng(0)}, bad)
    inp = write_csv(tmp_path / "in.csv", "smiles\nCCO\n")
    out = tmp_path / "out.csv"
    for command in (["predict", str(bad), str(inp), "-o", str(out)], ["evaluate", str(bad)]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {bad}"), result.stderr
        assert "Traceback" not in result.output
    assert not out.exists()


def test_missing_smiles_column_is_one_line(tmp_path):
    run, _ = make_run(tmp_path / "run", steps=1)
    inp = write_csv(tmp_path / "in.csv", "name,mol\na,CCO\n")
    result = runner.invoke(app, ["predict", str(run), str(inp), "-o", str(tmp_path / "o.csv")])
    assert result.exit_code == 2
    assert "no SMILES column 'smiles'" in result.stderr and "--smiles-col" in result.stderr
    result = runner.invoke(app, ["predict", str(run), str(inp), "--smiles-col", "mol",
                                 "-o", str(tmp_path / "o.csv"), "--workers", "1"])
    assert result.exit_code == 0, result.output


def test_evaluate_run_directory_writes_table_and_json(tmp_path):
    run, _ = make_run(tmp_path / "run", seeds=(0, 1), steps=2)
    out = tmp_path / "eval.json"
    result = runner.invoke(app, ["evaluate", str(run), "--out", str(out), "--device", "cpu",
                                 "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "roc_auc" in result.stdout and "ensemble of 2" in result.stdout
    report = json.loads(out.read_text())
    assert report["split"] == "test" and report["n"] == 4
    assert len(report["members"]) == 2 and report["ensemble"]["n"] == 4
