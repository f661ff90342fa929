"""`molsam tune` on a tiny fixture: the objective, test never read, pruning, a continued study,
Ctrl-C inside a trial, outputs, and best.yaml trained as is."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

optuna = pytest.importorskip("optuna")  # the `tune` extra; `make test` installs it

from optuna.trial import TrialState  # noqa: E402

from molsam.config import load_recipe, recipe_from_dict  # noqa: E402
from molsam.data.pipeline import split_store  # noqa: E402
from molsam.train.loop import ReplicateTrainer  # noqa: E402
from molsam.train.run import load_recipe_data, train_recipe  # noqa: E402
from molsam.tune import (  # noqa: E402
    default_storage,
    load_study,
    search_space,
    tune_recipe,
    worker_tag,
)
from tests.conftest import SHARED_DATA  # noqa: E402


def _fixture_csv(tmp_path: Path, rows: int = 40) -> Path:
    lines = (SHARED_DATA / "esol.csv").read_text().splitlines()[: rows + 1]
    path = tmp_path / "esol.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _recipe(tmp_path: Path, *, epochs: int = 2, seeds=(0,), tune=None):
    raw = {
        "data": {"path": str(_fixture_csv(tmp_path))},
        "split": {"method": "random", "sizes": [0.6, 0.2, 0.2], "seed": 0},
        "model": {"hidden": 8, "layers": 1, "heads": 2},
        "optim": {"warmup_epochs": 1},
        "train": {"epochs": epochs, "batch_size": 8, "seeds": list(seeds), "workers": 1},
        "tune": tune or {"optim.rho": {"low": 0.01, "high": 0.1, "log": True},
                         "model.dropout": {"low": 0.0, "high": 0.3}},
    }
    return recipe_from_dict(raw)


def _states(study) -> list[str]:
    return [t.state.name for t in study.get_trials(deepcopy=False)]


def test_search_never_evaluates_test_and_scores_mean_val_over_seeds(tmp_path, monkeypatch):
    recipe = _recipe(tmp_path, seeds=(0, 1))
    evaluated: list[np.ndarray] = []
    original = ReplicateTrainer._evaluate

    def spy(self, indices):
        evaluated.append(np.asarray(indices).copy())
        return original(self, indices)

    monkeypatch.setattr(ReplicateTrainer, "_evaluate", spy)
    result = tune_recipe(recipe, tmp_path / "tune", trials=2)
    store = load_recipe_data(recipe)
    split = split_store(store, "random", (0.6, 0.2, 0.2), 0)
    assert len(split.test) > 0
    touched = np.concatenate(evaluated)
    assert np.isin(split.val, touched).all()  # the spy saw the validation molecules ...
    assert not np.isin(split.test, touched).any()  # ... and never a test molecule
    study = load_study(result.storage)
    assert _states(study) == ["COMPLETE", "COMPLETE"]
    for trial in study.trials:  # objective = mean over seeds of each seed's best val rmse
        assert trial.value == pytest.approx(
            (trial.user_attrs["val_seed_0"] + trial.user_attrs["val_seed_1"]) / 2)
        assert sorted(trial.intermediate_values) == [0, 1, 2, 3]  # seed position * epochs + epoch
    assert result.direction == "minimize" and result.metric == "rmse"
    assert result.best_value == min(t.value for t in study.trials)

    # best.yaml is a complete recipe that trains as is, to the best trial's validation score.
    best = load_recipe(result.best_recipe)
    assert best.tune is None
    assert best.optim.rho == pytest.approx(study.best_params["optim.rho"])
    summary = train_recipe(best, tmp_path / "best-run")
    assert summary["val"]["mean"]["rmse"]["mean"] == pytest.approx(result.best_value, rel=1e-5)
    assert summary["test"]["mean"]["rmse"]["n"] == 2


def test_outputs_and_a_second_call_continues_the_study(tmp_path):
    recipe = _recipe(tmp_path, epochs=1)
    out = tmp_path / "tune"
    first = tune_recipe(recipe, out, trials=1)
    assert first.files["importance.png"] is None
    assert any("1 completed trial(s): no importance.png" in n for n in first.notes)
    assert first.files["history.png"].read_bytes()[:4] == b"\x89PNG"
    second = tune_recipe(recipe, out, trials=2)
    assert second.trials_run == 2 and second.storage == default_storage(out)
    study = load_study(second.storage)
    assert _states(study) == ["COMPLETE"] * 3
    assert len({t.params["optim.rho"] for t in study.trials}) == 3  # no replayed start-up point
    assert second.files["importance.png"].read_bytes()[:4] == b"\x89PNG"
    with open(out / "trials.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["number"] for r in rows] == ["0", "1", "2"]
    assert {"value", "optim.rho", "model.dropout", "duration_s"} <= set(rows[0])
    # A different recipe in the same study would mix incomparable trials: refused.
    other = recipe_from_dict({**yaml.safe_load(json.dumps(_plain(recipe))),
                              "train": {**_plain(recipe)["train"], "epochs": 2}})
    with pytest.raises(Exception, match=r"another recipe or search space \(recipe.train.epochs"):
        tune_recipe(other, out, trials=1)


def _plain(recipe) -> dict:
    from molsam.config import recipe_to_dict

    return recipe_to_dict(recipe)


def test_same_seed_samples_the_same_points(tmp_path):
    recipe = _recipe(tmp_path, epochs=1)
    params = []
    for name in ("a", "b"):
        result = tune_recipe(recipe, tmp_path / name, trials=2, seed=7)
        params.append([t.params for t in load_study(result.storage).trials])
    assert params[0] == params[1]


def test_pruned_and_invalid_trials_leave_a_consistent_study(tmp_path, monkeypatch):
    # model.hidden 6 is not divisible by model.heads 4: that trial fails with the config error,
    # the search goes on; a pruner that prunes at once stops the others after their first epoch.
    recipe = _recipe(tmp_path, epochs=3, tune={"model.hidden": [6, 8]})
    recipe = recipe_from_dict({**_plain(recipe), "model": {**_plain(recipe)["model"], "heads": 4}})
    monkeypatch.setattr(optuna.trial.Trial, "should_prune", lambda self: True)
    result = tune_recipe(recipe, tmp_path / "tune", trials=4)
    study = load_study(result.storage)
    states = {t.params["model.hidden"]: t.state.name for t in study.trials}
    assert states == {6: "FAIL", 8: "PRUNED"}
    for t in study.trials:
        if t.state == TrialState.PRUNED:
            assert list(t.intermediate_values) == [0]  # stopped after the first epoch
        else:
            assert "does not divide model.hidden=6" in t.user_attrs["error"]
    assert result.best_recipe is None and not list((tmp_path / "tune").glob(".trial-*"))
    assert "no trial has completed yet: no best.yaml" in result.notes


def test_keyboard_interrupt_inside_a_trial_marks_it_failed(tmp_path):
    recipe = _recipe(tmp_path, epochs=2)
    out = tmp_path / "tune"

    def interrupt_second_trial(info: dict) -> None:
        if info["trial"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as info:
        tune_recipe(recipe, out, trials=5, on_epoch=interrupt_second_trial)
    partial = info.value.tune_result
    assert partial.interrupted and partial.best_recipe == out / "best.yaml"
    study = load_study(default_storage(out))  # the storage is still loadable
    assert _states(study) == ["COMPLETE", "FAIL"]  # never left RUNNING
    assert (out / "best.yaml").is_file() and (out / "trials.csv").is_file()
    tune_recipe(recipe, out, trials=1)  # and the study continues
    assert _states(load_study(default_storage(out))) == ["COMPLETE", "FAIL", "COMPLETE"]


def test_trials_of_a_killed_search_on_this_host_are_marked_failed_when_it_continues(tmp_path):
    # A search killed outright (SIGKILL, a lost session) leaves its trial RUNNING; the next
    # search on the study marks it failed. Trials of a live process, or of another machine on a
    # shared storage, are not this search's to judge and stay as they are.
    recipe = _recipe(tmp_path, epochs=1)
    out = tmp_path / "tune"
    tune_recipe(recipe, out, trials=1)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    dead_pid = int(finished.stdout)
    study = load_study(default_storage(out))
    elsewhere = f"another-000000000000:{dead_pid}"
    for tag in (worker_tag(dead_pid), worker_tag(os.getpid()), elsewhere):
        study.ask().set_user_attr("worker", tag)
    result = tune_recipe(recipe, out, trials=1)
    study = load_study(default_storage(out))
    assert _states(study) == ["COMPLETE", "FAIL", "RUNNING", "RUNNING", "COMPLETE"]
    assert study.trials[1].user_attrs["error"] == (
        f"abandoned: process {worker_tag(dead_pid)} ended (killed) during it")
    assert result.notes[0] == ("trial(s) 1 had been left RUNNING by a killed search on this "
                               "machine: marked failed")
    assert study.trials[4].user_attrs["worker"] == worker_tag(os.getpid())  # every trial tagged


def test_default_space_leaves_rho_out_for_adam(tmp_path):
    raw = {"data": {"path": "x.csv"}}
    assert set(search_space(recipe_from_dict(raw))) == {
        "optim.rho", "optim.lr", "model.hidden", "model.layers", "model.dropout"}
    adam = recipe_from_dict({**raw, "optim": {"name": "adam"}})
    assert "optim.rho" not in search_space(adam)
