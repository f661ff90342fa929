"""`molsam sharpness` on a tiny two-replicate run: one row per replicate plus their mean, JSON
with every measurement, landscape CSV/PNG per replicate, one-line errors."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from molsam.cli.main import app
from tests.unit.test_predict import make_run

runner = CliRunner()
FAST = ["--steps", "2", "--iters", "2", "--probes", "2", "-j", "1", "--device", "cpu"]


def test_run_directory_gives_one_row_per_replicate_json_and_landscapes(tmp_path):
    run, _ = make_run(tmp_path / "run", "classification", seeds=(0, 1))
    result = runner.invoke(app, ["sharpness", str(run), "--rho", "0.01", "--rho", "0.05,0.1",
                                 "--landscape", "--points", "5", "--grid", "3", *FAST])
    assert result.exit_code == 0, result.output
    for text in ("seed_0/best.pt", "seed_1/best.pt", "mean +- std", "S(rho=0.05)", "(train split"):
        assert text in result.output, text
    report = json.loads((run / "sharpness.json").read_text())
    assert [r["checkpoint"] for r in report["replicates"]] == [
        str(run / "seed_0" / "best.pt"), str(run / "seed_1" / "best.pt")]
    first = report["replicates"][0]
    assert [s["rho"] for s in first["rho_sharpness"]] == [0.01, 0.05, 0.1]
    assert first["split"] == "train" and first["n"] == 16
    assert first["top_eigenvalue"]["iterations"] <= 2 and first["trace"]["probes"] == 2
    assert len(first["landscape"]["1d"]["losses"]) == 5
    assert report["summary"]["sharpness@0.05"]["n"] == 2
    for seed in (0, 1):
        folder = run / "sharpness" / f"seed_{seed}"
        assert (folder / "landscape_2d.png").read_bytes()[:4] == b"\x89PNG"
        assert len((folder / "landscape_2d.csv").read_text().splitlines()) == 1 + 3 * 3
        assert len((folder / "landscape_1d.csv").read_text().splitlines()) == 1 + 5


def test_checkpoint_on_val_split_to_chosen_file_without_landscape(tmp_path):
    run, _ = make_run(tmp_path / "run", "regression")
    out = tmp_path / "s.json"
    result = runner.invoke(app, ["sharpness", str(run / "seed_0" / "best.pt"), "--split", "val",
                                 "--rho", "0.02", "--out", str(out), *FAST])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    (only,) = report["replicates"]
    assert only["split"] == "val" and only["n"] == 4 and only["landscape"] is None
    assert "mean +- std" not in result.output
    assert not (tmp_path / "s").exists()  # no landscape folder without --landscape


def test_errors_are_one_line(tmp_path):
    run, _ = make_run(tmp_path / "run", "classification")
    cases = [
        (["--rho", "0.01,abc"], "error: --rho: 'abc' is not a number"),
        (["--rho", "-0.1"], "error: --rho: -0.1 is not a finite number >= 0"),
        (["--tol", "0"], "error: --tol: 0.0 is not a number > 0"),
        (["--split", "dev"], "error: --split: 'dev' is not one of test, val, train, all"),
    ]
    for options, message in cases:
        result = runner.invoke(app, ["sharpness", str(run), *options, *FAST])
        assert result.exit_code == 2 and result.output.strip() == message, result.output
    result = runner.invoke(app, ["sharpness", str(tmp_path / "nothing.pt"), *FAST])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "nothing.pt" in result.output
    result = runner.invoke(app, ["sharpness", str(run), "--out", str(tmp_path / "no" / "s.json"),
                                 *FAST])
    assert result.exit_code == 2
    assert result.output.strip() == (f"error: --out {tmp_path / 'no' / 's.json'}: folder "
                                     f"{tmp_path / 'no'} does not exist")
