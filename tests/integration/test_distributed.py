"""Data-parallel training on CPU with gloo: 2 ranks x 16 molecules = 1 rank x 32, identical
optimizer state on every rank, rank-0-only files, exact resume, and the torchrun CLI path."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from molsam.config import recipe_from_dict, recipe_to_dict
from molsam.data.splits import SplitIndices
from molsam.data.store import GraphStore
from molsam.train.checkpoint import load_checkpoint
from molsam.train.distributed import Distributed, shutdown
from molsam.train.loop import ReplicateTrainer
from tests.conftest import ROOT, SHARED_DATA

MOLECULES = 80  # 64 train (two global batches of 32 per epoch), 8 val, 8 test
EPOCHS = 10  # 20 optimizer steps


def _recipe(optimizer: str, epochs: int = EPOCHS) -> dict:
    return {
        "data": {"path": str(SHARED_DATA / "bbbp.csv")},
        "model": {"hidden": 16, "layers": 1, "heads": 2, "dropout": 0.0},
        # Adam moves each weight by about lr per step: far enough in 20 steps to compare
        "optim": {"name": optimizer, "schedule": "constant", "lr": 1e-3, "rho": 0.05},
        "train": {"epochs": epochs, "batch_size": 32, "seeds": [0], "device": "cpu"},
    }


def _split() -> SplitIndices:
    order = np.random.default_rng(0).permutation(MOLECULES)
    return SplitIndices(np.sort(order[:64]), np.sort(order[64:72]), np.sort(order[72:]))


def _trainer(store: GraphStore, recipe: dict, out: Path, dist: Distributed,
             on_progress=None) -> ReplicateTrainer:
    return ReplicateTrainer(
        recipe_from_dict(recipe), recipe, store.batch_source("cpu"), _split(),
        task="classification", target_names=store.target_names, seed=0, out_dir=out,
        device=torch.device("cpu"), on_progress=on_progress, dist=dist,
    )


def _state(trainer: ReplicateTrainer) -> dict:
    """Weights and GraphSAM's moving average e (empty for Adam), as this rank holds them."""
    optimizer = trainer.optimizer
    return {
        "params": {k: v.clone() for k, v in trainer.model.state_dict().items()},
        "e": [optimizer.state[p]["e"].clone() for g in optimizer.param_groups
              for p in g["params"] if "e" in optimizer.state[p]],
    }


class _Interrupt(Exception):
    pass


def _interrupt_after_first_epoch(info: dict) -> None:
    if info.get("done_epoch") and info["epoch"] == 0:
        raise _Interrupt


def _run_all(tmp: Path, dist: Distributed) -> None:
    """What each process does (one process: the reference); results saved per rank."""
    store = GraphStore.load(tmp / "store.pt")
    tag = f"w{dist.world_size}"
    results = {}
    for optimizer in ("adam", "graphsam"):
        trainer = _trainer(store, _recipe(optimizer), tmp / f"{optimizer}-{tag}", dist)
        trainer.fit()
        results[optimizer] = _state(trainer)
    if dist.enabled:  # resume: stopped after epoch 0 on every rank, continued from last.pt
        recipe = _recipe("graphsam", epochs=3)
        _trainer(store, recipe, tmp / "full", dist).fit()
        with pytest.raises(_Interrupt):
            _trainer(store, recipe, tmp / "cut", dist, _interrupt_after_first_epoch).fit()
        dist.barrier()
        resumed = _trainer(store, recipe, tmp / "cut", dist)
        resumed.resume(tmp / "cut" / "last.pt")
        resumed.fit()
    torch.save(results, tmp / f"{tag}-rank{dist.rank}.pt")


