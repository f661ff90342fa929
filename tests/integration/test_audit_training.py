"""Training properties the audit found untested: best.pt is the best validation epoch of
metrics.csv (either metric direction), resume with dropout and several seeds, and missing labels.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from molsam.train.checkpoint import load_checkpoint
from molsam.train.losses import masked_loss
from molsam.train.run import resume_run, train_recipe
from tests.integration.test_train import _fixture_csv, _metric_rows, _recipe, _weights


def _rows(run: Path, seed: int = 0) -> list[dict]:
    with open(run / f"seed_{seed}" / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("name, metric, pick", [
    ("bbbp.csv", "roc_auc", np.argmax),   # higher is better
    ("esol.csv", "rmse", np.argmin),      # lower is better
])
def test_best_checkpoint_is_the_best_validation_epoch(tmp_path, name, metric, pick):
    data = _fixture_csv(tmp_path, name, 48)
    # A large constant learning rate makes validation scores jump around; patience 2 stops the
    # run after two epochs without a new best, so the last epoch is never the best one.
    recipe = _recipe(data, split={"sizes": [0.5, 0.3, 0.2]},
                     optim={"name": "adam", "schedule": "constant", "lr": 3e-2},
                     train={"epochs": 12, "patience": 2, "metric": metric})
    summary = train_recipe(recipe, tmp_path / "run")
    rows = _rows(tmp_path / "run")
    scores = np.array([float(r[f"val_{metric}"]) for r in rows])
    best_epoch = int(pick(scores))  # first epoch with the best score (an improvement is strict)
    assert len(rows) < 12 and best_epoch < len(rows) - 1, scores  # stopped early
    best = load_checkpoint(tmp_path / "run/seed_0/best.pt")
    assert best["epoch"] == best_epoch == summary["replicates"][0]["best_epoch"]
    assert best["metric"] == metric
    assert best["best_metric"] == pytest.approx(scores[best_epoch], rel=1e-5)
    # Re-scored from the saved weights, as the summary does, the same validation score comes out.
    assert summary["val"]["mean"][metric]["mean"] == pytest.approx(scores[best_epoch], rel=1e-5)
    last = load_checkpoint(tmp_path / "run/seed_0/last.pt")
    assert last["epoch"] == len(rows) - 1
    assert any(not torch.equal(best["model_state"][k], last["model_state"][k])
               for k in best["model_state"])


def test_resume_with_dropout_and_several_seeds_equals_an_uninterrupted_run(tmp_path):
    data = _fixture_csv(tmp_path, "bbbp.csv", 32)
    recipe = _recipe(data, model={"dropout": 0.3, "attn_dropout": 0.2},
                     optim={"name": "graphsam"}, train={"epochs": 3, "seeds": [0, 1, 2]})
    train_recipe(recipe, tmp_path / "full")

    def cut_in_seed_1(info: dict) -> None:  # seed 0 done, seed 1 after its first epoch
        if info.get("done_epoch") and info["seed"] == 1 and info["epoch"] == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_recipe(recipe, tmp_path / "cut", on_progress=cut_in_seed_1)
    assert load_checkpoint(tmp_path / "cut/seed_0/last.pt")["training_state"]["early_stopping"][
        "finished"]
    assert not (tmp_path / "cut/seed_2").exists()
    resumed = resume_run(tmp_path / "cut")
    for seed in (0, 1, 2):
        for name in ("best.pt", "last.pt"):
            full = _weights(tmp_path / f"full/seed_{seed}" / name)
            cut = _weights(tmp_path / f"cut/seed_{seed}" / name)
            assert all(torch.equal(full[k], cut[k]) for k in full), (seed, name)
        strip = [{k: v for k, v in r.items() if k not in ("seconds", "graphs_per_s")}
                 for r in _rows(tmp_path / "full", seed)]
        assert strip == [{k: v for k, v in r.items() if k not in ("seconds", "graphs_per_s")}
                         for r in _rows(tmp_path / "cut", seed)]
    full = json.loads((tmp_path / "full/summary.json").read_text())
    assert resumed["test"] == full["test"] and len(resumed["replicates"]) == 3
    assert _metric_rows(tmp_path / "full") == _metric_rows(tmp_path / "cut")


def test_missing_labels_are_masked_and_the_scaler_sees_only_training_rows(tmp_path):
    rows = (Path(_fixture_csv(tmp_path, "esol.csv", 40)).read_text().splitlines())
    header = rows[0].split(",")
    y = header.index("logSolubility")
    out = ["smiles,a,b"]
    rng = np.random.default_rng(0)
    for i, line in enumerate(rows[1:]):
        cells = line.split(",")
        a = cells[y] if i % 3 else ""                      # a third of 'a' missing
        b = f"{float(cells[y]) * 2 + rng.normal():.4f}" if i % 4 else ""  # a quarter of 'b'
        out.append(f"{cells[header.index('smiles')]},{a},{b}")
    data = tmp_path / "missing.csv"
    data.write_text("\n".join(out) + "\n")
    recipe = _recipe(data, optim={"name": "adam"}, train={"epochs": 2})
    train_recipe(recipe, tmp_path / "run")
    losses = [float(r["train_loss"]) for r in _rows(tmp_path / "run")]
    assert all(np.isfinite(losses))
    splits = json.loads((tmp_path / "run/splits.json").read_text())
    train_rows = splits["train"]["rows"]
    labels = np.array([[float(c) if c else np.nan for c in line.split(",")[1:]]
                       for line in out[1:]])[train_rows]
    scaler = load_checkpoint(tmp_path / "run/seed_0/best.pt")["scaler"]
    np.testing.assert_allclose(scaler["mean"], np.nanmean(labels, axis=0), rtol=1e-5)
    np.testing.assert_allclose(scaler["std"], np.nanstd(labels, axis=0), rtol=1e-5)
    everything = np.array([[float(c) if c else np.nan for c in line.split(",")[1:]]
                           for line in out[1:]])
    assert not np.allclose(scaler["mean"], np.nanmean(everything, axis=0), rtol=1e-5)


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_masked_loss_ignores_missing_labels_and_their_outputs(task):
    torch.manual_seed(0)
    output = torch.randn(6, 2, requires_grad=True)
    targets = torch.tensor([[1.0, 0.0], [float("nan"), 1.0], [0.0, float("nan")],
                            [1.0, 1.0], [float("nan"), float("nan")], [0.0, 0.0]])
    loss = masked_loss(output, targets, task)
    loss.backward()
    present = ~torch.isnan(targets)
    if task == "regression":
        expected = ((output - targets.nan_to_num()) ** 2)[present].mean()
    else:
        expected = torch.nn.functional.binary_cross_entropy_with_logits(
            output[present], targets[present])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.all(output.grad[~present] == 0)  # a missing label pulls on nothing
    assert torch.all(output.grad[present] != 0)
