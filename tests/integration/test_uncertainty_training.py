"""Issue 23 on the training side: train.loss mve (GPS and CoMPT) learns a sigma that follows
heteroscedastic noise, best.pt stores calibration fitted on the validation split whose
conformal intervals cover ~90% of new molecules, classification runs store temperature and
isotonic scaling for each replicate and for their ensemble."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from molsam.config import recipe_from_dict, recipe_to_dict
from molsam.errors import ConfigError
from molsam.evaluate import evaluate
from molsam.predict import load_ensemble, predict_smiles
from molsam.train.calibration import entry_of, member_id
from molsam.train.checkpoint import load_checkpoint
from molsam.train.run import train_recipe
from molsam.uncertainty import calibrator_from_dict
from tests.conftest import SHARED_DATA
from tests.integration.test_train import TINY_MODEL, _fixture_csv

COMPT = {"name": "compt", "hidden": 16, "layers": 1, "heads": 2, "dropout": 0.0,
         "pooling": "mean", "kernel": "softmax", "norm": "scale"}


def _esol_smiles(rows: int) -> list[str]:
    lines = (SHARED_DATA / "esol.csv").read_text().splitlines()[1 : rows + 1]
    return [line.split(",")[0] for line in lines]


def _write(path: Path, smiles: list[str], y: np.ndarray) -> Path:
    path.write_text("smiles,y\n" + "".join(f"{s},{v:.6f}\n" for s, v in zip(smiles, y)))
    return path


def _recipe(data: Path, model=TINY_MODEL, sizes=(0.5, 0.5, 0.0), **train):
    return recipe_from_dict({
        "data": {"path": str(data)},
        "split": {"method": "random", "sizes": list(sizes), "seed": 0},
        "model": model,
        "optim": {"name": "adam", "lr": 3e-3, "schedule": "constant"},
        "train": {"epochs": 3, "batch_size": 16, "seeds": [0], "workers": 1, "device": "cpu",
                  **train},
    })


def test_mve_sigma_follows_heteroscedastic_noise(tmp_path):
    # Labels are pure noise whose scale the molecule decides: 2.0 with an aromatic carbon,
    # 0.2 without. Only an MVE head can say which labels are the noisy ones.
    smiles = _esol_smiles(120)
    scale = np.array([2.0 if "c" in s else 0.2 for s in smiles])
    y = scale * np.random.default_rng(0).standard_normal(len(smiles))
    data = _write(tmp_path / "noise.csv", smiles, y)
    summary = train_recipe(_recipe(data, epochs=15, loss="mve"), tmp_path / "run")
    assert summary["val"]["mean"]["rmse"]["mean"] is not None  # metrics on the mean

    best = load_checkpoint(tmp_path / "run/seed_0/best.pt")
    assert best["loss"] == "mve" and best["model_config"]["num_tasks"] == 2
    entry = entry_of(best["calibration"])
    assert entry["sigma"] == "mve" and entry["fitted_on"]["split"] == "val"
    assert set(entry["calibrators"]) == {"sigma_scaling", "conformal"}
    assert calibrator_from_dict(entry["calibrators"]["conformal"]).normalized

    result = evaluate([tmp_path / "run"], split="val", device="cpu", workers=1)
    val = json.loads((tmp_path / "run/splits.json").read_text())["val"]["indices"]
    sigma = result.arrays["outputs"].sigma[:, 0]
    assert spearmanr(sigma, scale[val]).statistic > 0.5
    assert sigma[scale[val] > 1].mean() > 2.5 * sigma[scale[val] < 1].mean()
    report = result.final_uncertainty
    assert report["sigma"] == "mve"
    assert report["uncalibrated"]["mean"]["spearman"] > 0.3
    # z-scaling fitted on these molecules: mean z^2 = 1 after it (Levi et al. 2022)
    z = (result.arrays["y"][:, 0] - result.arrays["outputs"].values[:, 0]) / \
        result.arrays["calibrated"].sigma[:, 0]
    assert np.mean(z ** 2) == pytest.approx(1.0, rel=1e-6)

    # predict still writes the mean (the variance head stays out of its columns)
    ensemble = load_ensemble([tmp_path / "run"], device="cpu")
    predicted = predict_smiles(ensemble, smiles[:3])
    assert predicted.mean.shape == (3, 1)
    assert np.allclose(predicted.mean[:, 0], evaluate(
        [tmp_path / "run"], str(_write(tmp_path / "three.csv", smiles[:3], y[:3])),
        device="cpu", workers=1).arrays["outputs"].values[:, 0], atol=1e-5)


def test_mve_trains_compt_with_two_outputs_per_target(tmp_path):
    data = _fixture_csv(tmp_path, "esol.csv", 24)
    train_recipe(_recipe(data, model=COMPT, sizes=(0.6, 0.2, 0.2), epochs=2, loss="mve",
                         batch_size=8), tmp_path / "run")
    best = load_checkpoint(tmp_path / "run/seed_0/best.pt")
    assert best["loss"] == "mve" and best["model_config"]["num_tasks"] == 2
    assert best["model_config"]["name"] == "compt"
    report = evaluate([tmp_path / "run"], device="cpu", workers=1).final_uncertainty
    assert report["sigma"] == "mve"
    assert report["uncalibrated"]["mean"]["nll"] is not None


def test_mve_takes_the_padded_static_shape_step(tmp_path):
    # The padded step (CUDA graphs on a GPU) runs the same MVE loss; on the CPU it runs eagerly.
    data = _fixture_csv(tmp_path, "esol.csv", 24)
    train_recipe(_recipe(data, sizes=(0.6, 0.2, 0.2), epochs=2, loss="mve", batch_size=8,
                         static_shapes=True), tmp_path / "run")
    with open(tmp_path / "run/seed_0/metrics.csv") as handle:
        losses = [float(line.split(",")[1]) for line in handle.read().splitlines()[1:]]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert load_checkpoint(tmp_path / "run/seed_0/best.pt")["model_config"]["num_tasks"] == 2


def test_stored_conformal_intervals_cover_90_percent_of_new_molecules(tmp_path):
    # 600 molecules with N(0, 1) labels; 240 in validation (the calibration set), 240 in test.
    smiles = _esol_smiles(600)
    y = np.random.default_rng(1).standard_normal(len(smiles))
    data = _write(tmp_path / "big.csv", smiles, y)
    train_recipe(_recipe(data, sizes=(0.2, 0.4, 0.4), epochs=1, batch_size=32),
                 tmp_path / "run")
    entry = entry_of(load_checkpoint(tmp_path / "run/seed_0/best.pt")["calibration"])
    conformal = entry["calibrators"]["conformal"]
    assert entry["alpha"] == conformal["alpha"] == 0.1 and not conformal["normalized"]
    assert entry["sigma"] is None and "sigma_scaling" not in entry["calibrators"]

    # The stored quantile is the ceil((n+1) 0.9)-th smallest validation residual.
    val = evaluate([tmp_path / "run"], split="val", device="cpu", workers=1)
    residuals = np.sort(np.abs(val.arrays["y"][:, 0] - val.arrays["outputs"].values[:, 0]))
    n = len(residuals)
    assert conformal["counts"] == [n] and n == entry["fitted_on"]["n"]
    assert conformal["quantiles"][0] == pytest.approx(residuals[math.ceil((n + 1) * 0.9) - 1])

    test = evaluate([tmp_path / "run"], split="test", device="cpu", workers=1)
    calibrated = test.final_uncertainty["calibrated"]["mean"]
    assert 0.85 <= calibrated["coverage"] <= 0.95
    assert calibrated["width"] == pytest.approx(2 * conformal["quantiles"][0])
    assert test.final_uncertainty["uncalibrated"] is None  # one MSE model: no sigma


def test_classification_replicates_and_their_ensemble_store_calibration(tmp_path):
    data = _fixture_csv(tmp_path, "bbbp.csv", 40)
    recipe = recipe_from_dict({
        "data": {"path": str(data)},
        "split": {"method": "random", "sizes": [0.5, 0.3, 0.2], "seed": 0},
        "model": TINY_MODEL,
        "train": {"epochs": 2, "batch_size": 8, "seeds": [0, 1], "workers": 1, "device": "cpu"},
    })
    train_recipe(recipe, tmp_path / "run")
    checkpoints = [load_checkpoint(tmp_path / f"run/seed_{s}/best.pt") for s in (0, 1)]
    val_size = len(json.loads((tmp_path / "run/splits.json").read_text())["val"]["indices"])
    for ckpt in checkpoints:
        assert ckpt["loss"] == "mse"
        model = entry_of(ckpt["calibration"])
        assert set(model["calibrators"]) == {"temperature", "isotonic"}
        assert model["fitted_on"]["n"] == val_size
        assert entry_of(ckpt["calibration"], [member_id(c) for c in checkpoints]) is not None
        assert entry_of(ckpt["calibration"], [member_id(checkpoints[0])]) is None
    # The ensemble's temperature is fitted on its own averaged probabilities, not a member's.
    temps = {json.dumps(entry_of(c["calibration"])["calibrators"]["temperature"]["temperatures"])
             for c in checkpoints}
    joint = checkpoints[0]["calibration"]["ensemble"]["calibrators"]["temperature"]
    assert len(temps) == 2 and json.dumps(joint["temperatures"]) not in temps

    result = evaluate([tmp_path / "run"], split="val", device="cpu", workers=1)
    report = result.final_uncertainty
    assert report["calibration"]["fitted_on"]["split"] == "val"
    for name in ("uncalibrated", "temperature", "isotonic"):
        assert set(report[name]["mean"]) >= {"ece", "brier"}
    # On the very molecules it was fitted on, isotonic regression cannot raise the Brier
    # score (it minimizes it over monotone maps, the identity among them).
    assert report["isotonic"]["mean"]["brier"] <= report["uncalibrated"]["mean"]["brier"] + 1e-12


def test_mve_is_refused_for_classification_naming_the_key(tmp_path):
    data = _fixture_csv(tmp_path, "bbbp.csv", 20)
    with pytest.raises(ConfigError, match=r"^train\.loss: mve .*data\.task is 'classification'"):
        recipe_from_dict({"data": {"path": str(data), "task": "classification"},
                          "train": {"loss": "mve"}})
    with pytest.raises(ConfigError, match=r"^train\.loss: mve .*p_np are classification targets"):
        train_recipe(_recipe(data, loss="mve"), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match=r"^train\.loss: .*train\.loss_weighting"):
        recipe_from_dict({"data": {"path": str(data)},
                          "train": {"loss": "mve", "loss_weighting": "loss"}})


def test_resolved_recipes_that_keep_mse_are_unchanged():
    plain = recipe_to_dict(recipe_from_dict({"data": {"path": "x.csv"}}))
    assert "loss" not in plain["train"]
    mve = recipe_to_dict(recipe_from_dict({"data": {"path": "x.csv"}, "train": {"loss": "mve"}}))
    assert mve["train"]["loss"] == "mve"
    assert recipe_from_dict(mve).train.loss == "mve"


def test_mve_loss_is_the_masked_gaussian_nll():
    from molsam.train.losses import gaussian_nll, masked_loss, output_loss

    torch.manual_seed(0)
    output = torch.randn(6, 4, requires_grad=True)
    targets = torch.randn(6, 2)
    targets[1, 0] = targets[4, 1] = float("nan")
    loss = masked_loss(output, targets, "regression", loss="mve")
    mean, variance = output[:, :2], torch.nn.functional.softplus(output[:, 2:]) + 1e-6
    terms = 0.5 * (torch.log(variance) + (targets - mean) ** 2 / variance)
    expected = terms[~torch.isnan(targets)].mean()
    assert torch.allclose(loss, expected)
    filled = torch.nan_to_num(targets)
    torch.testing.assert_close(  # the terms of torch's own Gaussian NLL
        gaussian_nll(mean, filled, variance),
        torch.nn.functional.gaussian_nll_loss(mean, filled, variance, eps=1e-6,
                                              reduction="none"))
    loss.backward()
    assert torch.isfinite(output.grad).all()
    assert output.grad[1, 0] == 0 and output.grad[1, 2] == 0  # missing label: no gradient
    # shapes say it where no loss is given (a checkpoint scored without reading its "loss")
    assert output_loss(4, 2, "regression") == "mve" and output_loss(2, 2, "regression") == "mse"
    assert torch.allclose(masked_loss(output, targets, "regression"), loss)
    with pytest.raises(ValueError, match="loss mve"):
        masked_loss(output[:, :2], targets, "regression", loss="mve")
