"""CUDA: training and prediction from a store, no host sync per step, state placement after a
resume, and the deterministic mode (bitwise on the same GPU). Run by benchmarks/gpu_check.sh."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from molsam.config import recipe_from_dict
from molsam.data.splits import SplitIndices
from molsam.devices import deterministic_algorithms
from molsam.train.loop import ReplicateTrainer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def make_trainer(store, out, device, optimizer="graphsam", **train):
    recipe_dict = {
        "data": {"path": "unused.csv"},
        "model": {"hidden": 32, "layers": 2, "heads": 4, "dropout": 0.0,
                  "pe_steps": store.rwse.shape[1]},
        "optim": {"name": optimizer, "schedule": "constant"},
        "train": {"epochs": 2, "batch_size": 8, "device": device, "precision": "fp32", **train},
    }
    n = len(store)
    everything = np.arange(n)
    cut = max(1, int(0.8 * n))
    split = SplitIndices(everything[:cut], everything[cut:], everything[:0])
    return ReplicateTrainer(
        recipe_from_dict(recipe_dict), recipe_dict, store.batch_source(device), split,
        task="classification", target_names=store.target_names, seed=0, out_dir=out,
        device=torch.device(device),
    )


def test_prediction_on_cuda_matches_cpu(gpu_store, tmp_path):
    from molsam.predict import load_ensemble

    make_trainer(gpu_store, tmp_path, "cpu", epochs=1).fit()
    on_gpu = load_ensemble([tmp_path / "best.pt"])  # device auto
    assert on_gpu.device.type == "cuda"
    assert all(p.device.type == "cuda" for m in on_gpu.models for p in m.parameters())
    on_cpu = load_ensemble([tmp_path / "best.pt"], device="cpu")
    index = np.arange(len(gpu_store))
    np.testing.assert_allclose(on_gpu.predict_source(gpu_store.batch_source("cuda"), index),
                               on_cpu.predict_source(gpu_store.batch_source("cpu"), index),
                               atol=1e-4)


@pytest.mark.parametrize("optimizer", ["adam", "sam", "graphsam"])
def test_resumed_cuda_steps_never_sync(gpu_store, tmp_path, optimizer):
    make_trainer(gpu_store, tmp_path, "cuda", optimizer, epochs=1).fit()
    trainer = make_trainer(gpu_store, tmp_path, "cuda", optimizer, epochs=2)
    trainer.resume(tmp_path / "last.pt")
    base = getattr(trainer.optimizer, "base_optimizer", trainer.optimizer)
    assert all(s["step"].device.type == "cpu" for s in base.state.values())
    source, order = trainer.source, trainer.split.train
    batches = [source.gather(order[i : i + 8]) for i in range(0, len(order), 8)]
    trainer._train_step(batches[0], trainer.targets[batches[0].index])  # any re-anchor first
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host sync below raises
    try:
        for batch in batches[1:]:
            trainer._train_step(batch, trainer.targets[batch.index])
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_deterministic_mode_is_bitwise_on_cuda(gpu_store, tmp_path):
    weights = []
    for name in ("a", "b"):
        with deterministic_algorithms(True):
            trainer = make_trainer(gpu_store, tmp_path / name, "cuda", deterministic=True)
            trainer.fit()
        weights.append({k: v.detach().cpu() for k, v in trainer.model.state_dict().items()})
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
