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
def test_captured_steps_equal_eager_steps(gpu_store, tmp_path, optimizer):
    """Same batches, same initial weights: 12 steps (re-anchor, warm-ups, capture, replays, the
    Noam lr changing every step, rho changed half-way) end where 12 eager steps end."""
    eager = make_trainer(gpu_store, tmp_path / "eager", optimizer, static_shapes=False)
    captured = make_trainer(gpu_store, tmp_path / "captured", optimizer, static_shapes=True)
    assert captured.static is not None and captured.static.capture
    order = captured.split.train[:32]
    on_device = captured.source.upload_order(order)
    spans = [(i, i + 8) for i in range(0, 32, 8)] * 3
    from molsam.optim.schedules import set_rho

    for step, (lo, hi) in enumerate(spans):
        if step == 6:
            set_rho(eager.optimizer, 0.02)
            set_rho(captured.optimizer, 0.02)
        batch = eager.source.gather(order[lo:hi])
        eager._train_step(batch, eager.targets[batch.index])
        captured.static.step(order[lo:hi], on_device[lo:hi])
    assert captured.static.graphs and captured.static.replayed >= 4
    for (name, p), q in zip(eager.model.named_parameters(), captured.model.parameters()):
        torch.testing.assert_close(q, p, atol=1e-4, rtol=1e-3, msg=name)
    assert float(captured.optimizer.param_groups[0]["lr"]) == pytest.approx(
        eager.optimizer.param_groups[0]["lr"], rel=1e-6)
    if optimizer != "adam":
        assert captured.optimizer.steps == eager.optimizer.steps == 12  # replays count
    base = captured.optimizer.base_optimizer if optimizer != "adam" else captured.optimizer
    assert {float(s["step"]) for s in base.state.values()} == {12.0}


def test_captured_training_runs_like_eager_training(gpu_store, tmp_path):
    eager = make_trainer(gpu_store, tmp_path / "eager", static_shapes=False, epochs=3)
    captured = make_trainer(gpu_store, tmp_path / "captured", static_shapes=True, epochs=3)
    eager.fit()
    captured.fit()
    assert captured.static.graphs, "no shape was ever captured"
    import csv

    def losses(trainer):
        with open(trainer.out_dir / "metrics.csv", newline="") as handle:
            return [float(r["train_loss"]) for r in csv.DictReader(handle)]

    np.testing.assert_allclose(losses(captured), losses(eager), rtol=2e-2)


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
