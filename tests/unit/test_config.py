"""Recipes: defaults, each kind of rejection, --set overrides, path resolution, round trip."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from molsam.config import (
    COMPT_KEYS,
    ModelConfig,
    Recipe,
    apply_overrides,
    load_recipe,
    recipe_from_dict,
    recipe_to_dict,
    save_recipe,
)
from molsam.errors import ConfigError
from molsam.models import CoMPTModel, GPSModel


def error_of(d: dict) -> str:
    with pytest.raises(ConfigError) as info:
        recipe_from_dict(d)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_minimal_recipe_takes_every_default() -> None:
    recipe = recipe_from_dict({"data": {"path": "my.csv"}})
    assert recipe.data.path == "my.csv"
    assert recipe.data.smiles_column == "smiles"
    assert recipe.data.target_columns is None and recipe.data.task is None
    assert recipe.split.method == "scaffold" and recipe.split.sizes == (0.8, 0.1, 0.1)
    assert recipe.optim.name == "graphsam"
    assert (recipe.optim.lr, recipe.optim.init_lr, recipe.optim.final_lr) == (1e-3, 1e-4, 1e-4)
    # rho and rho_every chosen on validation (docs/RESULTS.md, issue 9), not the paper's 0.05 / 1
    assert (recipe.optim.rho, recipe.optim.beta, recipe.optim.gamma) == (0.005, 0.99, 0.5)
    assert (recipe.optim.rho_every, recipe.optim.reanchor_every) == (10, 1)
    assert recipe.optim.extra == {}
    assert recipe.train.epochs == 30 and recipe.train.batch_size == 32
    assert recipe.train.seeds == (0,) and recipe.train.patience is None
    assert recipe.train.device == "auto" and recipe.train.metric is None


def test_model_defaults_equal_gps_model_defaults() -> None:
    params = inspect.signature(GPSModel).parameters
    # model.name and CoMPT's own keys are not GPSModel arguments; model.mol_features (extras'
    # names) becomes GPSModel's mol_features (their column count) in the trainer.
    not_gps = ("name", "mol_features") + COMPT_KEYS
    for name, value in vars(ModelConfig()).items():
        if name not in not_gps:
            assert params[name].default == value, name
    assert ModelConfig().name == "gps"
    assert ModelConfig().mol_features == () and params["mol_features"].default == 0


def test_compt_keys_default_to_compt_model_defaults() -> None:
    params = inspect.signature(CoMPTModel).parameters
    for name in COMPT_KEYS:
        assert params[name].default == getattr(ModelConfig(), name), name


@pytest.mark.parametrize(
    ("d", "expected"),
    [
        ({"data": {"path": "x"}, "optim": {"rhoo": 0.1}}, "optim.rhoo: unknown key (did you mean 'rho'?)"),
        ({"data": {"path": "x"}, "optimm": {}}, "optimm: unknown key (did you mean 'optim'?)"),
        ({"data": {"path": "x"}, "train": {"device": "gpu"}}, "train.device: 'gpu' is not one of auto, cpu, cuda"),
        ({"data": {"path": "x"}, "optim": {"lr": "fast"}}, "optim.lr: expected a number, got 'fast'"),
        ({"data": {"path": "x"}, "optim": {"rho": True}}, "optim.rho: expected a number, got True"),
        ({"data": {"path": "x"}, "train": {"epochs": 2.5}}, "train.epochs: expected an integer, got 2.5"),
        ({"data": {"path": "x"}, "split": {"sizes": [0.8, 0.3, 0.1]}}, "split.sizes: must sum to 1, got [0.8, 0.3, 0.1]"),
        ({"data": {"path": "x"}, "split": {"sizes": [-0.1, 0.6, 0.5]}}, "split.sizes[0]: expected a number in [0, 1], got -0.1"),
        ({"data": {"path": "x"}, "split": {"method": "column"}}, "split.column: required when split.method is 'column'"),
        ({"data": {"path": "x"}, "optim": {"name": "sgd"}}, "optim.name: 'sgd' is not one of adam, sam, asam, graphsam, samk, looksam, aesam, rst"),
        ({"data": {"path": "x"}, "model": {"pooling": "max"}}, "model.pooling: 'max' is not one of mean, sum, attention"),
        ({"data": {"path": "x"}, "model": {"hidden": 30, "heads": 4}}, "model.heads: 4 does not divide model.hidden=30"),
        ({"data": {"path": "x"}, "train": {"metric": "f1"}}, "train.metric: 'f1' is not one of roc_auc, prc_auc, accuracy, rmse, mae, r2"),
        ({"data": {"path": "x", "task": "regression"}, "train": {"metric": "roc_auc"}}, "train.metric: 'roc_auc' does not apply to regression; valid: rmse, mae, r2"),
        ({"data": {"path": "x"}, "train": {"seeds": [0, 0]}}, "train.seeds: duplicate entries [0]"),
        ({"data": {"path": "x"}, "train": {"seeds": 3}}, "train.seeds: expected a list, got 3"),
        ({"data": {"path": "x"}, "optim": {"beta": 1.5}}, "optim.beta: expected a number in [0, 1], got 1.5"),
        ({"data": {"path": "x"}, "optim": {"lr": 0}}, "optim.lr: expected a number > 0, got 0"),
        ({"data": {"path": "x"}, "optim": {"extra": [1]}}, "optim.extra: expected a mapping, got [1]"),
        ({"data": {"path": "x"}, "train": "fast"}, "train: expected a mapping, got 'fast'"),
        ({"data": {"smiles_column": "s"}}, "data.path: required key is missing"),
        ({"optim": {}}, "data.path: required key is missing"),
        ({"data": {"path": 3}}, "data.path: expected a string, got 3"),
    ],
)
def test_rejections_name_key_value_and_choices(d: dict, expected: str) -> None:
    assert error_of(d).startswith(expected)


def test_ints_are_accepted_for_floats_and_become_floats() -> None:
    recipe = recipe_from_dict({"data": {"path": "x"}, "optim": {"rho": 0, "lr": 1}})
    assert recipe.optim.rho == 0.0 and isinstance(recipe.optim.rho, float)
    assert isinstance(recipe.optim.lr, float)


def test_yaml_scientific_notation_without_dot_is_a_number(tmp_path: Path) -> None:
    # Plain YAML 1.1 reads `1e-3` as a string; recipes must not trip over that.
    path = tmp_path / "r.yaml"
    path.write_text("data: {path: my.csv}\noptim: {lr: 1e-3, rho: 5e-2}\n")
    recipe = load_recipe(path)
    assert recipe.optim.lr == 1e-3 and recipe.optim.rho == 0.05


def test_duplicate_yaml_keys_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("data: {path: my.csv}\noptim:\n  rho: 0.1\n  rho: 0.2\n")
    with pytest.raises(ConfigError, match=r"r.yaml:4:\d+: invalid YAML: duplicate key 'rho'"):
        load_recipe(path)


def test_missing_and_empty_recipe_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(ConfigError, match="recipe is empty"):
        load_recipe(tmp_path / "empty.yaml")
    (tmp_path / "bad.yaml").write_text("data: {path: [\n")
    with pytest.raises(ConfigError, match="bad.yaml:.*invalid YAML"):
        load_recipe(tmp_path / "bad.yaml")


def test_relative_data_path_resolves_against_recipe_folder_only_when_it_exists(
    tmp_path: Path,
) -> None:
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "my.csv").write_text("smiles,y\nC,1\n")
    (tmp_path / "recipes" / "a.yaml").write_text("data: {path: my.csv}\n")
    (tmp_path / "recipes" / "b.yaml").write_text("data: {path: bbbp}\n")
    assert load_recipe(tmp_path / "recipes" / "a.yaml").data.path == str(
        (tmp_path / "recipes" / "my.csv").resolve()
    )
    assert load_recipe(tmp_path / "recipes" / "b.yaml").data.path == "bbbp"


def test_overrides_scalar_list_nested_and_input_untouched() -> None:
    base = {"data": {"path": "x"}, "optim": {"rho": 0.05}}
    out = apply_overrides(
        base,
        [
            "optim.rho=0.01",
            "data.target_columns=[a, b]",
            "train.seeds=[1, 2, 3]",
            "optim.extra.c0=2",
            "split.method=random",
            "data.id_column=null",
        ],
    )
    assert base == {"data": {"path": "x"}, "optim": {"rho": 0.05}}
    recipe = recipe_from_dict(out)
    assert recipe.optim.rho == 0.01
    assert recipe.data.target_columns == ("a", "b")
    assert recipe.train.seeds == (1, 2, 3)
    assert recipe.optim.extra == {"c0": 2}
    assert recipe.split.method == "random"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optim.rhoo=0.1", "optim.rhoo: unknown key (did you mean 'rho'?)"),
        ("optm.rho=0.1", "optm: unknown key (did you mean 'optim'?)"),
        ("optim.rho.x=1", "optim.rho.x: optim.rho is not a mapping"),
        ("optim.rho", "--set 'optim.rho': expected KEY=VALUE"),
        ("optim.rho=[1", "--set optim.rho"),
    ],
)
def test_bad_overrides(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides({"data": {"path": "x"}}, [override])
    assert str(info.value).startswith(expected)


def test_override_values_are_then_validated() -> None:
    d = apply_overrides({"data": {"path": "x"}}, ["train.device=gpu"])
    assert error_of(d) == "train.device: 'gpu' is not one of auto, cpu, cuda"


def test_round_trip_through_yaml_gives_an_equal_recipe(tmp_path: Path) -> None:
    recipe = recipe_from_dict(
        {
            "data": {"path": "bbbp", "target_columns": "p_np", "task": "classification"},
            "split": {"method": "scaffold_balanced", "sizes": [0.7, 0.2, 0.1], "seed": 3},
            "model": {"hidden": 32, "heads": 2, "pooling": "attention"},
            "optim": {"name": "looksam", "k": 8, "alpha": 0.2, "extra": {"note": [1, 2]}},
            "train": {"seeds": [0, 1], "patience": 5, "metric": "prc_auc"},
        }
    )
    assert recipe.data.target_columns == ("p_np",)
    path = tmp_path / "resolved.yaml"
    save_recipe(recipe, path)
    again = load_recipe(path)
    assert again == recipe
    assert isinstance(again, Recipe)
    assert recipe_from_dict(recipe_to_dict(recipe)) == recipe
    assert [p.name for p in tmp_path.iterdir()] == ["resolved.yaml"]
    assert isinstance(recipe_to_dict(recipe)["train"]["seeds"], list)


def test_recipe_is_frozen() -> None:
    recipe = recipe_from_dict({"data": {"path": "x"}})
    with pytest.raises(AttributeError):
        recipe.optim.rho = 1.0  # type: ignore[misc]
