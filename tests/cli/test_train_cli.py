"""`molsam train` through Typer's CliRunner: the quickstart recipe, every run-dir artifact."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from molsam.cli.main import app
from molsam.config import load_recipe
from molsam.train.checkpoint import load_checkpoint
from tests.conftest import ROOT

runner = CliRunner()
TINY = ["--set", "model.hidden=16", "--set", "model.layers=1", "--set", "model.heads=2",
        "--set", "train.epochs=2", "--set", "train.workers=1"]


def test_quickstart_writes_every_run_artifact(tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(ROOT / "recipes/quickstart.yaml"), "--out", str(run),
                                 *TINY, "--set", "optim.rho=0.02"])
    assert result.exit_code == 0, result.output
    assert "test rmse:" in result.output
    for name in ("recipe.yaml", "splits.json", "summary.json", "curves.png",
                 "seed_0/best.pt", "seed_0/last.pt", "seed_0/metrics.csv"):
        assert (run / name).is_file(), name
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    resolved = load_recipe(run / "recipe.yaml")  # the resolved recipe re-runs as is
    assert resolved.optim.rho == 0.02 and resolved.model.hidden == 16
    assert yaml.safe_load((run / "recipe.yaml").read_text())["train"]["epochs"] == 2
    summary = json.loads((run / "summary.json").read_text())
    assert summary["molecules"] == 1017 and summary["test"]["mean"]["rmse"]["n"] == 1
    splits = json.loads((run / "splits.json").read_text())
    assert sum(len(splits[p]["indices"]) for p in ("train", "val", "test")) == 1017
    best = load_checkpoint(run / "seed_0/best.pt")
    assert best["target_names"] == ["activity"] and best["scaler"] is not None
    assert best["training_state"] is None  # best.pt is inference-only; last.pt resumes
    assert load_checkpoint(run / "seed_0/last.pt")["training_state"]["early_stopping"]["finished"]
    lines = (run / "seed_0/metrics.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,train_loss,val_rmse") and len(lines) == 3


def test_config_errors_are_one_line(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {path: chembl2321810}\noptim: {rhoo: 0.1}\n")
    result = runner.invoke(app, ["train", str(recipe), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert result.output.strip() == "error: optim.rhoo: unknown key (did you mean 'rho'?)"
    result = runner.invoke(app, ["train", str(ROOT / "recipes/quickstart.yaml"),
                                 "--set", "train.device=gpu", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "train.device: 'gpu' is not one of auto, cpu, cuda" in result.output
    assert not (tmp_path / "o").exists()  # rejected before any work


def test_resume_of_a_missing_run_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "not a run directory (no recipe.yaml)" in result.output


def test_epoch_lines_show_validation_not_test():
    """Per epoch the log shows loss and validation; test appears only in the final summary."""
    from molsam.cli.train import _epoch_line

    line = _epoch_line({"seed": 0, "epoch": 3, "epochs": 30, "loss": 0.5, "metric": "rmse",
                        "val": 1.2345, "test": 0.9876, "graphs_per_s": 900.0, "best": True})
    assert "val rmse 1.2345" in line and "test" not in line and "0.9876" not in line
