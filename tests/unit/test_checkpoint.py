"""Checkpoints: round trip, weights_only safety, atomic writes, each refusal, RNG state, resume."""

from __future__ import annotations

import random
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from molsam.config import recipe_from_dict, recipe_to_dict
from molsam.errors import CheckpointError
from molsam.models import GPSModel
from molsam.train.checkpoint import (
    build_checkpoint,
    capture_rng_state,
    check_feature_spec,
    feature_spec_matches,
    load_checkpoint,
    model_from_checkpoint,
    restore_rng_state,
    save_checkpoint,
    training_state,
)


def small_model() -> GPSModel:
    torch.manual_seed(0)
    return GPSModel(2, hidden=16, layers=1, heads=2, pe_steps=8)


RECIPE = {"data": {"path": "bbbp"}, "model": {"hidden": 16, "layers": 1, "pe_steps": 8}}


def payload(model: GPSModel | None = None, **kwargs) -> dict:
    model = model or small_model()
    recipe = recipe_from_dict(RECIPE)
    return build_checkpoint(
        model,
        target_names=["a", "b"],
        task="regression",
        recipe=recipe,
        split_seed=1,
        seed=2,
        epoch=3,
        best_metric=0.5,
        metric="rmse",
        scaler={"mean": np.array([1.0, 2.0]), "std": [0.5, 4.0]},
        **kwargs,
    )


def test_round_trip_restores_model_and_fields(tmp_path: Path) -> None:
    model = small_model()
    path = tmp_path / "best.pt"
    save_checkpoint(path, payload(model))
    # A plain torch.load with weights_only=True must read it: nothing needs unpickling.
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "molsam-checkpoint" and raw["format_version"] == 1
    ckpt = load_checkpoint(path)
    assert ckpt["target_names"] == ["a", "b"] and ckpt["task"] == "regression"
    assert ckpt["scaler"] == {"mean": [1.0, 2.0], "std": [0.5, 4.0]}
    assert (ckpt["split_seed"], ckpt["seed"], ckpt["epoch"]) == (1, 2, 3)
    assert ckpt["best_metric"] == 0.5 and ckpt["metric"] == "rmse"
    assert ckpt["recipe"]["data"]["path"] == "bbbp"
    assert ckpt["recipe"] == recipe_to_dict(recipe_from_dict(RECIPE))
    assert recipe_from_dict(ckpt["recipe"]) == recipe_from_dict(RECIPE)
    assert set(ckpt["versions"]) == {"molsam", "torch", "rdkit"}
    assert ckpt["featurizer"]["rwse_steps"] == 8
    rebuilt = model_from_checkpoint(ckpt)
    assert not rebuilt.training
    assert rebuilt.config() == model.config()
    for (name, a), b in zip(model.state_dict().items(), rebuilt.state_dict().values()):
        assert torch.equal(a, b), name
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]


def test_overwrite_replaces_the_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, payload())
    save_checkpoint(path, {**payload(), "epoch": 9})
    assert load_checkpoint(path)["epoch"] == 9
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_failed_save_does_not_clobber_existing_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "best.pt"
    save_checkpoint(path, payload())
    before = path.read_bytes()

    # 1. an object weights_only could never load is refused before anything is written
    with pytest.raises(TypeError, match="checkpoint key checkpoint.extra"):
        save_checkpoint(path, {**payload(), "extra": object()})

    # 2. serialization dies half way: the temp file goes, the old checkpoint stays
    real_save = torch.save

    def exploding_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, payload())
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_truncated_file_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "best.pt"
    save_checkpoint(path, payload())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(path)


def test_damaged_member_is_corrupt(tmp_path: Path) -> None:
    # A complete zip whose pickle member is missing: torch.load fails, reported as corrupt.
    path = tmp_path / "best.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("best/version", "3\n")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)


def test_non_torch_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("smiles,y\nCCO,1\n")
    with pytest.raises(CheckpointError, match="not a molsam checkpoint"):
        load_checkpoint(path)


def test_foreign_torch_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": small_model().state_dict()}, path)
    with pytest.raises(CheckpointError, match="not a molsam checkpoint"):
        load_checkpoint(path)
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match="not a molsam checkpoint"):
        load_checkpoint(path)


def test_other_format_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.pt"
    torch.save({**payload(), "format_version": 2}, path)
    with pytest.raises(
        CheckpointError,
        match=r"checkpoint format version 2 is not supported by molsam 0\.1\.0 \(supports 1\)",
    ):
        load_checkpoint(path)


class Evil:
    """An arbitrary class: unpickling it unsafely could run code (__reduce__)."""

    def __reduce__(self):
        return (print, ("unsafe unpickle ran",))


