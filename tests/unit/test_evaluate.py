"""molsam.evaluate: a run directory's saved test split is re-scored by default, metrics equal
sklearn's on the same predictions, ensembles score the mean prediction, --data scores a file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from molsam.errors import ConfigError, InputError
from molsam.evaluate import evaluate
from tests.conftest import write_csv
from tests.unit.test_predict import SMILES, labels, make_run, reference


def test_run_directory_rescored_on_saved_test_split_like_sklearn(tmp_path):
    run, models = make_run(tmp_path / "run", "classification", seeds=(0, 1))
    test = json.loads((run / "splits.json").read_text())["test"]
    # The store of the tiny data keeps every row, so store indices are row positions.
    smiles = [SMILES[i] for i in test["indices"]]
    assert smiles == test["smiles"]
    y = labels("classification")[test["indices"]]
    assert len(np.unique(y)) == 2
    per_member = reference(models, smiles, "classification")[:, :, 0]

    result = evaluate([run], device="cpu", workers=1)
    assert result.split == "test" and result.n == len(smiles)
    for (path, scores), p in zip(result.members, per_member):
        task = scores["tasks"]["y"]
        assert task["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p), abs=1e-9)
        assert task["prc_auc"] == pytest.approx(skm.average_precision_score(y, p), abs=1e-9)
        assert task["accuracy"] == pytest.approx(skm.accuracy_score(y, p >= 0.5))
        assert task["f1"] == pytest.approx(skm.f1_score(y, p >= 0.5, zero_division=0.0))
        assert task["balanced_accuracy"] == pytest.approx(
            skm.balanced_accuracy_score(y, p >= 0.5))
    mean = per_member.mean(axis=0)
    assert result.ensemble["tasks"]["y"]["roc_auc"] == pytest.approx(
        skm.roc_auc_score(y, mean), abs=1e-9)
    assert result.ensemble["mean"]["prc_auc"] == pytest.approx(
        skm.average_precision_score(y, mean), abs=1e-9)


def test_regression_on_val_split_and_single_checkpoint(tmp_path):
    run, models = make_run(tmp_path / "run", "regression")
    val = json.loads((run / "splits.json").read_text())["val"]["indices"]
    y = labels("regression")[val]
    result = evaluate([run / "seed_0" / "best.pt"], split="val", device="cpu", workers=1)
    scaler = {"mean": [float(labels("regression").astype(np.float32).mean())],
              "std": [float(labels("regression").astype(np.float32).std())]}
    p = reference(models, [SMILES[i] for i in val], "regression", scaler)[0, :, 0]
    scores = result.final["tasks"]["y"]
    assert result.ensemble is None and result.n == len(val)
    assert scores["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, p)), rel=1e-5)
    assert scores["mae"] == pytest.approx(skm.mean_absolute_error(y, p), rel=1e-5)
    assert scores["r2"] == pytest.approx(skm.r2_score(y, p), rel=1e-5)


def test_data_file_scores_every_valid_molecule_with_missing_labels_masked(tmp_path):
    run, models = make_run(tmp_path / "run", "classification")
    rows = [("CCO", "1"), ("C1CC", "0"), ("c1ccccc1", "0"), ("CCN", ""), ("CCCl", "1"),
            ("CC#N", "0")]
    data = write_csv(tmp_path / "ext.csv", "SMILES,y\n" + "".join(f"{s},{v}\n" for s, v in rows))
    result = evaluate([run], str(data), device="cpu", workers=1)
    assert result.n == 5  # the invalid C1CC is left out; CCN stays, its label masked
    scored = ["CCO", "c1ccccc1", "CCCl", "CC#N"]
    p = reference(models, scored, "classification")[0, :, 0]
    assert result.final["tasks"]["y"]["roc_auc"] == pytest.approx(
        skm.roc_auc_score([1, 0, 1, 0], p), abs=1e-9)


def test_single_class_task_is_skipped_and_counted(tmp_path):
    run, _ = make_run(tmp_path / "run", "classification", steps=1)
    data = write_csv(tmp_path / "ext.csv", "smiles,y\nCCO,1\nCCN,1\nCCCl,1\n")
    result = evaluate([run], str(data), device="cpu", workers=1)
    assert result.final["tasks"]["y"]["roc_auc"] is None
    assert result.final["skipped"]["roc_auc"] == 1
    assert result.final["tasks"]["y"]["accuracy"] is not None


def test_bad_requests_are_one_line_errors(tmp_path):
    run, _ = make_run(tmp_path / "run", "classification", steps=1)
    data = write_csv(tmp_path / "ext.csv", "smiles,other\nCCO,1\n")
    with pytest.raises(InputError, match="no label column 'y'.*'other'"):
        evaluate([run], str(data), device="cpu", workers=1)
    with pytest.raises(ConfigError, match="--split"):
        evaluate([run], split="holdout", device="cpu")
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "best.pt").write_bytes((run / "seed_0" / "best.pt").read_bytes())
    with pytest.raises(InputError, match="no splits.json"):
        evaluate([lone / "best.pt"], device="cpu")