def _worker(rank: int, world: int, port: int, tmp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist = Distributed.from_environment()
    dist.join(torch.device("cpu"))
    try:
        _run_all(Path(tmp), dist)
    finally:
        shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """One reference process and two gloo ranks, each training Adam and GraphSAM."""
    tmp = tmp_path_factory.mktemp("ddp")
    lines = (SHARED_DATA / "bbbp.csv").read_text().splitlines()
    header, rows = lines[0], lines[1 : MOLECULES + 1]
    smiles_col = header.split(",").index("smiles")
    label_col = header.split(",").index("p_np")
    cells = [r.split(",") for r in rows]
    labels = np.array([[float(c[label_col])] for c in cells], dtype=np.float32)
    labels[::7] = np.nan  # missing labels: ranks must weight by label counts, not molecules
    store = GraphStore.from_smiles([c[smiles_col] for c in cells], labels, target_names=["p_np"],
                                   task="classification", workers=1)
    assert len(store) == MOLECULES
    store.save(tmp / "store.pt")
    mp.spawn(_worker, args=(2, _free_port(), str(tmp)), nprocs=2, join=True)
    _run_all(tmp, Distributed())
    return tmp


@pytest.mark.parametrize("optimizer", ["adam", "graphsam"])
def test_two_ranks_of_16_equal_one_process_of_32(runs, optimizer):
    single = torch.load(runs / "w1-rank0.pt", weights_only=True)[optimizer]
    ranks = [torch.load(runs / f"w2-rank{r}.pt", weights_only=True)[optimizer] for r in (0, 1)]
    start = _trainer(GraphStore.load(runs / "store.pt"), _recipe(optimizer), runs / "x",
                     Distributed()).model.state_dict()
    for name, value in single["params"].items():
        assert (value - start[name]).abs().max() > 1e-3, name  # 20 steps moved it
        torch.testing.assert_close(ranks[0]["params"][name], value, atol=1e-5, rtol=0)
        assert torch.equal(ranks[0]["params"][name], ranks[1]["params"][name]), name
    if optimizer == "graphsam":
        # the all-reduce inside the closure gives every rank the same gradients, so the moving
        # average e is bit for bit the same on both ranks (and close to one process's)
        assert len(ranks[0]["e"]) == len(single["e"]) > 0
        for e0, e1, e in zip(ranks[0]["e"], ranks[1]["e"], single["e"]):
            assert torch.equal(e0, e1)
            torch.testing.assert_close(e0, e, atol=1e-5, rtol=1e-4)


def test_rank_zero_writes_once_and_validation_is_gathered(runs):
    def rows(run: str) -> list[dict]:
        with open(runs / run / "metrics.csv", newline="") as handle:
            return list(csv.DictReader(handle))

    single, parallel = rows("graphsam-w1"), rows("graphsam-w2")
    assert [r["epoch"] for r in parallel] == [str(e) for e in range(EPOCHS)]  # no duplicates
    scored = [k for k in single[0] if k.startswith(("val_", "test_")) and single[0][k]]
    assert "val_accuracy" in scored and "test_accuracy" in scored
    for a, b in zip(single, parallel):
        assert float(a["train_loss"]) == pytest.approx(float(b["train_loss"]), abs=1e-5)
        # every val/test molecule scored once: the two ranks' halves gathered
        for key in scored:
            assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-6), key
    assert sorted(p.name for p in (runs / "graphsam-w2").iterdir()) == [
        "best.pt", "last.pt", "metrics.csv"]


def test_resume_on_two_ranks_ends_where_an_uninterrupted_run_ends(runs):
    full, cut = load_checkpoint(runs / "full/last.pt"), load_checkpoint(runs / "cut/last.pt")
    assert cut["epoch"] == full["epoch"] == 2
    assert all(torch.equal(full["model_state"][k], cut["model_state"][k])
               for k in full["model_state"])
    assert str(full["training_state"]["optimizer"]) == str(cut["training_state"]["optimizer"])


def test_label_counts_and_parts():
    present = np.array([[1, 0], [1, 1], [0, 0], [1, 1], [0, 1]], dtype=bool)
    order = np.array([4, 2, 0, 1, 3])
    assert Distributed.label_counts(present, order, 2).tolist() == [1.0, 3.0, 2.0]
    assert [Distributed(r, 3, r).train_bounds(2) for r in range(3)] == [
        (0, 1, True), (1, 2, True), (0, 1, False)]  # rank 2: no molecule, labels masked
    assert [Distributed(r, 2, r).train_bounds(5) for r in range(2)] == [(0, 3, True), (3, 5, True)]
    assert Distributed().train_bounds(5) == (0, 5, True)


def test_torchrun_command_line_trains_on_two_processes(tmp_path):
    """`molsam train recipe --devices 2`, which runs `torchrun --standalone --nproc-per-node 2
    -m molsam train recipe --out RUN` for the user."""
    lines = (SHARED_DATA / "bbbp.csv").read_text().splitlines()[:41]
    (tmp_path / "bbbp.csv").write_text("\n".join(lines) + "\n")
    recipe = {"data": {"path": "bbbp.csv"},
              "model": {"hidden": 16, "layers": 1, "heads": 2, "dropout": 0.0},
              "train": {"epochs": 2, "batch_size": 8, "seeds": [0], "device": "cpu",
                        "workers": 1, "devices": 2}}
    (tmp_path / "r.yaml").write_text(json.dumps(recipe))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "molsam", "train", str(tmp_path / "r.yaml"),
                           "--out", str(tmp_path / "run")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("run directory:") == 1  # rank 0 alone reports
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["processes"] == 2
    with open(tmp_path / "run/seed_0/metrics.csv", newline="") as handle:
        assert [r["epoch"] for r in csv.DictReader(handle)] == ["0", "1"]


def test_launch_arguments_fix_the_run_directory_for_every_process(tmp_path):
    from molsam.cli.train import _launch_argv

    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({"data": {"path": str(SHARED_DATA / "bbbp.csv")},
                                  "train": {"devices": 3}}))
    assert _launch_argv(recipe, tmp_path / "run", ["optim.rho=0.01"], None, None) == [
        3, "train", str(recipe), "--out", str(tmp_path / "run"), "--set", "optim.rho=0.01"]
    assert _launch_argv(recipe, None, [], None, 1) is None  # --devices wins over the recipe
    default = _launch_argv(recipe, None, ["train.devices=2"], None, None)
    assert default[0] == 2 and default[3] == "--out" and default[4].startswith("runs/r-")
    (tmp_path / "run").mkdir()
    (tmp_path / "run/recipe.yaml").write_text(recipe.read_text())
    assert _launch_argv(None, None, [], tmp_path / "run", None) == [
        3, "train", "--resume", str(tmp_path / "run")]
