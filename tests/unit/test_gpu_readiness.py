"""The review's GPU fixes, checked on the CPU: optimizer state placement after resume, the
deterministic mode, one order upload per epoch, validation in predict's precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from molsam.config import recipe_from_dict
from molsam.data.splits import SplitIndices
from molsam.devices import deterministic_algorithms
from molsam.train import checkpoint as checkpoint_module
from molsam.train.inference import predict_raw
from molsam.train.loop import ReplicateTrainer

SMILES = ["CCO", "c1ccccc1", "CCN", "CC(=O)O", "CCCl", "c1ccncc1", "C1CCCCC1", "OCC(O)CO",
          "CC#N", "CCOC(=O)C", "c1ccc(O)cc1", "CN(C)C", "C=CC=C", "ClC(Cl)Cl", "CC(C)O",
          "NC(=O)N"]


@pytest.fixture(scope="module")
def store():
    pytest.importorskip("rdkit")
    from molsam.data.store import GraphStore

    labels = np.array([[i % 2] for i in range(len(SMILES))], dtype=np.float32)
    return GraphStore.from_smiles(SMILES, labels, target_names=["y"], task="classification",
                                  rwse_steps=4, workers=1)


def make_trainer(store, out, optimizer="graphsam", **train):
    recipe_dict = {
        "data": {"path": "unused.csv"},
        "model": {"hidden": 8, "layers": 1, "heads": 2, "dropout": 0.0, "pe_steps": 4},
        "optim": {"name": optimizer, "schedule": "constant"},
        "train": {"epochs": 2, "batch_size": 4, "device": "cpu", **train},
    }
    everything = np.arange(len(store))
    split = SplitIndices(everything[:12], everything[12:], everything[:0])
    return ReplicateTrainer(
        recipe_from_dict(recipe_dict), recipe_dict, store.batch_source("cpu"), split,
        task="classification", target_names=["y"], seed=0, out_dir=out,
        device=torch.device("cpu"),
    )


def adam_of(optimizer):
    return getattr(optimizer, "base_optimizer", optimizer)


@pytest.mark.parametrize("optimizer", ["adam", "graphsam"])
def test_resume_reads_onto_the_cpu_and_keeps_adam_steps_there(store, tmp_path, monkeypatch,
                                                              optimizer):
    first = make_trainer(store, tmp_path, optimizer, epochs=1)
    first.fit()
    locations = []
    real_load = torch.load

    def spy(*args, **kwargs):
        locations.append(kwargs.get("map_location"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "load", spy)
    resumed = make_trainer(store, tmp_path, optimizer, epochs=2)
    resumed.resume(tmp_path / "last.pt")
    # map_location=device would put Adam's step counters on CUDA, where a non-capturable Adam
    # reads them with .item() (a host sync per parameter per step).
    assert locations == ["cpu"]
    adam = adam_of(resumed.optimizer)
    assert adam.state, "resume restored no Adam state"
    for p, state in adam.state.items():
        # What torch's non-capturable Adam expects: a CPU float32 scalar step, moments with p.
        assert state["step"].device.type == "cpu" and state["step"].dtype == torch.float32
        assert state["step"].dim() == 0 and float(state["step"]) == 3.0  # 12 molecules / 4
        assert state["exp_avg"].device == p.device and state["exp_avg_sq"].device == p.device


@pytest.mark.parametrize("saved, resumed", [(False, True), (True, False)])
def test_settled_state_follows_this_runs_adam_flavour(saved, resumed):
    # A checkpoint restores the saving run's `capturable` flag with its param groups; the
    # resuming run's flavour must win (capturable Adam refuses CPU steps; a non-capturable one
    # would sync on device-side counters).
    from molsam.optim import build_optimizer
    from molsam.optim.placement import settle_optimizer_state

    p = torch.nn.Parameter(torch.ones(3))
    writer = build_optimizer("graphsam", [p], rho=0.01)
    p.grad = torch.ones(3)
    writer.base_optimizer.step()  # capturable Adam cannot step on the CPU: make state here
    state = writer.state_dict()
    state["base_optimizer"]["param_groups"][0]["capturable"] = saved
    state["base_optimizer"]["state"][0]["step"] = torch.tensor(1.0, dtype=torch.float64)
    reader = build_optimizer("graphsam", [p], rho=0.01, capturable=resumed)
    reader.load_state_dict(state)
    settle_optimizer_state(reader, capturable=resumed)
    assert reader.base_optimizer.param_groups[0]["capturable"] is resumed
    assert reader.param_groups[0]["capturable"] is resumed  # shared groups
    step = reader.base_optimizer.state[p]["step"]
    assert step.dtype == torch.float32 and float(step) == 1.0
    assert step.device == (p.device if resumed else torch.device("cpu"))


def test_deterministic_mode_is_scoped():
    before = torch.are_deterministic_algorithms_enabled()
    with deterministic_algorithms(True):
        assert torch.are_deterministic_algorithms_enabled()
        import os

        assert os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    assert torch.are_deterministic_algorithms_enabled() == before
    with deterministic_algorithms(False):
        assert torch.are_deterministic_algorithms_enabled() == before


def test_recipe_key_deterministic_is_validated():
    from molsam.errors import ConfigError

    assert recipe_from_dict({"data": {"path": "x"}}).train.deterministic is False
    with pytest.raises(ConfigError, match="train.deterministic: expected true or false, got 'yes'"):
        recipe_from_dict({"data": {"path": "x"}, "train": {"deterministic": "yes"}})


def test_batches_from_an_uploaded_order_equal_per_batch_uploads(store):
    source = store.batch_source("cpu")
    order = np.random.default_rng(0).permutation(len(store))
    on_device = source.upload_order(order)
    for start in range(0, len(order), 5):
        index = order[start : start + 5]
        a, b = source.gather(index), source.gather(index, on_device[start : start + 5])
        for name in ("atom_codes", "rwse", "edge_index", "bond_codes", "node_graph",
                     "node_slot", "y", "index"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
        assert (a.num_graphs, a.max_atoms) == (b.num_graphs, b.max_atoms)


def test_validation_scores_in_fp32_like_predict(store, tmp_path):
    trainer = make_trainer(store, tmp_path, precision="bf16")
    assert trainer.autocast_dtype == torch.bfloat16  # training steps do run under bf16
    val = trainer.split.val
    scores = trainer._evaluate(val)
    raw = predict_raw(trainer.model, trainer.source, val).numpy()  # predict's fp32 path
    bf16 = predict_raw(trainer.model, trainer.source, val, autocast_dtype=torch.bfloat16).numpy()
    assert not np.array_equal(raw, bf16)  # the two precisions do differ on these weights
    from molsam.train.inference import to_output_units
    from molsam.train.metrics import task_metrics

    labels = store.y[val]
    expected = task_metrics(labels, to_output_units(raw, "classification", None), "classification",
                            ["y"])
    assert scores == expected
