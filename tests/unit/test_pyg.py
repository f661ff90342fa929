"""torch-geometric interop: store <-> Data / InMemoryDataset, and PyG batches into the model."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader

from molsam.data.batching import GraphBatch
from molsam.data.store import GraphStore
from molsam.errors import InputError
from molsam.models import POOLINGS, GPSModel
from tests.conftest import ROOT

# An invalid SMILES (left out of the store), molecules without bonds and a multi-task label
# matrix with missing values.
SMILES = ["CCO", "not a smiles", "c1ccccc1O", "[Na+].[Cl-]", "C", "CC(=O)Nc1ccc(O)cc1",
          "O=C(O)C[C@H](N)C(=O)O"]
ARRAYS = ("atom_counts", "bond_counts", "atom_codes", "rwse", "bond_atoms", "bond_codes", "y",
          "rows")


@pytest.fixture(scope="module")
def store() -> GraphStore:
    labels = np.arange(2 * len(SMILES), dtype=np.float32).reshape(-1, 2)
    labels[2, 1] = np.nan
    return GraphStore.from_smiles(SMILES, labels, target_names=["a", "b"], task="regression",
                                  rwse_steps=8, workers=1)


def _assert_same_store(a: GraphStore, b: GraphStore) -> None:
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=name == "y"), name
    assert a.smiles == b.smiles and a.target_names == b.target_names
    assert a.task == b.task and a.spec == b.spec


def test_data_list_round_trip(store):
    molecules = store.to_pyg()
    assert len(molecules) == len(store) == 6
    _assert_same_store(GraphStore.from_pyg(molecules, target_names=["a", "b"],
                                           task="regression"), store)


def test_in_memory_dataset_round_trip_and_items(store):
    dataset = store.to_pyg_dataset()
    assert len(dataset) == len(store)
    _assert_same_store(GraphStore.from_pyg(dataset), store)
    for g, expected in enumerate(store.to_pyg()):
        item = dataset[g]
        for key in ("x", "edge_index", "edge_attr", "rwse", "y"):
            assert torch.equal(torch.nan_to_num(item[key]), torch.nan_to_num(expected[key])), key
        assert item.smiles == store.smiles[g] and int(item.mol_id) == g


def test_exported_molecule_matches_molsams_own_batch(store):
    source = store.batch_source()
    for g, data in enumerate(store.to_pyg()):
        own = source.gather(np.array([g]))
        assert torch.equal(data.x, own.atom_codes) and torch.equal(data.rwse, own.rwse)
        assert torch.equal(data.edge_index, own.edge_index)
        assert torch.equal(data.edge_attr, own.bond_codes)
        assert data.source_row == int(store.rows[g])


@pytest.mark.parametrize("pooling", POOLINGS)
def test_model_gives_the_same_outputs_and_gradients_on_a_pyg_batch(store, pooling):
    torch.manual_seed(0)
    model = GPSModel(2, hidden=16, layers=2, heads=2, pe_steps=8, pooling=pooling,
                     dropout=0.0).train()
    order = np.array([4, 0, 3, 5, 1])  # PyG batches them in dataset order after indexing
    pyg = next(iter(DataLoader(store.to_pyg_dataset()[torch.from_numpy(order)],
                               batch_size=len(order))))
    assert isinstance(pyg, Batch) and pyg.num_graphs == len(order)
    own = store.batch_source().gather(order)
    outputs, grads = [], []
    for batch in (own, pyg):
        model.zero_grad()
        out = model(batch)
        out.square().sum().backward()
        outputs.append(out.detach())
        grads.append([p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(outputs[1], outputs[0], atol=1e-6, rtol=0)
    for a, b in zip(grads[0], grads[1]):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5)
    converted = GraphBatch.from_pyg(pyg)
    assert converted.index.tolist() == order.tolist()
    assert converted.max_atoms == own.max_atoms
    assert torch.equal(converted.node_slot, own.node_slot)


def test_single_data_object_is_one_molecule(store):
    torch.manual_seed(0)
    model = GPSModel(2, hidden=16, layers=1, heads=2, pe_steps=8).eval()
    data = store.to_pyg()[5]
    with torch.no_grad():
        torch.testing.assert_close(model(data), model(store.batch_source().gather([5])),
                                   atol=1e-6, rtol=0)
    assert GraphBatch.from_pyg(data).index.tolist() == [5]


def test_pyg_batch_errors_name_what_is_wrong(store):
    model = GPSModel(2, hidden=16, layers=1, heads=2, pe_steps=16)
    with pytest.raises(ValueError, match="rwse has 8 columns, this model reads 16"):
        model(Batch.from_data_list(store.to_pyg()[:2]))
    with pytest.raises(ValueError, match="lacks edge_attr"):
        model(Data(x=torch.zeros(2, 9, dtype=torch.uint8), edge_index=torch.zeros(2, 0)))
    molecules = store.to_pyg()
    broken = molecules[1].clone()
    m = broken.edge_index.shape[1] // 2  # second half rolled: no longer the first reversed
    broken.edge_index = torch.cat([broken.edge_index[:, :m], broken.edge_index[:, m:].roll(1, 1)], 1)
    with pytest.raises(InputError, match="molecule 1: edges are not molsam's layout"):
        GraphStore.from_pyg(molecules[:1] + [broken])
    odd = molecules[0].clone()
    odd.edge_index, odd.edge_attr = odd.edge_index[:, :1], odd.edge_attr[:1]
    with pytest.raises(InputError, match="molecule 0: 1 edges"):
        GraphStore.from_pyg([odd])


def test_importing_molsam_does_not_import_torch_geometric():
    code = ("import sys, molsam.models.gps, molsam.data.store, molsam.train.run, "
            "molsam.cli.main; sys.exit('torch_geometric' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_molsams_ops_equal_their_pyg_counterparts(store):
    """The equivalences models/gps.py states for not using PyG's ops (GINEConv, scatter,
    to_dense_batch with max_num_nodes and batch_size)."""
    from torch_geometric.nn import GINEConv
    from torch_geometric.utils import scatter, to_dense_batch

    from molsam.models.gps import GINELayer, dense_index, to_dense

    batch = store.batch_source().gather(np.arange(len(store)))
    n, e = batch.atom_codes.shape[0], batch.edge_index.shape[1]
    torch.manual_seed(0)
    x, edge_attr = torch.randn(n, 16), torch.randn(e, 16)
    layer = GINELayer(16)
    weights = {k: v.clone() for k, v in layer.mlp.state_dict().items()}
    conv = GINEConv(layer.mlp, eps=0.0, train_eps=False)  # shares the MLP (and resets it)
    layer.mlp.load_state_dict(weights)
    torch.testing.assert_close(conv(x, batch.edge_index, edge_attr),
                               layer(x, batch.edge_index, edge_attr), atol=1e-6, rtol=0)

    flat, valid = dense_index(batch)
    dense, mask = to_dense_batch(x, batch.node_graph, max_num_nodes=batch.max_atoms,
                                 batch_size=batch.num_graphs)
    assert torch.equal(to_dense(x, flat, batch.num_graphs, batch.max_atoms), dense)
    assert torch.equal(valid, mask)

    for pooling in ("sum", "mean"):
        model = GPSModel(2, hidden=16, layers=1, heads=2, pe_steps=8, pooling=pooling)
        torch.testing.assert_close(
            model.readout(x, batch),
            scatter(x, batch.node_graph, dim=0, dim_size=batch.num_graphs, reduce=pooling),
            atol=1e-6, rtol=0)
