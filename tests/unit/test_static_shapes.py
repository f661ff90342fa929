"""Static-shape batches: padding is inert (same loss and gradients as the unpadded batch), the
padding layout has no hot spot, and a bucketed trainer matches the eager one on the CPU."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from molsam.config import recipe_from_dict
from molsam.data.buckets import (
    Buckets,
    attention_groups,
    bucket_length,
    gather_padded,
    size_sorted_order,
)
from molsam.data.splits import SplitIndices
from molsam.errors import ConfigError
from molsam.models import GPSModel
from molsam.train.losses import masked_loss
from molsam.train.loop import ReplicateTrainer

SMILES = ["CCO", "c1ccccc1", "CCN", "CC(=O)O", "CCCl", "c1ccncc1", "C1CCCCC1", "OCC(O)CO",
          "CC#N", "CCOC(=O)C", "c1ccc(O)cc1", "CN(C)C", "C=CC=C", "ClC(Cl)Cl", "CC(C)O",
          "NC(=O)N", "c1ccc2ccccc2c1", "CCCCCC", "O=C=O", "CS(=O)C", "c1cc[nH]c1", "FC(F)F",
          "CCS", "C1CCOC1", "CC(C)(C)c1ccc(O)cc1", "OC(=O)c1ccccc1O", "CCN(CC)CC", "C1CCNCC1"]


@pytest.fixture(scope="module")
def store():
    pytest.importorskip("rdkit")
    from molsam.data.store import GraphStore

    rng = np.random.default_rng(0)
    labels = np.stack([np.arange(len(SMILES)) % 2, rng.integers(0, 2, len(SMILES))], 1).astype(float)
    labels[3, 0] = np.nan  # a missing label stays missing next to the padding's NaN rows
    return GraphStore.from_smiles(SMILES, labels.astype(np.float32), target_names=["a", "b"],
                                  task="classification", rwse_steps=4, workers=1)


# Large molecules beside small ones: the CPU rules split such a batch's attention in two groups.
BIG = ["CC(C)Cc1ccc(cc1)C(C)C(=O)OCCOCCOCCOc1ccc2ccccc2c1",  # 34 heavy atoms
       "O=C(Nc1ccc(cc1)S(=O)(=O)Nc1ncccn1)c1ccc(cc1)N1CCOCC1",  # 31
       "CCN(CC)CCOC(=O)c1ccc(N)cc1"]  # 17


@pytest.fixture(scope="module")
def mixed_store():
    pytest.importorskip("rdkit")
    from molsam.data.store import GraphStore

    smiles = BIG + SMILES[:9]
    labels = (np.arange(len(smiles)) % 2).astype(np.float32)[:, None]
    return GraphStore.from_smiles(smiles, labels, target_names=["a"], task="classification",
                                  rwse_steps=4, workers=1)


RULES = {"cuda": Buckets.for_batch_size, "cpu": Buckets.for_cpu}


def loss_and_grads(model, batch, targets, task="classification", num_classes=None):
    model.zero_grad(set_to_none=True)
    loss = masked_loss(model(batch).float(), targets, task, num_classes)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("rules", ["cuda", "cpu"])
@pytest.mark.parametrize("pooling", ["mean", "sum", "attention"])
@pytest.mark.parametrize("size", [8, 5])  # a full batch and a partial (last) one
def test_padded_batch_gives_the_unpadded_loss_and_gradients(store, pooling, size, rules):
    torch.manual_seed(0)
    model = GPSModel(2, hidden=16, layers=2, heads=2, dropout=0.0, pe_steps=4, pooling=pooling)
    source = store.batch_source("cpu")
    targets = source.y
    index = np.array([3, 17, 0, 24, 9, 11, 25, 6])[:size]
    on_device = torch.from_numpy(index)
    buckets = RULES[rules](8)
    padded, padded_targets, shape = gather_padded(source, buckets, index, on_device, targets)
    plain = source.gather(index)
    assert padded.num_graphs == shape.graphs > plain.num_graphs
    assert padded.atom_codes.shape[0] == shape.atoms > plain.atom_codes.shape[0]
    assert padded.edge_index.shape[1] == shape.edges > plain.edge_index.shape[1]
    assert torch.isnan(padded_targets[size:]).all()
    loss, grads = loss_and_grads(model, plain, targets[on_device])
    padded_loss, padded_grads = loss_and_grads(model, padded, padded_targets)
    torch.testing.assert_close(padded_loss, loss, atol=1e-6, rtol=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(padded_grads[name], grad, atol=1e-6, rtol=1e-5, msg=name)
    with torch.no_grad():
        out = model(padded)
        torch.testing.assert_close(out[:size], model(plain), atol=1e-6, rtol=1e-5)
        assert torch.isfinite(out).all()  # padding graphs are never empty: no 0/0 anywhere


@pytest.mark.parametrize("task", ["regression", "multiclass"])
def test_padded_loss_of_other_tasks(store, task):
    torch.manual_seed(0)
    num_classes = [3, 2] if task == "multiclass" else None
    outputs = 5 if num_classes else 2
    model = GPSModel(outputs, hidden=16, layers=1, heads=2, dropout=0.0, pe_steps=4)
    source = store.batch_source("cpu")
    targets = source.y.clone()
    if task == "multiclass":
        targets[:, 0] = torch.arange(len(targets)) % 3
    else:
        targets[:, 1] = torch.linspace(-1, 1, len(targets))
    index = np.array([5, 1, 20, 13, 7])
    on_device = torch.from_numpy(index)
    padded, padded_targets, _ = gather_padded(source, Buckets.for_batch_size(8), index,
                                              on_device, targets)
    loss, grads = loss_and_grads(model, source.gather(index), targets[on_device], task,
                                 num_classes)
    padded_loss, padded_grads = loss_and_grads(model, padded, padded_targets, task, num_classes)
    torch.testing.assert_close(padded_loss, loss, atol=1e-6, rtol=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(padded_grads[name], grad, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("pooling", ["mean", "attention"])
@pytest.mark.parametrize("size", [12, 7])
def test_grouped_attention_gives_the_unpadded_loss_and_gradients(mixed_store, pooling, size):
    """The CPU rules put the large molecules' attention in a group of its own (two SDPA calls
    on [B_g, L_g] layouts): same loss, gradients and outputs as the unpadded batch."""
    torch.manual_seed(0)
    model = GPSModel(1, hidden=16, layers=2, heads=2, dropout=0.0, pe_steps=4, pooling=pooling)
    source = mixed_store.batch_source("cpu")
    index = np.array([3, 0, 4, 5, 1, 6, 7, 8, 9, 2, 10, 11])[:size]  # large ones scattered
    on_device = torch.from_numpy(index)
    padded, padded_targets, shape = gather_padded(source, Buckets.for_cpu(16), index, on_device,
                                                  source.y)
    assert padded.attn_groups is not None and len(padded.attn_groups) == 2
    (big, long_length), (small, short_length) = padded.attn_groups
    # The large molecules (> 16 atoms) at L 48, the small ones and the padding graph at L 16.
    assert big == np.isin(index, [0, 1, 2]).sum() and big + small == shape.graphs
    assert (long_length, short_length) == (48, 16)
    plain = source.gather(index)
    loss, grads = loss_and_grads(model, plain, source.y[on_device])
    padded_loss, padded_grads = loss_and_grads(model, padded, padded_targets)
    torch.testing.assert_close(padded_loss, loss, atol=1e-6, rtol=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(padded_grads[name], grad, atol=1e-6, rtol=1e-5, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(model(padded)[:size], model(plain), atol=1e-6, rtol=1e-5)


def test_attention_groups_rules():
    counts = np.array([5, 40, 9, 3, 33, 12, 7, 2])
    offset, groups = attention_groups(counts, 48, 16)
    assert groups == ((2, 48), (6, 16))  # 2 x 48^2 + 6 x 16^2 < 8 x 48^2
    lengths = np.where(np.isin(np.arange(8), [1, 4]), 48, 16)
    ends = offset + lengths
    assert ends.max() == 2 * 48 + 6 * 16  # the buffer is exactly the groups' slots
    spans = sorted(zip(offset.tolist(), ends.tolist()))
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))  # disjoint
    assert np.all(counts <= lengths)  # every molecule fits its slots
    # A batch of similar sizes keeps one group (two would not pay for the second call).
    offset, groups = attention_groups(np.array([20, 18, 25, 22]), 32, 16)
    assert groups == ((4, 32),) and offset.tolist() == [0, 32, 64, 96]


def test_padding_layout_is_inert_and_spread(store):
    source = store.batch_source("cpu")
    buckets = Buckets.for_batch_size(8)
    index = np.arange(6)
    padded, _, shape = gather_padded(source, buckets, index, torch.from_numpy(index), source.y)
    real_atoms = int(source.atom_counts_host[index].sum())
    real_edges = 2 * int(source.bond_counts_host[index].sum())
    graph = padded.node_graph
    assert torch.all(graph[1:] >= graph[:-1])  # non-decreasing
    assert torch.all(graph[:real_atoms] < 6) and torch.all(graph[real_atoms:] >= 6)
    per_graph = torch.bincount(graph, minlength=shape.graphs)
    assert per_graph.shape[0] == shape.graphs and torch.all(per_graph >= 1)
    assert int(padded.node_slot.max()) < shape.length
    flat = graph * shape.length + padded.node_slot
    assert len(torch.unique(flat)) == len(flat)  # one dense slot per atom
    pad_edges = padded.edge_index[:, real_edges:]
    assert torch.all(pad_edges >= real_atoms)  # padding edges never touch a real atom
    in_degree = torch.bincount(pad_edges[1] - real_atoms, minlength=shape.atoms - real_atoms)
    assert int(in_degree.max()) - int(in_degree.min()) <= 1  # spread evenly: no hot spot
    assert torch.all(padded.atom_codes[real_atoms:] == 0)


def test_bucket_rules():
    assert [bucket_length(n) for n in (1, 32, 33, 49, 65, 97, 129, 161, 193, 257, 300)] == \
        [32, 32, 48, 64, 96, 128, 160, 192, 256, 320, 320]
    buckets = Buckets.for_batch_size(128)
    assert (buckets.atom_multiple, buckets.bond_multiple) == (512, 1024)
    shape = buckets.shape(np.full(128, 25), np.full(128, 27))
    assert (shape.graphs, shape.atoms, shape.edges, shape.length) == (
        128 + buckets.pad_graphs, 3584, 2 * 4096, 32)
    # The worst case still fits: fewest padding atoms per graph slot (ceil <= smallest L).
    tight = buckets.shape(np.full(128, 4), np.full(128, 3))
    assert -(-(tight.atoms - 512) // (tight.graphs - 128)) <= 32
    assert Buckets.for_device(128, "cuda") == buckets  # the CUDA set as the issue specifies


def test_cpu_bucket_rules():
    buckets = Buckets.for_device(32, "cpu")
    assert buckets == Buckets.for_cpu(32) and buckets.pad_graphs == 1
    shape = buckets.shape(np.array([25] * 31 + [47]), np.array([27] * 32))
    # One padding graph with 1-8 atoms, bonds to a multiple of 8, L to a multiple of 16.
    assert (shape.graphs, shape.atoms, shape.edges, shape.length) == (33, 824, 2 * 864, 48)
    assert bucket_length(33, 16) == 48 and bucket_length(48, 16) == 48
    partial = buckets.shape(np.array([3, 4]), np.array([2, 3]))
    assert partial.graphs == 33 and -(-(partial.atoms - 7) // 31) <= partial.length == 16
    with pytest.raises(ValueError, match="padding atoms may not fit"):
        Buckets(32, atom_multiple=64, bond_multiple=8, pad_graphs=1, length_multiple=16)


def test_size_sorted_order_is_a_permutation_of_size_sorted_batches():
    rng = np.random.default_rng(0)
    counts = rng.integers(5, 60, size=1000)
    order = rng.permutation(1000)
    sorted_order = size_sorted_order(order, counts, 32, np.random.default_rng(1), window=4)
    assert sorted(sorted_order.tolist()) == list(range(1000))
    spread = [np.ptp(counts[sorted_order[i : i + 32]]) for i in range(0, 992, 32)]
    random_spread = [np.ptp(counts[order[i : i + 32]]) for i in range(0, 992, 32)]
    assert np.mean(spread) < 0.5 * np.mean(random_spread)


def test_recipe_keys():
    train = recipe_from_dict({"data": {"path": "x"}}).train
    assert train.static_shapes == "auto" and train.sort_by_size is False
    for value in (True, False, "auto"):
        assert recipe_from_dict({"data": {"path": "x"},
                                 "train": {"static_shapes": value}}).train.static_shapes == value
    with pytest.raises(ConfigError, match="train.static_shapes: 'yes' is not one of auto, true, false"):
        recipe_from_dict({"data": {"path": "x"}, "train": {"static_shapes": "yes"}})


def make_trainer(store, out, optimizer, static):
    recipe_dict = {
        "data": {"path": "unused.csv"},
        "model": {"hidden": 16, "layers": 2, "heads": 2, "dropout": 0.0, "pe_steps": 4},
        "optim": {"name": optimizer, "schedule": "noam", "warmup_epochs": 1.0},
        "train": {"epochs": 3, "batch_size": 8, "device": "cpu", "static_shapes": static},
    }
    everything = np.arange(len(store))
    split = SplitIndices(everything[:20], everything[20:], everything[:0])
    return ReplicateTrainer(
        recipe_from_dict(recipe_dict), recipe_dict, store.batch_source("cpu"), split,
        task="classification", target_names=store.target_names, seed=0, out_dir=out,
        device=torch.device("cpu"),
    )


@pytest.mark.parametrize("optimizer", ["graphsam", "adam"])
def test_bucketed_trainer_matches_the_eager_one_on_cpu(store, tmp_path, optimizer):
    eager = make_trainer(store, tmp_path / "eager", optimizer, static=False)
    bucketed = make_trainer(store, tmp_path / "bucketed", optimizer, static=True)
    assert eager.static is None and bucketed.static is not None
    assert not bucketed.static.capture  # eager padded steps on the CPU
    eager.fit()
    bucketed.fit()
    assert len(bucketed.static.shapes_seen) >= 2  # a full and the partial last batch at least

    def rows(trainer):
        with open(trainer.out_dir / "metrics.csv", newline="") as handle:
            return list(csv.DictReader(handle))

    for a, b in zip(rows(eager), rows(bucketed), strict=True):
        for key in ("train_loss", "val_roc_auc", "lr", "rho"):
            if a[key] or b[key]:
                assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-4, abs=1e-5), key
    for (name, p), q in zip(eager.model.named_parameters(), bucketed.model.parameters()):
        torch.testing.assert_close(q, p, atol=1e-4, rtol=1e-4, msg=name)
    assert eager.optimizer.steps == bucketed.optimizer.steps if optimizer == "graphsam" else True


@pytest.mark.filterwarnings(r"ignore:Detected call of `lr_scheduler.step\(\)`")
def test_lr_and_rho_tensors_for_capture_and_back():
    # A captured graph reads lr and rho at replay, so they must be tensors filled in place; a
    # resumed eager run must get floats back (non-capturable foreach Adam refuses tensor lr).
    from molsam.optim import build_optimizer
    from molsam.optim.placement import settle_optimizer_state
    from molsam.optim.schedules import NoamLR, set_rho

    p = torch.nn.Parameter(torch.ones(3))
    opt = build_optimizer("graphsam", [p], rho=0.05, lr=1e-3)
    scheduler = NoamLR(opt, warmup_epochs=1, total_epochs=2, steps_per_epoch=4, init_lr=1e-4,
                       max_lr=1e-3, final_lr=1e-4)
    settle_optimizer_state(opt, capturable=True)
    group = opt.param_groups[0]
    lr, rho = group["lr"], group["rho"]
    assert isinstance(lr, torch.Tensor) and isinstance(rho, torch.Tensor)
    assert opt.base_optimizer.param_groups[0]["lr"] is lr  # shared groups
    set_rho(opt, 0.02)
    scheduler.step()
    assert group["rho"] is rho and float(rho) == pytest.approx(0.02)  # filled, not replaced
    assert group["lr"] is lr and float(lr) == pytest.approx(scheduler.lr_at(1)[0])
    settle_optimizer_state(opt, capturable=False)
    assert type(group["lr"]) is float and type(group["rho"]) is float
    assert group["capturable"] is False
