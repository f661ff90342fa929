"""The recipe's `tune:` section: parsed ranges and choices, round trip, --set into it."""

from __future__ import annotations

import pytest

from molsam.config import (
    SearchChoices,
    SearchRange,
    apply_overrides,
    recipe_from_dict,
    recipe_to_dict,
)
from molsam.errors import ConfigError

BASE = {"data": {"path": "x.csv"}}


def test_ranges_take_the_keys_type_and_round_trip() -> None:
    recipe = recipe_from_dict({**BASE, "tune": {
        "optim.rho": {"low": 0.01, "high": 0.2, "log": True},
        "model.layers": {"low": 2, "high": 6, "step": 2},
        "model.hidden": [64, 128],
        "optim.name": ["sam", "graphsam"],
    }})
    space = recipe.tune.as_dict()
    assert space["optim.rho"] == SearchRange.of(0.01, 0.2, log=True, integer=False)
    assert space["model.layers"] == SearchRange.of(2, 6, step=2, integer=True)
    assert space["model.layers"] != SearchRange.of(2, 6, step=2, integer=False)
    assert space["model.hidden"] == SearchChoices(choices=(64, 128))
    assert recipe_from_dict(recipe_to_dict(recipe)) == recipe
    assert "tune" not in recipe_to_dict(recipe_from_dict(BASE))  # absent stays absent


@pytest.mark.parametrize(
    ("tune", "expected"),
    [
        ({}, "tune: expected recipe keys to search, got {}"),
        ({"model.layers": {"low": 2.5, "high": 4}}, "tune.model.layers.low: expected an integer, got 2.5"),
        ({"optim.lr": {"low": 1e-4}}, "tune.optim.lr.high: required key is missing"),
        ({"optim.lr": {"low": 1e-4, "high": 1e-2, "lg": True}}, "tune.optim.lr.lg: unknown key (did you mean 'log'?)"),
        ({"optim.lr": {"low": 1e-4, "high": 1e-2, "log": True, "step": 1e-4}}, "tune.optim.lr: log and step cannot be combined"),
        ({"model.layers": {"low": 2, "high": 6, "step": 0}}, "tune.model.layers.step: expected an integer >= 1, got 0"),
        ({"model.hidden": []}, "tune.model.hidden: expected a non-empty list of choices, got []"),
        ({"model.hidden": [64, 64]}, "tune.model.hidden: duplicate choices in [64, 64]"),
        ({"model.hidden": [[64]]}, "tune.model.hidden[0]: a choice must be a single value, got [64]"),
        ({"train.metric": ["rmse"]}, "tune.train.metric: cannot be searched"),
        ({"optim": {"rho": [0.1]}}, "tune.optim: unknown key"),
        ({"model.pooling": {"low": 0, "high": 1}}, "tune.model.pooling: {'low': 0, 'high': 1}: a range needs a numeric key"),
        ({"optim.lr": 0.1}, "tune.optim.lr: expected {low: ..., high: ...} or a list of choices, got 0.1"),
        ({"pruner": {"name": "hyperband"}}, "tune.pruner.name: 'hyperband' is not one of median, successive_halving, none"),
        ({"pruner": {"nme": "median"}}, "tune.pruner.nme: unknown key (did you mean 'name'?)"),
        ({"prunner": {"name": "median"}}, "tune.prunner: unknown key (did you mean 'pruner'?)"),
        ({"pruner": "median"}, "tune.pruner: expected a mapping, got 'median'"),
        ({"pruner": {"name": "successive_halving", "startup_trials": 2}},
         "tune.pruner.startup_trials: only the median pruner has it (tune.pruner.name is 'successive_halving')"),
        ({"pruner": {"reduction_factor": 3}},
         "tune.pruner.reduction_factor: only the successive_halving pruner has it (tune.pruner.name is 'median')"),
        ({"pruner": {"name": "successive_halving", "reduction_factor": 1}},
         "tune.pruner.reduction_factor: expected an integer >= 2, got 1"),
        ({"pruner": {"warmup_epochs": -1}}, "tune.pruner.warmup_epochs: expected an integer >= 0, got -1"),
        ({"pruner": {"name": "none", "warmup_epochs": 3}}, "tune.pruner.warmup_epochs: the none pruner never prunes"),
    ],
)
def test_bad_tune_sections_name_the_key(tune: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        recipe_from_dict({**BASE, "tune": tune})
    assert str(info.value).startswith(expected) and "\n" not in str(info.value)


def test_set_reaches_into_dotted_tune_keys() -> None:
    d = apply_overrides(BASE, ["tune.optim.rho.high=0.3", "tune.optim.rho.low=0.01",
                               "tune.model.hidden=[32, 64]"])
    assert d["tune"] == {"optim.rho": {"high": 0.3, "low": 0.01}, "model.hidden": [32, 64]}
    assert recipe_from_dict(d).tune.as_dict()["optim.rho"].high == 0.3


def test_pruner_is_a_setting_not_a_searched_key() -> None:
    from molsam.config import PrunerConfig
    from molsam.tune import DEFAULT_SPACE, search_space

    only = recipe_from_dict({**BASE, "tune": {"pruner": {"name": "successive_halving"}}})
    assert only.tune.pruner == PrunerConfig(name="successive_halving")
    assert only.tune.as_dict() == {}  # nothing searched here: the default space is
    assert set(search_space(only)) == set(DEFAULT_SPACE)
    both = recipe_from_dict({**BASE, "tune": {"optim.rho": [0.01, 0.02],
                                              "pruner": {"name": "median", "startup_trials": 2}}})
    assert set(both.tune.as_dict()) == {"optim.rho"}
    assert recipe_to_dict(both)["tune"]["pruner"] == {"name": "median", "startup_trials": 2}
    for recipe in (only, both):
        assert recipe_from_dict(recipe_to_dict(recipe)) == recipe
    d = apply_overrides(BASE, ["tune.pruner.name=successive_halving",
                               "tune.pruner.reduction_factor=4"])
    assert d["tune"] == {"pruner": {"name": "successive_halving", "reduction_factor": 4}}
    assert recipe_from_dict(d).tune.pruner.reduction_factor == 4
