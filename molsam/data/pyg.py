"""torch-geometric interop: a GraphStore as PyG `Data` objects or an `InMemoryDataset`, and back.

PyG (Fey & Lenssen, "Fast Graph Representation Learning with PyTorch Geometric", ICLR-W 2019) is
imported only here and only when one of these functions runs: importing it costs about as much
as importing torch itself, and nothing on molsam's training or prediction path needs it.

One molecule as a `torch_geometric.data.Data` (G molecules, n atoms, m bonds, T tasks, K steps):

    x:          uint8 [n, F_atom] atom category codes (molsam.chem.spec)
    edge_index: int64 [2, 2m] local atom indices; edge j and j + m are the same bond (j < m),
                the second half reversed, as in molsam's own batches
    edge_attr:  uint8 [2m, F_bond] bond category codes, the same for both directions
    rwse:       float16 [n, K] random-walk return probabilities
    y:          float32 [1, T] labels, NaN where missing (PyG's graph-level layout: a Batch
                concatenates them to [B, T])
    smiles:     str; source_row: int (0-based data row in the source file);
    mol_id:     int, position of the molecule in the store (becomes GraphBatch.index)

Codes stay uint8 (as compact as the store); `nn.Embedding` wants `x.long()`. A PyG `Batch` of these
objects (PyG's DataLoader) goes straight into `GPSModel` (see `GraphBatch.from_pyg`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from molsam.errors import InputError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from torch_geometric.data import Data, InMemoryDataset

    from molsam.data.store import GraphStore

#: Per-molecule attributes of an exported molecule, in the order they are written.
TENSOR_KEYS = ("x", "edge_index", "edge_attr", "rwse", "y")


def _storage(store: "GraphStore") -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The whole store in the collated layout of `InMemoryDataset` (`data`, `slices`).

    Built with a few vectorized numpy operations over the CSR arrays (no per-molecule Python):
    in that layout molecule g's edges are the contiguous rows [2 b_g, 2 b_{g+1}) (b = bond
    offsets), its m_g bonds first, then the same bonds reversed; indices stay local, as PyG's
    `InMemoryDataset.collate` keeps them (`increment=False`).
    """
    atom_ptr, bond_ptr = store.atom_ptr, store.bond_ptr
    counts = store.bond_counts.astype(np.int64)
    bond_graph = np.repeat(np.arange(len(store)), counts)  # [M] molecule of each bond
    forward = bond_ptr[bond_graph] + np.arange(len(bond_graph))  # 2 b_g + (bond - b_g)
    backward = forward + counts[bond_graph]
    ends = store.bond_atoms.astype(np.int64)  # [M, 2]
    edge_index = np.empty((2, 2 * len(ends)), dtype=np.int64)
    edge_index[:, forward] = ends.T
    edge_index[:, backward] = ends.T[::-1]
    edge_attr = np.empty((2 * len(ends), store.bond_codes.shape[1]), dtype=np.uint8)
    edge_attr[forward] = store.bond_codes
    edge_attr[backward] = store.bond_codes

    def t(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array))

    graphs = torch.arange(len(store) + 1)
    data = {
        "x": t(store.atom_codes),
        "edge_index": t(edge_index),
        "edge_attr": t(edge_attr),
        "rwse": t(store.rwse),
        "y": t(store.y),
        "smiles": list(store.smiles),
        "source_row": t(store.rows.astype(np.int64)),
        "mol_id": torch.arange(len(store)),
    }
    slices = {
        "x": t(atom_ptr), "edge_index": t(2 * bond_ptr), "edge_attr": t(2 * bond_ptr),
        "rwse": t(atom_ptr), "y": graphs, "smiles": graphs, "source_row": graphs,
        "mol_id": graphs,
    }
    return data, slices


def to_pyg_data_list(store: "GraphStore") -> list["Data"]:
    """Every molecule of `store` as its own `torch_geometric.data.Data` (views, no copies)."""
    from torch_geometric.data import Data

    data, slices = _storage(store)
    out = []
    for g in range(len(store)):
        # edge_index is [2, E]: its molecules are slices of the last dimension.
        fields = {k: data[k].narrow(1 if k == "edge_index" else 0, int(slices[k][g]),
                                    int(slices[k][g + 1] - slices[k][g])) for k in TENSOR_KEYS}
        out.append(Data(**fields, smiles=data["smiles"][g], source_row=int(store.rows[g]),
                        mol_id=g))
    return out


def to_pyg_dataset(store: "GraphStore") -> "InMemoryDataset":
    """The store as a PyG `InMemoryDataset` (`StoreDataset`): no files, no per-molecule copies."""
    return _dataset_class()(store)


_DATASET_CLASS = None


