"""A two-model regression ensemble predicts on the device it was loaded on: each member's
predictions equal that checkpoint's model run in-process on the CPU (scaler undone, rows in
input order), and the ensemble mean and spread are over both members. The same test body runs
on the CPU (always) and on CUDA (marked `gpu`, skipped without a device); the CUDA case is what
benchmarks/gpu_check.sh runs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from molsam.config import recipe_from_dict
from molsam.data.splits import SplitIndices
from molsam.train.loop import ReplicateTrainer

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=[
        pytest.mark.gpu,
        pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    ]),
]


@pytest.fixture(scope="module")
def regression_run(gpu_store, tmp_path_factory):
    """A run directory with seed_0/best.pt and seed_1/best.pt: regression on a size-driven
    target (mean ~3, so an ensemble that forgot to undo the scaler is far off), trained on the
    CPU. Returns (run directory, regression store)."""
    counts = np.asarray(gpu_store.atom_counts, dtype=np.float32)
    y = (0.2 * counts + 0.5 * (np.arange(len(counts)) % 3))[:, None].astype(np.float32)
    store = dataclasses.replace(gpu_store, y=y, task="regression")
    run = tmp_path_factory.mktemp("ensemble")
    recipe_dict = {
        "data": {"path": "unused.csv", "task": "regression"},
        "model": {"hidden": 16, "layers": 1, "heads": 2, "dropout": 0.0,
                  "pe_steps": store.rwse.shape[1]},
        "optim": {"name": "adam", "schedule": "constant", "lr": 1e-2},
        "train": {"epochs": 2, "batch_size": 8, "device": "cpu"},
    }
    everything = np.arange(len(store))
    cut = max(1, int(0.8 * len(store)))
    split = SplitIndices(everything[:cut], everything[cut:], everything[:0])
    for seed in (0, 1):
        ReplicateTrainer(
            recipe_from_dict(recipe_dict), recipe_dict, store.batch_source("cpu"), split,
            task="regression", target_names=store.target_names, seed=seed,
            out_dir=run / f"seed_{seed}", device=torch.device("cpu"),
        ).fit()
    return run, store


def in_process_predictions(path, store) -> np.ndarray:
    """The checkpoint's model on the CPU over the whole store in one batch, in output units:
    float64 [G, 1]."""
    from molsam.train.checkpoint import load_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt, "cpu")
    with torch.no_grad():
        raw = model(store.batch_source("cpu").gather(np.arange(len(store)))).double().numpy()
    scaler = ckpt["scaler"]
    return raw * np.asarray(scaler["std"]) + np.asarray(scaler["mean"])


@pytest.mark.parametrize("device", DEVICES)
def test_two_model_regression_ensemble_predicts_on_device(regression_run, device):
    from molsam.predict import load_ensemble, summarize

    run, store = regression_run
    ensemble = load_ensemble([run], device=device)
    assert ensemble.device.type == device and len(ensemble) == 2
    assert ensemble.task == "regression"
    assert all(p.device.type == device for m in ensemble.models for p in m.parameters())
    index = np.arange(len(store))[::-1].copy()  # rows must come back in this order
    members = ensemble.predict_source(store.batch_source(device), index, batch_size=8)
    assert members.shape == (2, len(store), 1)
    expected = np.stack([in_process_predictions(p, store)[index] for p in ensemble.paths])
    # Two seeds, two models: an ensemble that loaded one checkpoint twice would fail here.
    assert np.abs(expected[0] - expected[1]).max() > 1e-3
    np.testing.assert_allclose(members, expected, atol=1e-4, rtol=1e-4)
    mean, std = summarize(members)
    np.testing.assert_allclose(mean, expected.mean(axis=0), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(std, expected.std(axis=0), atol=1e-4)
    assert abs(float(mean.mean()) - float(store.y.mean())) < 2.0  # output units, not scaled
