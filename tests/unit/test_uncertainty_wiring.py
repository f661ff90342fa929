"""The pieces that wire molsam.uncertainty into training and inference: MVE outputs in the
targets' units, MC dropout, ensemble sigma, calibration entries, and checkpoints that record
their loss and calibration (and older ones that do not)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from molsam.data.store import GraphStore
from molsam.models import GPSModel
from molsam.train.calibration import (
    Outputs,
    apply_entry,
    calibration_record,
    ensemble_outputs,
    entry_of,
    fit_entry,
    outputs_from_raw,
)
from molsam.train.checkpoint import (
    build_checkpoint,
    checkpoint_loss,
    load_checkpoint,
    save_checkpoint,
    write_calibration,
)
from molsam.train.inference import mean_and_sigma, predict_mc_dropout, predict_raw, to_output_units

SMILES = ["CCO", "c1ccccc1", "CCN", "CC(=O)O", "CCCl", "c1ccncc1", "C1CCCCC1", "OCC(O)CO"]
RECIPE = {"data": {"path": "x.csv"}}


@pytest.fixture(scope="module")
def source():
    return GraphStore.from_smiles(SMILES, rwse_steps=4, workers=1).batch_source("cpu")


def _model(outputs: int, dropout: float = 0.0, attn_dropout: float = 0.0) -> GPSModel:
    torch.manual_seed(0)
    return GPSModel(outputs, hidden=16, layers=1, heads=2, pe_steps=4, dropout=dropout,
                    attn_dropout=attn_dropout).eval()


def test_mve_outputs_in_target_units():
    raw = np.array([[0.5, -1.0, 0.0, 3.0], [-2.0, 1.0, -30.0, 40.0]])  # [N, 2T], T = 2
    scaler = {"mean": [1.0, -2.0], "std": [2.0, 0.5]}
    mu, sigma = mean_and_sigma(raw, scaler)
    variance = np.log1p(np.exp(raw[:, 2:])) + 1e-6  # softplus + floor, standardized units
    np.testing.assert_allclose(mu, raw[:, :2] * [2.0, 0.5] + [1.0, -2.0])
    np.testing.assert_allclose(sigma, np.sqrt(variance) * [2.0, 0.5], rtol=1e-12)
    assert np.all(sigma > 0)
    # to_output_units gives the means: explicitly, or inferred from the scaler's T (predict)
    np.testing.assert_allclose(to_output_units(raw, "regression", scaler, loss="mve"), mu)
    np.testing.assert_allclose(to_output_units(raw, "regression", scaler), mu)
    plain = raw[:, :2]
    np.testing.assert_allclose(to_output_units(plain, "regression", scaler), mu)
    out = outputs_from_raw(raw, "regression", scaler, loss="mve")
    assert out.sigma_kind == "mve" and np.allclose(out.sigma, sigma)
    assert outputs_from_raw(plain, "regression", scaler).sigma is None


def test_ensemble_sigma_is_the_spread_or_the_gaussian_mixture():
    mu = np.array([[[1.0], [2.0]], [[3.0], [2.0]]])  # [M=2, N=2, T=1]
    plain = ensemble_outputs([Outputs(m) for m in mu], "regression")
    assert plain.sigma_kind == "ensemble"
    np.testing.assert_allclose(plain.values, [[2.0], [2.0]])
    np.testing.assert_allclose(plain.sigma, [[1.0], [0.0]])  # population std, as predict's
    sigma = np.array([[[1.0], [2.0]], [[3.0], [2.0]]])
    mixed = ensemble_outputs([Outputs(m, sigma=s, sigma_kind="mve") for m, s in zip(mu, sigma)],
                             "regression")
    assert mixed.sigma_kind == "ensemble_mve"
    # Lakshminarayanan et al. 2017: mean of the variances plus the variance of the means
    np.testing.assert_allclose(mixed.sigma, np.sqrt([[(1 + 9) / 2 + 1.0], [4.0]]))
    p = np.array([[[0.2], [0.9]], [[0.4], [0.7]]])
    joint = ensemble_outputs([Outputs(m, logits=None) for m in p], "classification")
    np.testing.assert_allclose(1 / (1 + np.exp(-joint.logits)), [[0.3], [0.8]])


def test_entries_fit_apply_and_match_their_members():
    rng = np.random.default_rng(0)
    y = rng.standard_normal((200, 1))
    mu, sigma = np.zeros((200, 1)), np.full((200, 1), 0.5)
    entry = fit_entry(Outputs(mu, sigma=sigma, sigma_kind="mve"), y, "regression",
                      data="d.csv", split="val", members=[[0, "t0"], [1, "t1"]])
    applied = apply_entry(entry, Outputs(mu, sigma=sigma, sigma_kind="mve"), "regression")
    scale = entry["calibrators"]["sigma_scaling"]["scales"][0]
    assert scale == pytest.approx(np.sqrt(np.mean((y / 0.5) ** 2)))
    np.testing.assert_allclose(applied.sigma, 0.5 * scale)
    inside = (applied.lower <= y) & (y <= applied.upper)
    assert inside.mean() >= 0.9 and applied.alpha == 0.1
    record = calibration_record(None, entry)
    assert entry_of(record, [[1, "t1"], [0, "t0"]]) is entry  # any order
    assert entry_of(record, [[0, "t0"]]) is None and entry_of(record) is None
    assert entry_of(None) is None and entry_of({"version": 99, "model": entry}) is None


def test_mc_dropout_is_seeded_restores_modes_and_rng(source):
    model = _model(2, dropout=0.3, attn_dropout=0.2)
    indices = np.arange(len(SMILES))
    state = torch.get_rng_state()
    first = predict_mc_dropout(model, source, indices, samples=4, seed=7, batch_size=3)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is untouched
    assert first.shape == (4, len(SMILES), 2)
    assert not model.training and not any(m.training for m in model.modules())
    assert torch.equal(first, predict_mc_dropout(model, source, indices, 4, seed=7, batch_size=3))
    assert not torch.equal(first, predict_mc_dropout(model, source, indices, 4, seed=8,
                                                     batch_size=3))
    assert not torch.equal(first[0], first[1])  # samples differ
    deterministic = predict_raw(model, source, indices)
    assert not torch.allclose(first.mean(0), deterministic, atol=1e-6)
    # without dropout every sample is the deterministic prediction
    plain = _model(2)
    samples = predict_mc_dropout(plain, source, indices, samples=3, seed=0)
    for s in samples:
        torch.testing.assert_close(s, predict_raw(plain, source, indices))
    with pytest.raises(ValueError, match="samples"):
        predict_mc_dropout(plain, source, indices, samples=0)


def test_mc_dropout_leaves_everything_but_dropout_in_eval(source, monkeypatch):
    model = _model(1, dropout=0.5)
    seen = {}
    original = torch.nn.LayerNorm.forward

    def spy(self, x):
        seen[id(self)] = self.training
        return original(self, x)

    monkeypatch.setattr(torch.nn.LayerNorm, "forward", spy)
    predict_mc_dropout(model, source, np.arange(3), samples=1)
    assert seen and not any(seen.values())


def test_checkpoints_record_loss_and_calibration(tmp_path):
    mve = _model(2)
    scaler = {"mean": [0.0], "std": [1.0]}
    ckpt = build_checkpoint(mve, target_names=["y"], task="regression", recipe=RECIPE,
                            split_seed=0, seed=0, epoch=1, scaler=scaler, loss="mve")
    assert ckpt["loss"] == "mve" and ckpt["calibration"] is None
    with pytest.raises(ValueError, match="1 names for a model with 2 outputs"):
        build_checkpoint(mve, target_names=["y"], task="regression", recipe=RECIPE,
                         split_seed=0, seed=0, epoch=1, scaler=scaler)
    with pytest.raises(ValueError, match="loss: 'mve' is for regression"):
        build_checkpoint(mve, target_names=["a", "b"], task="classification", recipe=RECIPE,
                         split_seed=0, seed=0, epoch=1, loss="mve")
    path = tmp_path / "best.pt"
    save_checkpoint(path, ckpt)
    record = calibration_record({"alpha": 0.1, "calibrators": {}, "fitted_on": {}})
    write_calibration(path, record)
    again = load_checkpoint(path)
    assert again["calibration"] == record and checkpoint_loss(again) == "mve"
    assert all(torch.equal(again["model_state"][k], v) for k, v in ckpt["model_state"].items())
    assert {k: v for k, v in again.items() if k not in ("model_state", "calibration")} == \
        {k: v for k, v in ckpt.items() if k not in ("model_state", "calibration")}
    del again["loss"]
    assert checkpoint_loss(again) == "mse"  # written before train.loss existed