def _dataset_class():
    """`StoreDataset`, defined on first use so that importing molsam never imports PyG."""
    global _DATASET_CLASS  # a class cache, not configuration
    if _DATASET_CLASS is not None:
        return _DATASET_CLASS
    from torch_geometric.data import Data, InMemoryDataset

    class StoreDataset(InMemoryDataset):
        """A molsam GraphStore as a PyG `InMemoryDataset` (molecule layout: molsam.data.pyg).

        Also carries what a store knows beyond the tensors (`target_names`, `task`, `spec`,
        `source`), so `GraphStore.from_pyg(dataset)` rebuilds the same store.
        """

        def __init__(self, store: "GraphStore", transform=None) -> None:
            super().__init__(None, transform=transform)
            data, self.slices = _storage(store)
            self._data = Data(**data)
            self.target_names = list(store.target_names)
            self.task = store.task
            self.spec = dict(store.spec)
            self.source = store.source
            self.source_hash = store.source_hash

        def len(self) -> int:
            # PyG infers the length from the slices, except that one molecule reads as 1
            # anyway; an empty store has slices of length 1.
            return len(self.slices["x"]) - 1

    StoreDataset.__module__ = __name__
    _DATASET_CLASS = StoreDataset
    return StoreDataset


def store_from_pyg(
    molecules: Sequence["Data"],
    *,
    target_names: Sequence[str] | None = None,
    task: str | None = None,
    spec: dict | None = None,
) -> "GraphStore":
    """A GraphStore from PyG molecules in molsam's layout (`to_pyg_data_list`, `to_pyg_dataset`).

    `molecules`: a `StoreDataset`, or any sequence of `Data` with the attributes listed in this
    module's docstring (`smiles`, `source_row` optional). `target_names`, `task` and `spec`
    default to the dataset's own (a `StoreDataset`) or to y's width / None / molsam's featurizer
    spec for the RWSE width. Raises InputError naming the molecule whose edges are not one list
    of bonds followed by the same bonds reversed.
    """
    from torch_geometric.data.collate import collate

    from molsam.data.store import GraphStore

    items = [molecules[i] for i in range(len(molecules))]
    if not items:
        raise InputError("store_from_pyg: no molecules")
    for i, item in enumerate(items):
        missing = [k for k in TENSOR_KEYS if getattr(item, k, None) is None]
        if missing:
            raise InputError(f"molecule {i}: PyG data lacks {', '.join(missing)}")
    data, slices, _ = collate(type(items[0]), data_list=items, increment=False, add_batch=False)
    atom_counts = np.diff(slices["x"].numpy())
    edge_counts = np.diff(slices["edge_index"].numpy())
    odd = np.flatnonzero(edge_counts % 2)
    if len(odd):
        raise InputError(f"molecule {odd[0]}: {edge_counts[odd[0]]} edges, expected each bond "
                         "in both directions (an even count)")
    bond_counts = edge_counts // 2
    edge_start = slices["edge_index"].numpy()[:-1]
    bond_graph = np.repeat(np.arange(len(items)), bond_counts)
    forward = edge_start[bond_graph] + np.arange(len(bond_graph)) - np.repeat(
        np.cumsum(bond_counts) - bond_counts, bond_counts)
    backward = forward + bond_counts[bond_graph]
    edge_index = data.edge_index.numpy()
    edge_attr = data.edge_attr.numpy()
    bad = (edge_index[:, forward] != edge_index[::-1, backward]).any(0) | (
        edge_attr[forward] != edge_attr[backward]).any(1)
    if bad.any():
        raise InputError(f"molecule {bond_graph[np.argmax(bad)]}: edges are not molsam's layout "
                         "(bonds j < m, then the same bonds reversed at j + m)")
    y = data.y.numpy().astype(np.float32).reshape(len(items), -1)
    rwse = data.rwse.numpy()
    if spec is None:
        spec = getattr(molecules, "spec", None)
    if spec is None:
        from molsam.chem.spec import featurizer_spec

        spec = featurizer_spec(rwse.shape[1])
    if target_names is None:
        target_names = getattr(molecules, "target_names", None) or [
            f"task_{t}" for t in range(y.shape[1])]
    smiles = getattr(data, "smiles", None)
    source_row = getattr(data, "source_row", None)
    big = len(atom_counts) and atom_counts.max() > 256
    return GraphStore(
        atom_counts=atom_counts.astype(np.int32),
        bond_counts=bond_counts.astype(np.int32),
        atom_codes=np.ascontiguousarray(data.x.numpy().astype(np.uint8)),
        rwse=np.ascontiguousarray(rwse.astype(np.float16)),
        bond_atoms=edge_index[:, forward].T.astype(np.int16 if big else np.uint8),
        bond_codes=np.ascontiguousarray(edge_attr[forward].astype(np.uint8)),
        y=np.ascontiguousarray(y),
        smiles=list(smiles) if smiles is not None else [""] * len(items),
        rows=(np.asarray(source_row) if source_row is not None
              else np.arange(len(items))).astype(np.int32),
        target_names=list(target_names),
        task=task if task is not None else getattr(molecules, "task", None),
        spec=dict(spec),
        source=getattr(molecules, "source", ""),
        source_hash=getattr(molecules, "source_hash", ""),
    )