def test_objects_weights_only_refuses_are_never_unpickled(tmp_path: Path, capsys) -> None:
    path = tmp_path / "evil.pt"
    torch.save({**payload(), "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(path)
    assert "unsafe unpickle ran" not in capsys.readouterr().out


def test_incomplete_checkpoint_names_missing_keys(tmp_path: Path) -> None:
    path = tmp_path / "thin.pt"
    torch.save({"format": "molsam-checkpoint", "format_version": 1, "model_config": {}}, path)
    with pytest.raises(CheckpointError, match="missing model_state, featurizer"):
        load_checkpoint(path)


def test_featurizer_mismatch_is_refused() -> None:
    ckpt = payload()
    assert feature_spec_matches(ckpt)
    check_feature_spec(ckpt)
    old = {**ckpt, "featurizer": {**ckpt["featurizer"], "version": 0}}
    assert not feature_spec_matches(old)
    with pytest.raises(CheckpointError, match="featurizer version 0"):
        model_from_checkpoint(old)
    resized = {**ckpt, "featurizer": {**ckpt["featurizer"], "atom_features": [["atomic_num", 5]]}}
    with pytest.raises(CheckpointError, match="differs .* in 'atom_features'"):
        check_feature_spec(resized)


def test_weights_that_do_not_fit_config_are_refused() -> None:
    ckpt = payload()
    bad = {**ckpt, "model_config": {**ckpt["model_config"], "hidden": 32}}
    with pytest.raises(CheckpointError, match="weights do not fit"):
        model_from_checkpoint(bad)


def test_rng_state_round_trip_through_file(tmp_path: Path) -> None:
    base = payload()  # builds a model: consumes torch's RNG, so before the capture
    gen = np.random.default_rng(7)
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    state = capture_rng_state(gen)
    path = tmp_path / "rng.pt"
    save_checkpoint(path, {**base, "training_state": {"rng": state}})
    expected = (torch.rand(3), np.random.rand(3), random.random(), gen.random(3))

    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    gen2 = np.random.default_rng(99)
    restore_rng_state(load_checkpoint(path)["training_state"]["rng"], gen2)
    got = (torch.rand(3), np.random.rand(3), random.random(), gen2.random(3))
    assert torch.equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    assert got[2] == expected[2]
    np.testing.assert_array_equal(got[3], expected[3])


def test_resume_continues_optimizer_exactly(tmp_path: Path) -> None:
    model = small_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    params = list(model.parameters())
    for _ in range(2):
        opt.zero_grad()
        sum(p.square().sum() for p in params).backward()
        opt.step()
        sched.step()
    path = tmp_path / "last.pt"
    save_checkpoint(
        path,
        payload(model, training=training_state(opt, sched, {"best": 0.4, "bad_epochs": 1})),
    )
    ckpt = load_checkpoint(path)
    resumed = model_from_checkpoint(ckpt).train()
    opt2 = torch.optim.Adam(resumed.parameters(), lr=1e-2)
    opt2.load_state_dict(ckpt["training_state"]["optimizer"])
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=1, gamma=0.5)
    sched2.load_state_dict(ckpt["training_state"]["scheduler"])
    assert ckpt["training_state"]["early_stopping"] == {"best": 0.4, "bad_epochs": 1}
    for m, o in ((model, opt), (resumed, opt2)):
        o.zero_grad()
        sum(p.square().sum() for p in m.parameters()).backward()
        o.step()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == 2.5e-3
    for a, b in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_build_checkpoint_rejects_mismatched_targets() -> None:
    with pytest.raises(ValueError, match="3 names for a model with 2 outputs"):
        build_checkpoint(
            small_model(), target_names=["a", "b", "c"], task="classification",
            recipe={}, split_seed=0, seed=0, epoch=0,
        )
    with pytest.raises(ValueError, match="classification, regression, multiclass"):
        build_checkpoint(
            small_model(), target_names=["a", "b"], task="ranking",
            recipe={}, split_seed=0, seed=0, epoch=0,
        )
    with pytest.raises(ValueError, match="classes: needed for multiclass"):
        build_checkpoint(
            small_model(), target_names=["a", "b"], task="multiclass",
            recipe={}, split_seed=0, seed=0, epoch=0,
        )
    with pytest.raises(ValueError, match="classes: 3 classes in all for a model with 2 outputs"):
        build_checkpoint(
            small_model(), target_names=["a"], task="multiclass", classes=[["x", "y", "z"]],
            recipe={}, split_seed=0, seed=0, epoch=0,
        )
