"""A recipe's YAML cannot make molsam hang: aliases are counted before anything is copied."""

from __future__ import annotations

import time

import pytest

from molsam.config import MAX_YAML_VALUES, apply_overrides, load_recipe, load_recipe_dict
from molsam.errors import ConfigError


def _bomb(levels: int = 9) -> str:
    """The billion laughs: level k is a list of ten aliases of level k - 1 (10^9 values)."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for k in range(1, levels):
        refs = ", ".join(f"*a{k - 1}" for _ in range(10))
        lines.append(f"a{k}: &a{k} [{refs}]")
    return "data: {path: x.csv}\noptim:\n  extra:\n" + "\n".join(
        "    " + line for line in lines) + "\n"


def test_alias_bomb_is_refused_before_expansion(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb())
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"bomb\.yaml:\d+:\d+: invalid YAML: aliases expand"):
        apply_overrides(load_recipe_dict(path), ["optim.rho=0.1"])  # copies the parsed recipe
    assert time.perf_counter() - started < 5  # refused from the node graph, not by copying


def test_recursive_alias_is_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("data: {path: x.csv}\noptim:\n  extra: &e {again: *e}\n")
    with pytest.raises(ConfigError, match="recursive alias"):
        load_recipe_dict(path)


def test_honest_aliases_still_load(tmp_path):
    (tmp_path / "x.csv").write_text("smiles,y\nCCO,1\n")
    path = tmp_path / "ok.yaml"
    path.write_text("data: {path: x.csv}\nmodel: &m {hidden: 32, heads: 4}\n"
                    "optim: {extra: {shared: *m}}\n")
    recipe = load_recipe(path)
    assert recipe.model.hidden == 32 and recipe.optim.extra == {"shared": {"hidden": 32, "heads": 4}}
    # a list shared through an alias counts once per use, well under the limit
    items = ", ".join(["1"] * 100)
    path.write_text(f"data: {{path: x.csv}}\noptim: {{extra: {{a: &a [{items}], b: *a}}}}\n")
    assert len(load_recipe(path).optim.extra["b"]) == 100
    assert MAX_YAML_VALUES >= 10_000
