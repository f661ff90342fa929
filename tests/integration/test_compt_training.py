"""CoMPT and the reference code's training options end to end: train, resume, evaluate and
predict a CoMPT checkpoint; loss weighting; the transformer and Noam-with-decay schedules."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from molsam.evaluate import evaluate
from molsam.predict import load_ensemble, predict_smiles
from molsam.train.checkpoint import load_checkpoint
from molsam.train.loop import make_scheduler
from molsam.train.run import resume_run, train_recipe
from tests.integration.test_train import _fixture_csv as _csv
from tests.integration.test_train import _recipe as train_recipe_of
from tests.integration.test_train import train_until_interrupted

COMPT = {"name": "compt", "hidden": 16, "layers": 1, "heads": 2, "dropout": 0.0,
         "pooling": "gru", "kernel": "softmax", "norm": "scale"}


def _recipe(data: Path, **sections):
    """test_train's tiny recipe with the CoMPT model."""
    return train_recipe_of(data, **{"model": COMPT, **sections})


def _losses(run: Path) -> list[float]:
    with open(run / "seed_0" / "metrics.csv", newline="") as handle:
        return [float(row["train_loss"]) for row in csv.DictReader(handle)]


def test_compt_trains_resumes_and_its_checkpoint_predicts_and_evaluates(tmp_path):
    data = _csv(tmp_path, "bbbp.csv", 40)
    recipe = _recipe(data, optim={"name": "graphsam", "variant": "reference",
                                  "schedule": "noam", "warmup_epochs": 1, "decay_epochs": 2},
                     train={"loss_weighting": "loss"})
    summary = train_recipe(recipe, tmp_path / "full")
    assert summary["replicates"] and len(_losses(tmp_path / "full")) == 3

    # interrupted after the first epoch, resumed: the same weights as uninterrupted
    train_until_interrupted(recipe, tmp_path / "cut", after_epoch=0)
    assert load_checkpoint(tmp_path / "cut/seed_0/last.pt")["featurizer"]["extras"] == ["compt"]
    resume_run(tmp_path / "cut")
    full = load_checkpoint(tmp_path / "full/seed_0/last.pt")["model_state"]
    resumed = load_checkpoint(tmp_path / "cut/seed_0/last.pt")["model_state"]
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    assert _losses(tmp_path / "cut") == _losses(tmp_path / "full")

    ensemble = load_ensemble([tmp_path / "full"], device="cpu")
    assert ensemble.extras == ("compt",)
    smiles = ["CCO", "not a smiles", "c1ccccc1N"]
    predictions = predict_smiles(ensemble, smiles, workers=1)
    assert np.isfinite(predictions.mean[[0, 2]]).all() and np.isnan(predictions.mean[1]).all()
    report = evaluate([tmp_path / "full"], device="cpu", workers=1)
    assert "roc_auc" in str(report)


def test_loss_weighting_scales_the_gradient_by_the_loss(tmp_path):
    """With plain SGD (lr 1, one step) the update equals the gradient: weighted = L * plain."""
    data = _csv(tmp_path, "esol.csv", 16)
    updates = {}
    for weighting in ("none", "loss"):
        recipe = _recipe(data, optim={"name": "adam", "schedule": "constant", "lr": 1e-3},
                         train={"loss_weighting": weighting, "epochs": 1, "batch_size": 64},
                         split={"method": "random", "sizes": [1.0, 0.0, 0.0]})
        from molsam.train.loop import ReplicateTrainer
        from molsam.train.run import load_recipe_data

        store = load_recipe_data(recipe)
        from molsam.data.splits import SplitIndices

        split = SplitIndices(np.arange(len(store)), np.array([], int), np.array([], int))
        trainer = ReplicateTrainer(recipe, {}, store.batch_source(), split,
                                   task="regression", target_names=store.target_names, seed=0,
                                   out_dir=tmp_path / weighting, device=torch.device("cpu"))
        trainer.optimizer = torch.optim.SGD(trainer.model.parameters(), lr=1.0)
        before = [p.detach().clone() for p in trainer.model.parameters()]
        batch = trainer.source.gather(np.arange(len(store)))
        loss = trainer._train_step(batch, trainer.targets[batch.index])
        updates[weighting] = (loss, [b - p.detach() for b, p in
                                     zip(before, trainer.model.parameters())])
    loss = updates["none"][0]
    for plain, weighted in zip(updates["none"][1], updates["loss"][1]):
        torch.testing.assert_close(weighted, loss * plain, rtol=1e-5, atol=1e-7)


def test_noam_decays_over_decay_epochs_then_stays_flat(tmp_path):
    recipe = _recipe(tmp_path / "x.csv", optim={"schedule": "noam", "decay_epochs": 3,
                                                "warmup_epochs": 1},
                     train={"epochs": 10})
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
    scheduler = make_scheduler(recipe, optimizer, steps_per_epoch=4)
    lrs = []
    for _ in range(40):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(1e-4) and lrs[4] == pytest.approx(1e-3)
    assert lrs[12] == pytest.approx(1e-4) and lrs[-1] == pytest.approx(1e-4)
    assert all(b <= a for a, b in zip(lrs[4:13], lrs[5:13]))
