"""Fine-tuning (train.init_from, train.freeze, optim.encoder_lr_scale) end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from molsam.config import recipe_from_dict
from molsam.errors import ConfigError
from molsam.models import GPSModel
from molsam.train.checkpoint import load_checkpoint
from molsam.train.finetune import is_encoder
from molsam.train.run import train_recipe
from tests.conftest import SHARED_DATA

MODEL = {"hidden": 16, "layers": 1, "heads": 2, "dropout": 0.0}


def _csv(tmp_path: Path, name: str, rows: int, skip: int = 0) -> Path:
    lines = (SHARED_DATA / name).read_text().splitlines()
    path = tmp_path / f"{skip}-{name}"
    path.write_text("\n".join([lines[0]] + lines[1 + skip: 1 + skip + rows]) + "\n")
    return path


def _recipe(data: Path, model=MODEL, optim=None, **train):
    return recipe_from_dict({
        "data": {"path": str(data)},
        "split": {"method": "random", "sizes": [0.6, 0.2, 0.2], "seed": 0},
        "model": model,
        "optim": {"name": "adam", **(optim or {})},
        "train": {"epochs": 2, "batch_size": 8, "seeds": [0], "workers": 1, "device": "cpu",
                  **train},
    })


def _state(run: Path, name: str = "best.pt") -> dict:
    return load_checkpoint(run / "seed_0" / name)["model_state"]


@pytest.fixture
def pretrained(tmp_path) -> Path:
    train_recipe(_recipe(_csv(tmp_path, "bbbp.csv", 40)), tmp_path / "pre")
    return tmp_path / "pre"


def test_frozen_encoder_is_the_pretrained_one_and_a_new_head_is_trained(tmp_path, pretrained):
    data = _csv(tmp_path, "clintox.csv", 40)  # other targets: a new head
    train_recipe(_recipe(data, init_from=str(pretrained), freeze="encoder"), tmp_path / "ft")
    before, after = _state(pretrained), _state(tmp_path / "ft", "last.pt")
    for name, value in after.items():
        if is_encoder(name) and name in before:
            assert torch.equal(value, before[name]), name
    assert after["head.3.weight"].shape[0] == 2  # clintox's two tasks
    torch.manual_seed(0)  # the head the replicate started from (seed 0, as the trainer seeds)
    start = GPSModel(2, **MODEL).state_dict()
    assert not torch.equal(after["head.3.weight"], start["head.3.weight"])  # the head trained


def test_unfrozen_fine_tuning_starts_from_the_encoder_and_moves_it(tmp_path, pretrained):
    data = _csv(tmp_path, "bbbp.csv", 40, skip=40)  # same target and task: the head comes too
    recipe = _recipe(data, init_from=str(pretrained), epochs=1,
                     optim={"schedule": "constant", "lr": 1e-9})
    train_recipe(recipe, tmp_path / "ft")
    before, after = _state(pretrained), _state(tmp_path / "ft", "last.pt")
    for name, value in before.items():  # one step at lr 1e-9: still the pretrained weights
        torch.testing.assert_close(after[name], value, rtol=0, atol=1e-6)


def test_encoder_lr_scale_gives_the_encoder_its_own_learning_rate(tmp_path, pretrained):
    from molsam.train.loop import make_optimizer
    from molsam.models import GPSModel

    recipe = _recipe(tmp_path / "x.csv", init_from=str(pretrained),
                     optim={"encoder_lr_scale": 0.1, "lr": 1e-3})
    optimizer = make_optimizer(recipe, GPSModel(1, **MODEL))
    lrs = sorted(group["lr"] for group in optimizer.param_groups)
    assert lrs == pytest.approx([1e-4, 1e-3])


def test_a_checkpoint_featurized_otherwise_is_refused_in_one_line(tmp_path, pretrained):
    data = _csv(tmp_path, "bbbp.csv", 40)
    with pytest.raises(ConfigError, match="train.init_from: .* featurized differently"):
        train_recipe(_recipe(data, model={**MODEL, "pe_steps": 8}, init_from=str(pretrained)),
                     tmp_path / "bad")
    with pytest.raises(ConfigError, match="does not fit this model"):
        train_recipe(_recipe(data, model={**MODEL, "hidden": 32}, init_from=str(pretrained)),
                     tmp_path / "bad2")


def test_freeze_without_init_from_is_a_recipe_error(tmp_path):
    with pytest.raises(ConfigError, match="train.freeze"):
        _recipe(tmp_path / "x.csv", freeze="encoder")


def test_an_mve_run_starts_from_an_mse_model_with_a_new_head(tmp_path):
    data = _csv(tmp_path, "esol.csv", 40)
    train_recipe(_recipe(data), tmp_path / "pre")
    train_recipe(_recipe(data, init_from=str(tmp_path / "pre"), loss="mve"), tmp_path / "ft")
    assert _state(tmp_path / "ft", "last.pt")["head.3.weight"].shape[0] == 2  # mean, variance
