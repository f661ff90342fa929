"""Issue 23 on the command line: `molsam calibrate` rewrites a run's checkpoints with calibration
fitted on other labelled data; `molsam evaluate` reports uncertainty beside accuracy and writes
its PNGs; `--target` scores a renamed label column; checkpoints written before any of this still
load, evaluate and calibrate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from molsam.cli.main import app
from molsam.config import recipe_from_dict
from molsam.evaluate import evaluate
from molsam.train.calibration import entry_of, member_id
from molsam.train.checkpoint import load_checkpoint, save_checkpoint
from molsam.train.run import train_recipe
from tests.conftest import SHARED_DATA
from tests.integration.test_train import TINY_MODEL
from tests.unit.test_predict import make_run

runner = CliRunner()


def _rows(name: str, start: int, stop: int, header: str | None = None) -> str:
    lines = (SHARED_DATA / name).read_text().splitlines()
    return (header or lines[0]) + "\n" + "\n".join(lines[1 + start : 1 + stop]) + "\n"


def _train(tmp_path: Path, name: str, seeds=(0,), **train) -> Path:
    data = tmp_path / name
    data.write_text(_rows(name, 0, 40))
    recipe = recipe_from_dict({
        "data": {"path": str(data)},
        "split": {"method": "random", "sizes": [0.6, 0.2, 0.2], "seed": 0},
        "model": TINY_MODEL,
        "train": {"epochs": 2, "batch_size": 8, "seeds": list(seeds), "workers": 1,
                  "device": "cpu", **train},
    })
    train_recipe(recipe, tmp_path / "run")
    return tmp_path / "run"


def test_calibrate_refits_on_a_file_and_rewrites_every_checkpoint(tmp_path):
    run = _train(tmp_path, "esol.csv", seeds=(0, 1), loss="mve")
    paths = [run / "seed_0/best.pt", run / "seed_1/best.pt"]
    before = [load_checkpoint(p) for p in paths]
    assert all(entry_of(c["calibration"])["fitted_on"]["split"] == "val" for c in before)
    # 40 other molecules whose label column has another name
    other = tmp_path / "other.csv"
    other.write_text(_rows("esol.csv", 40, 80, header="smiles,measured"))

    result = runner.invoke(app, ["calibrate", str(run), "--data", str(other), "--target",
                                 "logSolubility=measured", "--alpha", "0.2", "--device", "cpu",
                                 "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "40 molecules" in result.output and "ensemble of 2" in result.output
    after = [load_checkpoint(p) for p in paths]
    for old, new in zip(before, after):
        model = entry_of(new["calibration"])
        assert model["fitted_on"]["split"] == "all" and model["fitted_on"]["n"] == 40
        assert "other.csv" in model["fitted_on"]["data"]
        assert model["alpha"] == 0.2
        assert model["calibrators"]["conformal"]["alpha"] == 0.2
        assert model["calibrators"]["conformal"]["counts"] == [40]
        joint = entry_of(new["calibration"], [member_id(c) for c in after])
        assert joint["sigma"] == "ensemble_mve" and joint["fitted_on"]["n"] == 40
        for key in ("model_state",):
            assert all(torch.equal(old[key][k], new[key][k]) for k in old[key])
        for key in ("target_names", "recipe", "created", "loss", "scaler", "epoch"):
            assert old[key] == new[key], key
    assert not list(run.glob("seed_*/.best.pt.*"))  # written atomically: no temp file left

    # The run's own saved split (val by default, or another part)
    result = runner.invoke(app, ["calibrate", str(paths[0]), "--split", "test",
                                 "--device", "cpu", "--workers", "1"])
    assert result.exit_code == 0, result.output
    alone = load_checkpoint(paths[0])["calibration"]
    assert alone["model"]["fitted_on"]["split"] == "test"
    assert alone["ensemble"] == after[0]["calibration"]["ensemble"]  # kept when alone

    for bad, message in (
        (["--alpha", "1.5"], "--alpha: expected a miscoverage in (0, 1)"),
        (["--split", "holdout"], "--split: 'holdout' is not one of"),
        (["--target", "logSolubility"], "--target: expected MODEL_TASK=COLUMN"),
    ):
        result = runner.invoke(app, ["calibrate", str(run), *bad, "--device", "cpu"])
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1


def test_evaluate_reports_regression_uncertainty_and_writes_pngs(tmp_path):
    run = _train(tmp_path, "esol.csv", seeds=(0, 1), loss="mve")
    out = tmp_path / "scores.json"
    result = runner.invoke(app, ["evaluate", str(run), "--out", str(out), "--device", "cpu",
                                 "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "uncertainty" in result.output and "by similarity to the training set" in result.output
    assert "sigma (ensemble): members' variance heads" in result.output
    saved = json.loads(out.read_text())
    report = saved["uncertainty"]["ensemble"]
    assert set(report["calibrated"]["mean"]) == {"nll", "spearman", "miscalibration_area",
                                                  "ence", "coverage", "width"}
    assert set(report["uncalibrated"]["mean"]) == {"nll", "spearman", "miscalibration_area",
                                                    "ence"}
    assert len(saved["uncertainty"]["members"]) == 2
    assert all(m["sigma"] == "mve" for m in saved["uncertainty"]["members"])
    for name in ("scores.reliability.png", "scores.error_vs_sigma.png"):
        assert (out.parent / name).read_bytes()[:4] == b"\x89PNG", name
    assert sorted(Path(p).name for p in saved["plots"]) == ["scores.error_vs_sigma.png",
                                                            "scores.reliability.png"]

    # Error by training-similarity tercile, measured independently with RDKit.
    from rdkit import Chem, DataStructs
    from rdkit.Chem import rdFingerprintGenerator

    splits = json.loads((run / "splits.json").read_text())
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    train = [generator.GetFingerprint(Chem.MolFromSmiles(s)) for s in splits["train"]["smiles"]]
    nearest = np.array([max(DataStructs.BulkTanimotoSimilarity(
        generator.GetFingerprint(Chem.MolFromSmiles(s)), train)) for s in splits["test"]["smiles"]])
    binned = report["by_similarity"]
    expected = [nearest.min(), *np.quantile(nearest, [1 / 3, 2 / 3]), nearest.max()]
    assert binned["edges"] == pytest.approx(expected)
    assert sum(b["n"] for b in binned["bins"]) == len(nearest) == saved["n"]
    assert saved["uncertainty"]["similarity"]["train_molecules"] == len(train)


def test_evaluate_reports_ece_and_brier_before_and_after_calibration(tmp_path):
    run = _train(tmp_path, "bbbp.csv")
    out = tmp_path / "eval.json"
    result = runner.invoke(app, ["evaluate", str(run), "--split", "val", "--out", str(out),
                                 "--device", "cpu", "--workers", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())["uncertainty"]["members"][0]
    for name in ("uncalibrated", "temperature", "isotonic"):
        assert report[name]["mean"]["ece"] is not None and report[name]["mean"]["brier"] is not None
    # Brier of the isotonic map on the molecules it was fitted on: never above the raw one.
    assert report["isotonic"]["mean"]["brier"] <= report["uncalibrated"]["mean"]["brier"] + 1e-12
    assert (tmp_path / "eval.reliability.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "eval.error_vs_sigma.png").exists()  # classification: no sigma


def test_target_maps_a_renamed_label_column(tmp_path):
    run = _train(tmp_path, "esol.csv")
    same = tmp_path / "same.csv"
    same.write_text(_rows("esol.csv", 40, 70))
    renamed = tmp_path / "renamed.csv"
    renamed.write_text(_rows("esol.csv", 40, 70, header="smiles,measured"))
    reference = evaluate([run], str(same), device="cpu", workers=1)
    mapped = evaluate([run], str(renamed), device="cpu", workers=1,
                      targets={"logSolubility": "measured"})
    assert mapped.final == reference.final and mapped.n == 30
    assert mapped.targets == {"logSolubility": "measured"}

    result = runner.invoke(app, ["evaluate", str(run), "--data", str(renamed), "--target",
                                 "logSolubility=measured", "--device", "cpu", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "logSolubility from column 'measured'" in result.output
    for options, message in (
        ([], "no label column 'logSolubility' the model predicts (columns: 'smiles', "
             "'measured'); --target logSolubility=COLUMN scores another column"),
        (["--target", "solubility=measured"], "--target solubility=measured: the model has no "
                                              "task 'solubility'"),
        (["--target", "logSolubility=absent"], "no label column 'absent' "
                                               "(--target logSolubility=absent)"),
        (["--target", "=measured"], "--target: expected MODEL_TASK=COLUMN, got '=measured'"),
    ):
        result = runner.invoke(app, ["evaluate", str(run), "--data", str(renamed), *options,
                                     "--device", "cpu", "--workers", "1"])
        assert result.exit_code == 2 and message in result.output, result.output
    result = runner.invoke(app, ["evaluate", str(run), "--target", "logSolubility=measured",
                                 "--device", "cpu"])
    assert result.exit_code == 2 and "--target names label columns of --data" in result.output


def _as_old(path: Path) -> None:
    """Remove the keys checkpoints gained with issue 23, as one written before it."""
    ckpt = load_checkpoint(path)
    del ckpt["loss"], ckpt["calibration"]
    save_checkpoint(path, ckpt)
    assert "loss" not in torch.load(path, weights_only=True)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_old_checkpoints_still_evaluate_and_calibrate(tmp_path, task):
    run, _ = make_run(tmp_path / "run", task, seeds=(0, 1), steps=2)
    for seed in (0, 1):
        _as_old(run / f"seed_{seed}/best.pt")
    out = tmp_path / "eval.json"
    result = runner.invoke(app, ["evaluate", str(run), "--out", str(out), "--device", "cpu",
                                 "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "calibration (ensemble): none stored" in result.output
    saved = json.loads(out.read_text())
    report = saved["uncertainty"]["ensemble"]
    assert report["calibration"] is None
    if task == "classification":
        assert report["uncalibrated"]["mean"]["ece"] is not None and report["temperature"] is None
    else:  # two MSE models: the spread of their predictions is a sigma
        assert report["sigma"] == "ensemble" and report["calibrated"] is None
        assert report["uncalibrated"]["mean"]["nll"] is not None
        assert saved["uncertainty"]["members"][0]["uncalibrated"] is None  # one MSE model
    assert saved["ensemble"] == evaluate([run], device="cpu", workers=1).ensemble

    result = runner.invoke(app, ["calibrate", str(run), "--device", "cpu", "--workers", "1"])
    assert result.exit_code == 0, result.output
    ckpt = load_checkpoint(run / "seed_0/best.pt")
    assert "loss" not in ckpt and entry_of(ckpt["calibration"])["fitted_on"]["split"] == "val"
    calibrated = evaluate([run], device="cpu", workers=1).final_uncertainty
    assert calibrated["calibration"] is not None
    if task == "regression":
        assert calibrated["calibrated"]["mean"]["coverage"] is not None


def test_multiclass_runs_store_temperature_and_evaluate_reports_it(tmp_path):
    from tests.solubility import write_solubility_csv, write_solubility_sdf

    table = write_solubility_csv(write_solubility_sdf(tmp_path / "sol.sdf", n=36, bad_record=None),
                                 tmp_path / "sol.csv")
    recipe = recipe_from_dict({
        "data": {"path": str(table), "target_columns": ["SOL_classification"]},
        "split": {"method": "random", "sizes": [0.5, 0.3, 0.2], "seed": 0},
        "model": {**TINY_MODEL, "pe_steps": 4},
        "train": {"epochs": 1, "batch_size": 8, "workers": 1, "device": "cpu"},
    })
    train_recipe(recipe, tmp_path / "run")
    entry = entry_of(load_checkpoint(tmp_path / "run/seed_0/best.pt")["calibration"])
    assert set(entry["calibrators"]) == {"temperature"}
    assert entry["calibrators"]["temperature"]["num_classes"] == [3]

    out = tmp_path / "eval.json"
    result = runner.invoke(app, ["evaluate", str(tmp_path / "run"), "--data", str(table),
                                 "--out", str(out), "--device", "cpu", "--workers", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())["uncertainty"]["members"][0]
    assert report["isotonic"] is None and report["temperature"]["mean"]["ece"] is not None
    assert report["by_similarity"]["error"] == "Brier score"
    run = evaluate([tmp_path / "run"], str(table), device="cpu", workers=1)
    p, y = run.arrays["outputs"].values, run.arrays["y"][:, 0].astype(int)
    brier = np.mean(np.sum((p - np.eye(3)[y]) ** 2, axis=1))
    assert report["uncalibrated"]["mean"]["brier"] == pytest.approx(brier)
    assert (tmp_path / "eval.reliability.png").read_bytes()[:4] == b"\x89PNG"
