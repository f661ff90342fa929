"""Molecule-level features (model.mol_features): featurized with the graphs, scaled on the
training split inside the model, and read again by predict and evaluate with no extra flag."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import Descriptors

from molsam.chem.descriptors import RDKIT2D_NAMES, morgan_counts, rdkit2d
from molsam.config import recipe_from_dict
from molsam.errors import ConfigError, InputError
from molsam.evaluate import evaluate
from molsam.models.features import CLIP, FeatureScaler
from molsam.predict import load_ensemble, predict_smiles
from molsam.train.checkpoint import load_checkpoint
from molsam.train.run import train_recipe
from tests.conftest import SHARED_DATA


def _csv(tmp_path: Path, name: str, rows: int) -> Path:
    lines = (SHARED_DATA / name).read_text().splitlines()[: rows + 1]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def _recipe(data: Path, model: dict, **train):
    return recipe_from_dict({
        "data": {"path": str(data)},
        "split": {"method": "random", "sizes": [0.6, 0.2, 0.2], "seed": 0},
        "model": {"hidden": 16, "layers": 1, "heads": 2, "dropout": 0.0, **model},
        "optim": {"name": "adam"},
        "train": {"epochs": 2, "batch_size": 8, "seeds": [0], "workers": 1, "device": "cpu",
                  **train},
    })


def test_rdkit2d_equals_rdkit_calc_mol_descriptors():
    """Bit for bit in float32, except Ipc and AvgIpc (computed from eigenvalues: ~1e-9)."""
    smiles = ["CC(=O)Nc1ccc(O)cc1", "[Na+].[Cl-]", "C1CC1C(F)(F)F", "OC(=O)c1ccccc1OC(C)=O",
              "CN1CCC[C@H]1c1cccnc1"]
    ours = rdkit2d([Chem.MolFromSmiles(s) for s in smiles])
    fast = [RDKIT2D_NAMES.index("Ipc"), RDKIT2D_NAMES.index("AvgIpc")]
    exact = [i for i in range(len(RDKIT2D_NAMES)) if i not in fast]
    for row, text in zip(ours, smiles):
        reference = Descriptors.CalcMolDescriptors(Chem.MolFromSmiles(text))
        expected = np.array([reference[name] for name in RDKIT2D_NAMES], dtype=np.float64)
        expected[~np.isfinite(expected)] = np.nan
        np.testing.assert_array_equal(row[exact], expected[exact].astype(np.float32))
        np.testing.assert_allclose(row[fast], expected[fast], rtol=1e-6)
    assert np.isnan(ours[1]).any() and not np.isnan(ours[0]).any()  # ions: charges undefined


def test_morgan_counts_are_counts_not_bits():
    counts = morgan_counts([Chem.MolFromSmiles("CCCCCCCC")])
    assert counts.shape == (1, 2048) and counts.max() > 1


def test_feature_scaler_uses_training_statistics_fills_nan_and_clips():
    scaler = FeatureScaler(2)
    train = np.array([[1.0, np.nan], [3.0, 5.0], [5.0, 5.0]])
    scaler.fit(train)
    assert scaler.mean.tolist() == pytest.approx([3.0, 5.0])
    assert scaler.missing.tolist() == [0, 1]
    out = scaler(torch.tensor([[3.0, np.nan], [1e30, 5.0]]))
    assert out[0].tolist() == [0.0, 0.0]  # the mean, and a missing value filled with it
    assert out[1, 0].item() == CLIP  # heavy tails clipped (std 1 for the constant column)


@pytest.mark.parametrize("name", ["gps", "compt"])
def test_trained_with_descriptors_predicts_and_evaluates_without_extra_flags(tmp_path, name):
    data = _csv(tmp_path, "esol.csv", 30)
    model = {"mol_features": ["rdkit2d", "morgan_count"]}
    if name == "compt":
        model.update(name="compt", pooling="mean")
    train_recipe(_recipe(data, model), tmp_path / "run")
    ckpt = load_checkpoint(tmp_path / "run" / "seed_0" / "best.pt")
    assert sorted(ckpt["featurizer"]["extras"]) == sorted(
        {"rdkit2d", "morgan_count"} | ({"compt"} if name == "compt" else set()))
    assert ckpt["model_config"]["mol_features"] == len(RDKIT2D_NAMES) + 2048
    mean = ckpt["model_state"]["feature_scaler.mean"]
    assert mean.shape == (len(RDKIT2D_NAMES) + 2048,) and mean.abs().sum() > 0

    ensemble = load_ensemble([tmp_path / "run"], device="cpu")
    predictions = predict_smiles(ensemble, ["CCO", "bad(", "c1ccccc1Cl"], workers=1)
    assert np.isfinite(predictions.mean[[0, 2]]).all() and np.isnan(predictions.mean[1]).all()
    report = evaluate([tmp_path / "run"], device="cpu", workers=1)
    assert report is not None


def test_duplicate_or_unknown_molecule_features_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="model.mol_features"):
        _recipe(tmp_path / "x.csv", {"mol_features": ["rdkit2d", "rdkit2d"]})
    with pytest.raises(ConfigError, match="model.mol_features"):
        _recipe(tmp_path / "x.csv", {"mol_features": ["rdkit3d"]})


def test_featurize_features_fills_the_cache_that_training_reads(tmp_path):
    from typer.testing import CliRunner

    from molsam.cli.main import app
    from molsam.data.store import GraphStore
    from molsam.train.run import load_recipe_data

    data = _csv(tmp_path, "esol.csv", 20)
    result = CliRunner().invoke(app, ["featurize", str(data), "--features", "rdkit2d",
                                      "--split", "random", "--out", str(tmp_path / "f")])
    assert result.exit_code == 0, result.output
    store = GraphStore.load(tmp_path / "f" / "store.pt")
    assert store.mol_features.shape == (20, len(RDKIT2D_NAMES))
    recipe = _recipe(data, {"mol_features": ["rdkit2d"]})
    np.testing.assert_array_equal(load_recipe_data(recipe).mol_features, store.mol_features)
    bad = CliRunner().invoke(app, ["featurize", str(data), "--features", "rdkit3d"])
    assert bad.exit_code != 0 and "--features rdkit3d: not one of" in bad.output


def test_feature_columns_of_the_file_train_and_evaluate(tmp_path):
    """A user column (here a made-up assay temperature, with decimal commas and a gap) joins
    the features; evaluate reads it from --data with no flag."""
    lines = (SHARED_DATA / "esol.csv").read_text().splitlines()[1:31]  # smiles,logSolubility
    rows = [";".join(["smiles", "temperature", "solubility"])]
    for i, line in enumerate(lines):
        smiles, solubility = line.rsplit(",", 1)
        temperature = "" if i == 3 else f"{20 + i % 7},5"
        rows.append(";".join([smiles, temperature, solubility.replace(".", ",")]))
    data = tmp_path / "assay.csv"
    data.write_text("\n".join(rows) + "\n")
    recipe = recipe_from_dict({
        "data": {"path": str(data), "target_columns": ["solubility"],
                 "feature_columns": ["temperature"]},
        "split": {"method": "random", "sizes": [0.6, 0.2, 0.2], "seed": 0},
        "model": {"hidden": 16, "layers": 1, "heads": 2},
        "optim": {"name": "adam"},
        "train": {"epochs": 2, "batch_size": 8, "seeds": [0], "workers": 1, "device": "cpu"},
    })
    from molsam.train.run import load_recipe_data

    store = load_recipe_data(recipe)
    assert store.mol_features.shape == (30, 1)
    assert store.mol_features[0, -1] == pytest.approx(20.5) and np.isnan(store.mol_features[3, -1])
    train_recipe(recipe, tmp_path / "run")
    ckpt = load_checkpoint(tmp_path / "run" / "seed_0" / "best.pt")
    assert ckpt["model_config"]["mol_features"] == 1
    assert evaluate([tmp_path / "run"], str(data), device="cpu", workers=1) is not None

    # predict reads the column from its input: a different temperature, a different prediction
    from molsam.predict import predict_csv

    warm = tmp_path / "warm.csv"
    warm.write_text("\n".join([rows[0], rows[1], rows[1].replace(";20,5;", ";95,5;")]) + "\n")
    ensemble = load_ensemble([tmp_path / "run"], device="cpu")
    predict_csv(ensemble, warm, tmp_path / "out.csv", workers=1)
    import csv

    with open(tmp_path / "out.csv", newline="") as handle:
        out = list(csv.DictReader(handle))
    assert len(out) == 2 and out[0]["solubility_pred"] != out[1]["solubility_pred"]
    with pytest.raises(InputError, match="temperature"):
        predict_smiles(ensemble, ["CCO"], workers=1)
    with pytest.raises(ConfigError, match="data.feature_columns"):
        recipe_from_dict({"data": {"path": str(data), "target_columns": ["solubility"],
                                   "feature_columns": ["solubility"]}})
