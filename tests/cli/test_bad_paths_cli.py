"""Output and data paths that cannot work are refused in one line (exit 2), before any work:
an existing file as an output folder, a read-only folder, a folder as an output file, a folder
as data."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from molsam.cli.main import app
from tests.conftest import write_csv
from tests.unit.test_predict import make_run

runner = CliRunner()


def _one_line_error(result, text: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], result.output
    assert "Traceback" not in result.output


@pytest.fixture
def data(tmp_path):
    return write_csv(tmp_path / "d.csv", "smiles,y\nCCO,1\nCCN,0\nCCC,1\nCCCl,0\n")


def test_featurize_out_that_is_a_file(tmp_path, data):
    taken = write_csv(tmp_path / "taken", "x\n")
    result = runner.invoke(app, ["featurize", str(data), "--out", str(taken), "--workers", "1"])
    _one_line_error(result, "is an existing file, expected a folder")
    assert taken.read_text() == "x\n"


def test_read_only_output_folders(tmp_path, data, monkeypatch):
    run, _ = make_run(tmp_path / "run", steps=1)
    # Root writes anywhere whatever the mode bits, so the permission answer is simulated.
    monkeypatch.setattr("molsam.outputs._writable", lambda folder: False)
    result = runner.invoke(app, ["featurize", str(data), "--out", str(tmp_path / "f"),
                                 "--workers", "1"])
    _one_line_error(result, "is not writable")
    assert not (tmp_path / "f").exists()
    result = runner.invoke(app, ["predict", str(run), str(data), "-o", str(tmp_path / "p.csv"),
                                 "--workers", "1"])
    _one_line_error(result, f"folder {tmp_path} is not writable")


def test_write_failure_midway_is_one_line(tmp_path, data, monkeypatch):
    run, _ = make_run(tmp_path / "run", steps=1)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "x"))

    monkeypatch.setattr("molsam.predict.tempfile.mkstemp", refuse)
    result = runner.invoke(app, ["predict", str(run), str(data), "-o", str(tmp_path / "p.csv"),
                                 "--workers", "1"])
    _one_line_error(result, "Permission denied")


def test_evaluate_out_that_is_a_folder(tmp_path):
    run, _ = make_run(tmp_path / "run", steps=1)
    (tmp_path / "report").mkdir()
    result = runner.invoke(app, ["evaluate", str(run), "--out", str(tmp_path / "report")])
    _one_line_error(result, "is a folder, expected a file name")


def test_data_path_that_is_a_folder(tmp_path):
    (tmp_path / "folder").mkdir()
    recipe = write_csv(tmp_path / "r.yaml", f"data: {{path: {tmp_path / 'folder'}}}\n")
    result = runner.invoke(app, ["train", str(recipe), "--out", str(tmp_path / "o")])
    _one_line_error(result, "is a folder, expected a data file")
    result = runner.invoke(app, ["featurize", str(tmp_path / "folder")])
    _one_line_error(result, "is a folder, expected a data file")
