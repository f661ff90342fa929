"""Batches of molecules as flat tensors, gathered from a GraphStore without per-molecule Python.

A batch is built by a few vectorized gathers over the store's concatenated arrays (CSR offsets).
Sizes that shape the output (total atoms, total bonds, largest molecule) are computed on the host
from a host copy of the per-molecule counts, so building a batch on the GPU never waits for it.
The per-molecule counts also live on the device (uploaded once with the store), and a training
epoch uploads its whole order once (`upload_order`): a batch then needs no host-to-device copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

from molsam.chem.spec import RDKIT_UNREACHABLE, UNREACHABLE


@dataclass
class GraphBatch:
    """B molecules with N atoms and M bonds in all (edges in both directions: E = 2M).

    atom_codes: uint8 [N, F_atom] category codes (columns: molsam.chem.features.ATOM_FEATURES)
    rwse:       float [N, K] random-walk return probabilities (float16 in the store)
    edge_index: int64 [2, E] batch-global atom indices; edge e and e + M are the same bond
    bond_codes: uint8 [E, F_bond] category codes (columns: molsam.chem.features.BOND_FEATURES)
    node_graph: int64 [N] molecule of each atom, in 0..B-1, non-decreasing
    node_slot:  int64 [N] position of each atom inside its molecule, in 0..max_atoms-1
    y:          float32 [B, T] labels, NaN where missing (None when unlabeled)
    index:      int64 [B] row of each molecule in the store
    num_graphs: B, a host int
    max_atoms:  atoms in the largest molecule, a host int (dense attention layout [B, max_atoms])
    attn_offset, attn_groups: None (the usual case), or a grouped self-attention layout
                (molsam.models.gps.attention_layout): attn_groups ((B_1, L_1), ...) host ints,
                runs of B_g molecules at L_g slots each, and attn_offset int64 [B] the first
                slot of each molecule in the buffer of sum_g B_g L_g slots. Set by the CPU's
                padded batches (molsam.data.buckets.attention_groups).
    atom_scalars: float32 [N, 8] CoMPT's atom scalars (molsam.chem.compt_inputs), or None
    distances:  float32 [B, max_atoms, max_atoms] topological distances (1e8 between atoms with
                no path, 0 in padded slots), or None; both set only from a store featurized
                with the "compt" extra
    mol_features: float32 [B, F] molecule-level features (rdkit2d, morgan_count; NaN where a
                descriptor failed), or None
    """

    atom_codes: Tensor
    rwse: Tensor
    edge_index: Tensor
    bond_codes: Tensor
    node_graph: Tensor
    node_slot: Tensor
    y: Tensor | None
    index: Tensor
    num_graphs: int
    max_atoms: int
    attn_offset: Tensor | None = None
    attn_groups: tuple[tuple[int, int], ...] | None = None
    atom_scalars: Tensor | None = None
    distances: Tensor | None = None
    mol_features: Tensor | None = None

    @classmethod
    def from_pyg(cls, data: Any, *, max_atoms: int | None = None) -> "GraphBatch":
        """The same molecules as a torch-geometric `Batch` (or one `Data`) in molsam's layout.

        `data` needs x (atom codes [N, F_atom]), edge_index [2, E], edge_attr (bond codes
        [E, F_bond]) and, for a model with RWSE, rwse [N, K]; y [B, T] and mol_id [B] are used
        when present (molsam.data.pyg writes all of them). Edges keep PyG's order (per molecule,
        not the two global halves of a gathered batch); nothing downstream relies on the order.
        PyG's own node layout is used as is: `batch` is node_graph and the slot of an atom is
        its offset from `ptr` of its molecule (computed on the device, no host sync).

        `max_atoms` (the dense attention width) is read from `ptr` when not given: free when
        the batch is still on the host (PyG's DataLoader collates there), one host sync when
        it is already on a GPU; pass it (or convert before `.to(device)`) to avoid that sync.
        """
        missing = [k for k in ("x", "edge_index", "edge_attr") if getattr(data, k, None) is None]
        if missing:
            raise ValueError(f"PyG batch lacks {', '.join(missing)} (molsam.data.pyg lists the "
                             "attributes a molsam model reads)")
        x = data.x
        device = x.device
        node_graph = getattr(data, "batch", None)
        if node_graph is None:  # a single Data: one molecule
            node_graph = torch.zeros(x.shape[0], dtype=torch.long, device=device)
            ptr = torch.tensor([0, x.shape[0]], device=device)
            num_graphs = 1
        else:
            ptr = data.ptr
            num_graphs = int(data.num_graphs)
        node_slot = torch.arange(x.shape[0], device=device) - ptr[node_graph]
        if max_atoms is None:
            max_atoms = int((ptr[1:] - ptr[:-1]).max()) if num_graphs else 0
        rwse = getattr(data, "rwse", None)
        if rwse is None:
            rwse = torch.zeros(x.shape[0], 0, device=device)
        mol_id = getattr(data, "mol_id", None)
        if isinstance(mol_id, int) and num_graphs == 1:  # one Data from to_pyg_data_list
            mol_id = torch.tensor([mol_id], device=device)
        elif not isinstance(mol_id, Tensor):
            mol_id = torch.arange(num_graphs, device=device)
        y = getattr(data, "y", None)
        return cls(
            atom_codes=x, rwse=rwse, edge_index=data.edge_index, bond_codes=data.edge_attr,
            node_graph=node_graph, node_slot=node_slot,
            y=None if y is None else y.reshape(num_graphs, -1), index=mol_id.reshape(-1),
            num_graphs=num_graphs, max_atoms=max_atoms,
        )

    def to(self, device: torch.device | str, non_blocking: bool = True) -> "GraphBatch":
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                value = value.to(device, non_blocking=non_blocking)
            moved[f.name] = value
        return GraphBatch(**moved)


@dataclass
class BatchSource:
    """The store's arrays as tensors on one device, plus host copies of the per-molecule counts.

    atom_ptr, bond_ptr: int64 [G+1] CSR offsets; atom_codes [A, F_atom]; rwse [A, K];
    bond_atoms [Mtot, 2] local atom indices; bond_codes [Mtot, F_bond]; y float32 [G, T];
    atom_scalars float32 [A, 8] and distances uint8 [sum_g n_g^2] (CoMPT's inputs) or None;
    mol_features float32 [G, F] (molecule-level features) or None.
    """

    atom_ptr: Tensor
    bond_ptr: Tensor
    atom_codes: Tensor
    rwse: Tensor
    bond_atoms: Tensor
    bond_codes: Tensor
    y: Tensor | None
    atom_counts_host: np.ndarray
    bond_counts_host: np.ndarray
    atom_scalars: Tensor | None = None
    distances: Tensor | None = None
    mol_features: Tensor | None = None
    #: int64 [G] per-molecule atom and bond counts on the device (derived from the offsets).
    atom_counts: Tensor = field(init=False, repr=False)
    bond_counts: Tensor = field(init=False, repr=False)
    #: int64 [G+1] offsets of each molecule's distance matrix in `distances` (or None).
    distance_ptr: Tensor | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # On the device once, so a batch gathers its counts there instead of copying them up.
        self.atom_counts = torch.diff(self.atom_ptr)
        self.bond_counts = torch.diff(self.bond_ptr)
        self.distance_ptr = None
        if self.distances is not None:
            squares = self.atom_counts * self.atom_counts
            self.distance_ptr = torch.cat([squares.new_zeros(1), torch.cumsum(squares, 0)])

    @property
    def device(self) -> torch.device:
        return self.atom_codes.device

    def upload_order(self, order: np.ndarray) -> Tensor:
        """An epoch's molecule order (host int array) on the device: one copy per epoch; pass
        slices of it with the matching host slices to `gather`."""
        return torch.from_numpy(np.ascontiguousarray(order, dtype=np.int64)).to(self.device)

    def gather(self, index: np.ndarray, index_on_device: Tensor | None = None) -> GraphBatch:
        """Batch of molecules `index` (host int array [B]); tensors live on `self.device`.

        `index_on_device` is the same index already on the device (a slice of `upload_order`);
        without it the index is copied up here (the batch's only host-to-device copy).
        """
        index = np.asarray(index, dtype=np.int64)
        atom_counts_host = self.atom_counts_host[index]
        bond_counts_host = self.bond_counts_host[index]
        total_atoms = int(atom_counts_host.sum())
        total_bonds = int(bond_counts_host.sum())
        device = self.device
        idx = index_on_device
        if idx is None:
            idx = torch.from_numpy(index).to(device, non_blocking=True)
        num_graphs = len(index)
        atom_counts = self.atom_counts[idx]
        bond_counts = self.bond_counts[idx]
        graphs = torch.arange(num_graphs, device=device)

        node_graph = torch.repeat_interleave(graphs, atom_counts, output_size=total_atoms)
        batch_atom_start = torch.cumsum(atom_counts, 0) - atom_counts
        node_slot = torch.arange(total_atoms, device=device) - batch_atom_start[node_graph]
        store_atom = self.atom_ptr[idx][node_graph] + node_slot

        bond_graph = torch.repeat_interleave(graphs, bond_counts, output_size=total_bonds)
        batch_bond_start = torch.cumsum(bond_counts, 0) - bond_counts
        bond_slot = torch.arange(total_bonds, device=device) - batch_bond_start[bond_graph]
        store_bond = self.bond_ptr[idx][bond_graph] + bond_slot
        ends = self.bond_atoms[store_bond].long() + batch_atom_start[bond_graph].unsqueeze(1)
        edge_index = torch.cat([ends.t(), ends.t().flip(0)], dim=1)
        bond_codes = self.bond_codes[store_bond]

        max_atoms = int(atom_counts_host.max()) if num_graphs else 0
        distances = None
        if self.distances is not None:
            distances = self._gather_distances(idx, atom_counts, atom_counts_host, max_atoms)
        return GraphBatch(
            atom_codes=self.atom_codes[store_atom],
            rwse=self.rwse[store_atom],
            edge_index=edge_index,
            bond_codes=torch.cat([bond_codes, bond_codes], dim=0),
            node_graph=node_graph,
            node_slot=node_slot,
            y=None if self.y is None else self.y[idx],
            index=idx,
            num_graphs=num_graphs,
            max_atoms=max_atoms,
            atom_scalars=None if self.atom_scalars is None else self.atom_scalars[store_atom],
            distances=distances,
            mol_features=None if self.mol_features is None else self.mol_features[idx],
        )

    def _gather_distances(
        self, idx: Tensor, atom_counts: Tensor, atom_counts_host: np.ndarray, length: int
    ) -> Tensor:
        """The batch's distance matrices as float32 [B, L, L] (L = `length`): stored uint8
        codes, UNREACHABLE read back as RDKit's 1e8, zeros in padded slots."""
        device = self.device
        num_graphs = len(atom_counts_host)
        squares = atom_counts * atom_counts
        total = int((atom_counts_host * atom_counts_host).sum())
        pair_graph = torch.repeat_interleave(
            torch.arange(num_graphs, device=device), squares, output_size=total)
        pair_start = torch.cumsum(squares, 0) - squares
        local = torch.arange(total, device=device) - pair_start[pair_graph]
        n = atom_counts[pair_graph]
        codes = self.distances[self.distance_ptr[idx][pair_graph] + local]
        values = torch.where(codes == UNREACHABLE, RDKIT_UNREACHABLE, codes.float())
        where = pair_graph * (length * length) + (local // n) * length + local % n
        dense = torch.zeros(num_graphs * length * length, device=device)
        return dense.index_copy_(0, where, values).view(num_graphs, length, length)
