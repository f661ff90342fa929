"""CLI paths the audit found untested: evaluate's --split all, --data and --batch-size,
`train --resume`, and `--version`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from typer.testing import CliRunner

import molsam
from molsam.cli.main import app
from molsam.train.checkpoint import load_checkpoint
from molsam.train.run import train_recipe
from tests.conftest import write_csv
from tests.integration.test_train import _fixture_csv, _recipe, _weights, train_until_interrupted
from tests.unit.test_predict import SMILES, labels, make_run, reference

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"molsam {molsam.__version__}"


def test_evaluate_split_all_data_and_batch_size(tmp_path):
    run, models = make_run(tmp_path / "run", "classification", steps=3)
    p = reference(models, SMILES, "classification")[0, :, 0]
    y = labels("classification")
    out = tmp_path / "all.json"
    result = runner.invoke(app, ["evaluate", str(run), "--split", "all", "--batch-size", "3",
                                 "--device", "cpu", "--workers", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["split"] == "all" and report["n"] == len(SMILES)
    scores = report["members"][0]["metrics"]["tasks"]["y"]
    assert scores["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p), abs=1e-9)
    # --data: another file, scored whole; one invalid row left out, a missing label masked
    rows = [("CCO", "1"), ("C1CC", "0"), ("c1ccccc1", "0"), ("CCN", ""), ("CCCl", "1"),
            ("CC#N", "0"), ("CC(=O)O", "1")]
    ext = write_csv(tmp_path / "ext.csv", "smiles,y\n" + "".join(f"{s},{v}\n" for s, v in rows))
    out = tmp_path / "ext.json"
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(ext), "--batch-size", "2",
                                 "--device", "cpu", "--workers", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["n"] == 6
    scored = ["CCO", "c1ccccc1", "CCCl", "CC#N", "CC(=O)O"]
    q = reference(models, scored, "classification")[0, :, 0]
    assert report["members"][0]["metrics"]["tasks"]["y"]["roc_auc"] == pytest.approx(
        skm.roc_auc_score([1, 0, 1, 0, 1], q), abs=1e-9)
    assert f"{report['n']} molecules" in result.output


def test_train_resume_from_the_cli(tmp_path):
    data = _fixture_csv(tmp_path, "bbbp.csv", 32)
    recipe = _recipe(data, optim={"name": "adam"}, train={"epochs": 3})
    train_recipe(recipe, tmp_path / "full")

    train_until_interrupted(recipe, tmp_path / "cut", after_epoch=0)
    refused = runner.invoke(app, ["train", "--resume", str(tmp_path / "cut"),
                                  "--set", "train.epochs=5"])
    assert refused.exit_code == 2 and "--set cannot change a run that is resumed" in refused.output
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "cut")])
    assert result.exit_code == 0, result.output
    assert f"run directory: {tmp_path / 'cut'}" in result.output
    last = load_checkpoint(tmp_path / "cut/seed_0/last.pt")
    assert last["epoch"] == 2 and last["training_state"]["early_stopping"]["finished"]
    full, cut = _weights(tmp_path / "full/seed_0/last.pt"), _weights(tmp_path / "cut/seed_0/last.pt")
    assert all(torch.equal(full[k], cut[k]) for k in full)
    assert np.isfinite(json.loads((tmp_path / "cut/summary.json").read_text())[
        "train_seconds"]["mean"])
