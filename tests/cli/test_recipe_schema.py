"""`molsam recipe schema`: a valid JSON Schema that accepts every shipped recipe and refuses what
the loader refuses (what an editor's YAML extension checks as recipes are typed)."""

from __future__ import annotations

import json

import jsonschema
import pytest
from typer.testing import CliRunner

from molsam.cli.main import app
from molsam.config import read_yaml_file
from tests.conftest import ROOT

runner = CliRunner()


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    result = runner.invoke(app, ["recipe", "schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.output)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_every_shipped_recipe_passes_the_schema(validator) -> None:
    recipes = sorted((ROOT / "recipes").rglob("*.yaml"))  # recipes/tuned/ too
    assert len(recipes) >= 7
    for path in recipes:
        errors = [e.message for e in validator.iter_errors(read_yaml_file(path))]
        assert not errors, (path.name, errors)


@pytest.mark.parametrize(
    "recipe",
    [
        {"data": {"path": "x"}, "optim": {"rhoo": 0.1}},
        {"data": {"path": "x"}, "train": {"device": "gpu"}},
        {"data": {"path": "x"}, "model": {"dropout": 1.0}},
        {"data": {"path": "x"}, "split": {"sizes": [0.5, 0.5]}},
        {"data": {"path": "x"}, "train": {"epochs": 2.5}},
        {"optim": {}},
        {"data": {"path": "x"}, "tune": {"optim.rhoo": [0.1]}},
        {"data": {"path": "x"}, "tune": {"optim.rho": {"low": 0.01, "hihg": 0.1}}},
    ],
)
def test_the_schema_refuses_what_the_loader_refuses(validator, recipe) -> None:
    assert list(validator.iter_errors(recipe))


def test_the_schema_accepts_a_tune_section(validator) -> None:
    recipe = {"data": {"path": "bbbp", "target_columns": "p_np"},
              "tune": {"optim.rho": {"low": 0.005, "high": 0.2, "log": True},
                       "model.hidden": [64, 128], "model.layers": {"low": 2, "high": 6}}}
    assert not list(validator.iter_errors(recipe))
