"""A run directory is not silently mixed: data edited since, another run's last.pt, two trains
at once, and output folders that cannot be written."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from filelock import FileLock

from molsam.errors import CheckpointError, ConfigError, InputError, MolsamError
from molsam.train.checkpoint import load_checkpoint
from molsam.train.run import LOCK_FILE, resume_run, train_recipe
from tests.integration.test_train import _fixture_csv, _recipe


def _interrupted(tmp_path: Path, csv_path: Path, name: str, task: str | None = None) -> Path:
    """A run cut after its first epoch (last.pt at epoch 0)."""
    recipe = _recipe(csv_path, optim={"name": "adam"}, train={"epochs": 2})
    recipe = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, task=task))

    def stop(info: dict) -> None:
        if info.get("done_epoch"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_recipe(recipe, tmp_path / name, on_progress=stop)
    return tmp_path / name


def test_resume_refuses_a_data_file_edited_since(tmp_path):
    data = _fixture_csv(tmp_path, "bbbp.csv", 24)
    run = _interrupted(tmp_path, data, "run")
    lines = data.read_text().splitlines()
    # Same row count, other molecules: swap two data rows.
    lines[3], lines[10] = lines[10], lines[3]
    data.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match="the data changed since training"):
        resume_run(run)


def test_resume_refuses_another_runs_last_pt(tmp_path):
    bbbp = _fixture_csv(tmp_path, "bbbp.csv", 24)
    run = _interrupted(tmp_path, bbbp, "run")
    # The same molecules labelled with another task: a regression run on the same file.
    other_csv = tmp_path / "other.csv"
    rows = bbbp.read_text().splitlines()
    header = rows[0].split(",")
    at = header.index("p_np")
    header[at] = "logp"
    other_csv.write_text("\n".join([",".join(header)] + rows[1:]) + "\n")
    other = _interrupted(tmp_path, other_csv, "other", task="regression")
    assert load_checkpoint(other / "seed_0/last.pt")["task"] == "regression"
    shutil.copy(other / "seed_0/last.pt", run / "seed_0/last.pt")
    with pytest.raises(CheckpointError, match="belongs to another run"):
        resume_run(run)


def test_two_trains_into_one_run_directory_are_refused(tmp_path):
    data = _fixture_csv(tmp_path, "bbbp.csv", 16)
    recipe = _recipe(data, optim={"name": "adam"}, train={"epochs": 1})
    run = tmp_path / "run"
    run.mkdir()
    with FileLock(run / LOCK_FILE).acquire(timeout=0):  # as a concurrent `molsam train` holds it
        with pytest.raises(ConfigError, match="another `molsam train` is writing"):
            train_recipe(recipe, run)
        assert not (run / "metrics.csv").exists() and not (run / "recipe.yaml").exists()
    train_recipe(recipe, run)  # free again once the other run let go
    assert (run / "seed_0/metrics.csv").is_file()


def test_out_that_is_a_file_or_unwritable_is_one_line(tmp_path, monkeypatch):
    data = _fixture_csv(tmp_path, "bbbp.csv", 16)
    recipe = _recipe(data, optim={"name": "adam"}, train={"epochs": 1})
    existing = tmp_path / "taken.txt"
    existing.write_text("x")
    with pytest.raises(InputError, match="is an existing file, expected a folder"):
        train_recipe(recipe, existing)
    # A read-only folder (root ignores permission bits, so the check is what is exercised).
    monkeypatch.setattr("molsam.outputs._writable", lambda folder: False)
    with pytest.raises(MolsamError, match="not writable"):
        train_recipe(recipe, tmp_path / "ro")
