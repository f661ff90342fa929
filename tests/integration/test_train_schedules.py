"""The trainer fills in what a recipe should not have to: run-length schedules of AE-SAM and RST,
and a Noam warm-up that fits into a short run."""

from __future__ import annotations

import pytest
import torch

from molsam.models.gps import GPSModel
from molsam.train.loop import make_optimizer, warmup_epochs
from molsam.train.run import train_recipe
from tests.integration.test_train import _fixture_csv, _losses, _recipe


@pytest.mark.parametrize("name, extra", [("aesam", {}), ("rst", {"p_end": 1.0})])
def test_run_length_schedules_get_total_steps_from_the_trainer(tmp_path, name, extra):
    data = _fixture_csv(tmp_path, "bbbp.csv", 24)
    recipe = _recipe(data, optim={"name": name, "extra": extra}, train={"epochs": 3})
    model = GPSModel(1, hidden=16, layers=1, heads=2)
    assert make_optimizer(recipe, model, steps_per_epoch=7).total_steps == 3 * 7
    # optim.extra still wins when a recipe sets it
    own = _recipe(data, optim={"name": name, "extra": {**extra, "total_steps": 5}})
    assert make_optimizer(own, model, steps_per_epoch=7).total_steps == 5
    train_recipe(recipe, tmp_path / "run")  # no optim.extra.total_steps needed
    assert len(_losses(tmp_path / "run")) == 3


def test_optimizer_sees_parameter_names_for_asam(tmp_path):
    recipe = _recipe(_fixture_csv(tmp_path, "bbbp.csv", 8), optim={"name": "asam"})
    model = GPSModel(1, hidden=16, layers=1, heads=2)
    opt = make_optimizer(recipe, model)
    names = [n for g in opt.param_groups for n in g["param_names"]]
    assert names == [n for n, _ in model.named_parameters()]
    norm_gain = dict(model.named_parameters())["layers.0.norm_local.weight"]
    assert opt._asam_weights([[norm_gain]]) == [[True]]  # 1-D, but a weight by name


def test_one_epoch_run_shortens_the_warmup_and_says_so(tmp_path):
    data = _fixture_csv(tmp_path, "bbbp.csv", 40)
    recipe = _recipe(data, optim={"warmup_epochs": 2.0}, train={"epochs": 1})
    warnings: list[str] = []
    train_recipe(recipe, tmp_path / "run", log_warning=warnings.append)
    assert len(_losses(tmp_path / "run")) == 1
    assert [w for w in warnings if "optim.warmup_epochs=2" in w and "0.5 epoch" in w], warnings
    assert warmup_epochs(recipe) == (0.5, warnings[-1])
    # a warm-up shorter than the run is kept as written, silently
    assert warmup_epochs(_recipe(data, optim={"warmup_epochs": 2.0}, train={"epochs": 3})) == (
        2.0, None)
    assert torch.isfinite(torch.tensor(_losses(tmp_path / "run"))).all()
