"""CUDA graphs: the captured static-shape step trains like the eager step, replays without a
host sync, survives a resume, and runs under bf16. Run by benchmarks/gpu_check.sh."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from molsam.config import recipe_from_dict
from molsam.data.splits import SplitIndices
from molsam.train.loop import ReplicateTrainer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def make_trainer(store, out, optimizer="graphsam", **train):
    recipe_dict = {
        "data": {"path": "unused.csv"},
        "model": {"hidden": 32, "layers": 2, "heads": 4, "dropout": 0.0,
                  "pe_steps": store.rwse.shape[1]},
        "optim": {"name": optimizer, "schedule": "noam", "warmup_epochs": 1.0},
        "train": {"epochs": 4, "batch_size": 8, "device": "cuda", "precision": "fp32",
                  **train},
    }
    n = len(store)
    everything = np.arange(n)
    cut = max(1, int(0.8 * n))
    split = SplitIndices(everything[:cut], everything[cut:], everything[:0])
    return ReplicateTrainer(
        recipe_from_dict(recipe_dict), recipe_dict, store.batch_source("cuda"), split,
        task="classification", target_names=store.target_names, seed=0, out_dir=out,
        device=torch.device("cuda"),
    )


@pytest.mark.parametrize("optimizer", ["adam", "sam", "graphsam"])
def test_captured_steps_train_like_eager_steps(gpu_store, tmp_path, optimizer):
    eager = make_trainer(gpu_store, tmp_path / "eager", optimizer, static_shapes=False)
    captured = make_trainer(gpu_store, tmp_path / "captured", optimizer, static_shapes=True)
    assert captured.static is not None and captured.static.capture
    eager.fit()
    captured.fit()
    assert captured.static.graphs, "no shape was ever captured"
    for (name, p), q in zip(eager.model.named_parameters(), captured.model.parameters()):
        torch.testing.assert_close(q, p, atol=2e-3, rtol=2e-3, msg=name)
    if optimizer != "adam":
        assert captured.optimizer.steps == eager.optimizer.steps  # replays count as steps
    base = captured.optimizer.base_optimizer if optimizer != "adam" else captured.optimizer
    steps = {float(s["step"]) for s in base.state.values()}
    assert steps == {float(eager.steps_per_epoch * 4)}


def test_replayed_steps_never_sync(gpu_store, tmp_path):
    trainer = make_trainer(gpu_store, tmp_path, static_shapes=True)
    static, order = trainer.static, trainer.split.train
    on_device = trainer.source.upload_order(order)
    spans = [(i, min(i + 8, len(order))) for i in range(0, len(order), 8)]
    for _ in range(4):  # the re-anchor, warm-up steps and the capture of every shape
        for lo, hi in spans:
            static.step(order[lo:hi], on_device[lo:hi])
    assert all(shape in static.graphs for shape in static.shapes_seen)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        losses = [static.step(order[lo:hi], on_device[lo:hi]) for lo, hi in spans]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(torch.isfinite(loss) for loss in losses)


def test_resume_into_a_captured_run(gpu_store, tmp_path):
    make_trainer(gpu_store, tmp_path, static_shapes=True, epochs=2).fit()
    trainer = make_trainer(gpu_store, tmp_path, static_shapes=True, epochs=4)
    trainer.resume(tmp_path / "last.pt")
    group = trainer.optimizer.param_groups[0]
    assert group["capturable"] is True
    assert isinstance(group["lr"], torch.Tensor) and group["lr"].device.type == "cuda"
    base = trainer.optimizer.base_optimizer
    assert all(s["step"].device.type == "cuda" for s in base.state.values())
    trainer.fit()
    full = make_trainer(gpu_store, tmp_path / "full", static_shapes=True, epochs=4)
    full.fit()
    for (name, p), q in zip(full.model.named_parameters(), trainer.model.parameters()):
        torch.testing.assert_close(q, p, atol=2e-3, rtol=2e-3, msg=name)


def test_captured_bf16_step(gpu_store, tmp_path):
    trainer = make_trainer(gpu_store, tmp_path, static_shapes=True, precision="bf16", epochs=3)
    result = trainer.fit()
    assert trainer.static.graphs and np.isfinite(trainer.best_val or 0.0)
    assert result.epochs_run == 3
