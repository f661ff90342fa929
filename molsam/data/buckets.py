"""Static-shape batches: every batch padded to one of a few bucketed shapes.

A CUDA graph replays fixed shapes only, and on BBBP at batch 128 every one of 390 steps had a
different (graphs, atoms, bonds, largest molecule). Rounding each up gives a few dozen shapes
(`Buckets.for_batch_size`, the CUDA set):

- graphs: fixed, `batch_size + pad_graphs` (the padding graphs hold the padding atoms);
- atoms:  rounded up to a multiple of `atom_multiple` (default 4 x batch size: 512 at 128);
- bonds:  rounded up to a multiple of `bond_multiple` (default 8 x batch size: 1024 at 128),
          directed edges = 2 x bonds;
- largest molecule (dense attention length L): rounded up to 32, 48, 64, 96, 128, 160, 192,
  256, then multiples of 64.

On the CPU a new shape costs nothing (no graph to capture), while every padded atom, edge and
attention slot costs time, so `Buckets.for_device` rounds much finer there (`Buckets.for_cpu`):
one padding graph, atoms and bonds to multiples of 8, L to a multiple of 16, and the
self-attention split in two groups of molecules when that needs far fewer attention pairs
(`attention_groups`: the few largest molecules at their L, the rest at theirs; one large
molecule no longer makes the whole batch pay L_max^2). Why each:
- L to a multiple of 16: torch's CPU attention kernel (scaled_dot_product_attention, forward +
  backward, [32, 4 heads, L, 16], fp32, one thread) was 30-40% faster at a multiple of 16 than
  one below it (L 47: 5.9 ms, 48: 3.6 ms; 63: 8.7 ms, 64: 5.2 ms; 127: 19.6 ms, 128: 13.5 ms),
  though slower just past one (33: 2.7 ms, 48: 3.6 ms); on real BBBP batches of 32 that nets
  1.02x the eager attention, the extra padding graph's row included.
- two groups: over a BBBP epoch of unsorted batches they were taken in 62 of 63 batches of 32
  and 15 of 15 of 128 and need 0.42x and 0.29x the eager batches' attention pairs G x L^2
  (against 1.31x and 1.22x in one group). With `train.sort_by_size` a batch's molecules are of
  similar size, two groups rarely pay (5 of 63, 1 of 15 batches), and rounding L up to 16 on
  such tight batches plus the padding graph's row cost 1.45x (batch 32) and 1.64x (128) the
  pairs: the padded step is then slightly slower than eager (molsam/train/static.py).
- the coarse CUDA set on the CPU: 1.38x attention slots and 1.62x pairs at batch 32, 0.84-0.89x
  the eager step's speed.
Benchmarks and figures: molsam/train/static.py's docstring. On CUDA a grouped layout would
multiply the shapes to capture, so the CUDA set keeps one group.

Why the padding is inert (tests/unit/test_static_shapes.py checks loss and gradients to 1e-6):
padding atoms sit in padding graphs of their own, after the real ones, so attention (per graph),
pooling (per graph) and the readout never mix them with real atoms; padding edges join padding
atoms only, so no message reaches a real atom; padding graphs' targets are NaN, which the masked
loss and every metric leave out. Every padding graph holds at least one atom (a graph without
atoms would make the attention readout's softmax 0/0).

Padding edges are spread evenly over all padding atoms: sending them all to one dummy node makes
the scatter-add an atomic hot spot on a GPU (measured: ~5,000 graphs/s regardless of batch size).

Everything is built on the device from host ints (sizes from the host copy of the counts): no
host sync and no host-to-device copy per batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from molsam.data.batching import BatchSource, GraphBatch

#: Dense attention lengths (largest molecule, rounded up); beyond the last, multiples of 64.
LENGTHS = (32, 48, 64, 96, 128, 160, 192, 256)


#: CPU rules (Buckets.for_cpu): L to a multiple of 16 (the CPU attention kernel's fast case),
#: atoms and bonds to multiples of 8 (at most 8 padding atoms: they fit one padding graph).
CPU_LENGTH_MULTIPLE = 16
CPU_ATOM_MULTIPLE = 8
CPU_BOND_MULTIPLE = 8


def bucket_length(max_atoms: int, multiple: int | None = None) -> int:
    """Smallest length in LENGTHS (then a multiple of 64) that holds `max_atoms`; with
    `multiple`, `max_atoms` rounded up to a multiple of it instead."""
    if multiple is not None:
        return round_up(max_atoms, multiple)
    for length in LENGTHS:
        if max_atoms <= length:
            return length
    return int(math.ceil(max_atoms / 64) * 64)


def round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple) if value > 0 else multiple


@dataclass(frozen=True)
class BucketShape:
    """One static shape: G graphs, N atoms, E directed edges, dense length L."""

    graphs: int
    atoms: int
    edges: int
    length: int


@dataclass(frozen=True)
class Buckets:
    """Rounding rules for batches of up to `batch_size` molecules (see the module docstring).

    `length_multiple`: None rounds L up to LENGTHS (the CUDA set), an int to a multiple of it.
    """

    batch_size: int
    atom_multiple: int
    bond_multiple: int
    pad_graphs: int
    length_multiple: int | None = None
    #: Split the self-attention in two groups when it saves attention pairs (attention_groups).
    group_attention: bool = False

    def __post_init__(self) -> None:
        # The padding atoms (fewer than atom_multiple beyond one per padding graph) must fit
        # the padding graphs at <= L atoms each, for the smallest L these rules produce.
        smallest = LENGTHS[0] if self.length_multiple is None else self.length_multiple
        if math.ceil((self.atom_multiple - 1) / self.pad_graphs) + 1 > smallest:
            raise ValueError(f"{self}: padding atoms may not fit {self.pad_graphs} padding "
                             f"graphs of length {smallest}")

    @classmethod
    def for_device(cls, batch_size: int, device: torch.device | str) -> "Buckets":
        """The CUDA set on CUDA (few shapes: one captured graph each), the fine CPU rules
        elsewhere (module docstring)."""
        if torch.device(device).type == "cuda":
            return cls.for_batch_size(batch_size)
        return cls.for_cpu(batch_size)

    @classmethod
    def for_cpu(cls, batch_size: int) -> "Buckets":
        """One padding graph, atoms and bonds to multiples of 8, L to a multiple of 16, two
        attention groups where they pay."""
        return cls(batch_size, CPU_ATOM_MULTIPLE, CPU_BOND_MULTIPLE, pad_graphs=1,
                   length_multiple=CPU_LENGTH_MULTIPLE, group_attention=True)

    @classmethod
    def for_batch_size(
        cls, batch_size: int, atom_multiple: int | None = None, bond_multiple: int | None = None
    ) -> "Buckets":
        """The CUDA set (module docstring): few shapes, each captured once."""
        atom_multiple = atom_multiple or 4 * batch_size
        bond_multiple = bond_multiple or 8 * batch_size
        # Enough padding graphs that the < atom_multiple padding atoms fit at most LENGTHS[0]
        # per graph (then any L holds them): ceil(A_pad / graphs) <= LENGTHS[0].
        pad_graphs = math.ceil(atom_multiple / (LENGTHS[0] - 1)) + 1
        return cls(batch_size, atom_multiple, bond_multiple, pad_graphs)

    def shape(self, atom_counts: np.ndarray, bond_counts: np.ndarray) -> BucketShape:
        """The bucket of a batch with these per-molecule counts (host int arrays [b])."""
        b = len(atom_counts)
        if b > self.batch_size:
            raise ValueError(f"batch of {b} molecules is larger than batch_size {self.batch_size}")
        graphs = self.batch_size + self.pad_graphs
        real_atoms = int(atom_counts.sum())
        # At least one padding atom per padding graph.
        atoms = round_up(real_atoms + (graphs - b), self.atom_multiple)
        edges = 2 * round_up(int(bond_counts.sum()), self.bond_multiple)
        length = bucket_length(int(atom_counts.max()) if b else 1, self.length_multiple)
        return BucketShape(graphs, atoms, edges, length)


def pad_batch(
    batch: GraphBatch, targets: Tensor, shape: BucketShape,
    attention: tuple[np.ndarray, tuple[tuple[int, int], ...]] | None = None,
) -> tuple[GraphBatch, Tensor]:
    """`batch` (b real molecules) padded to `shape`; targets [b, T] padded with NaN rows.

    Layout: real atoms 0..N_real-1 as in `batch`, then A_pad = N - N_real padding atoms split
    into the G - b padding graphs b..G-1 in contiguous runs of floor or ceil(A_pad / (G - b))
    (padding_atom_counts); real edges, then E - E_real padding edges j -> (j + 1) among padding
    atoms, spread evenly. `attention`: (offset int64 [G], groups) from attention_groups, stored
    as the batch's grouped attention layout. Returns (padded batch with num_graphs=G and
    max_atoms=L, targets [G, T]).
    """
    device = batch.atom_codes.device
    b = batch.num_graphs
    n_real, e_real = batch.atom_codes.shape[0], batch.edge_index.shape[1]
    pad_graphs = shape.graphs - b
    pad_atoms = shape.atoms - n_real
    pad_edges = shape.edges - e_real
    if pad_graphs < 1 or pad_atoms < pad_graphs or pad_edges < 0 or batch.max_atoms > shape.length:
        raise ValueError(f"batch (b={b}, atoms={n_real}, edges={e_real}) does not fit {shape}")

    j = torch.arange(pad_atoms, device=device)
    graph = torch.div(j * pad_graphs, pad_atoms, rounding_mode="floor")  # 0..pad_graphs-1
    first = torch.div(graph * pad_atoms + pad_graphs - 1, pad_graphs, rounding_mode="floor")
    slot = j - first  # position inside its padding graph, < ceil(pad_atoms / pad_graphs) <= L
    e = torch.arange(pad_edges, device=device)
    src = n_real + e % pad_atoms
    dst = n_real + (e + 1) % pad_atoms
    padded = GraphBatch(
        atom_codes=torch.cat([batch.atom_codes, batch.atom_codes.new_zeros(
            pad_atoms, batch.atom_codes.shape[1])]),
        rwse=torch.cat([batch.rwse, batch.rwse.new_zeros(pad_atoms, batch.rwse.shape[1])]),
        edge_index=torch.cat([batch.edge_index, torch.stack([src, dst])], dim=1),
        bond_codes=torch.cat([batch.bond_codes, batch.bond_codes.new_zeros(
            pad_edges, batch.bond_codes.shape[1])]),
        node_graph=torch.cat([batch.node_graph, b + graph]),
        node_slot=torch.cat([batch.node_slot, slot]),
        y=None if batch.y is None else torch.cat(
            [batch.y, batch.y.new_full((pad_graphs, batch.y.shape[1]), float("nan"))]),
        index=torch.cat([batch.index, batch.index.new_full((pad_graphs,), -1)]),
        num_graphs=shape.graphs,
        max_atoms=shape.length,
        mol_features=None if batch.mol_features is None else torch.cat([
            batch.mol_features,
            batch.mol_features.new_zeros(pad_graphs, batch.mol_features.shape[1])]),
    )
    if attention is not None:
        offset, groups = attention
        padded.attn_offset = torch.from_numpy(offset).to(device)
        padded.attn_groups = groups
    padded_targets = torch.cat(
        [targets, targets.new_full((pad_graphs, targets.shape[1]), float("nan"))])
    return padded, padded_targets


def gather_padded(
    source: BatchSource,
    buckets: Buckets,
    index: np.ndarray,
    index_on_device: Tensor,
    targets: Tensor,
) -> tuple[GraphBatch, Tensor, BucketShape]:
    """Gather molecules `index` and pad them to their bucket. `targets` [G_store, T] on the
    device. Returns (padded batch, padded targets [G, T] with NaN rows, the shape)."""
    atom_counts = source.atom_counts_host[index]
    shape = buckets.shape(atom_counts, source.bond_counts_host[index])
    attention = None
    if buckets.group_attention:
        counts = np.concatenate([atom_counts, padding_atom_counts(len(index), shape, atom_counts)])
        attention = attention_groups(counts, shape.length, buckets.length_multiple or 1)
        if len(attention[1]) == 1:
            attention = None  # the usual [G, L] layout: nothing to record
    batch = source.gather(index, index_on_device)
    padded, padded_targets = pad_batch(batch, targets[index_on_device], shape, attention)
    return padded, padded_targets, shape


def padding_atom_counts(b: int, shape: BucketShape, atom_counts: np.ndarray) -> np.ndarray:
    """Atoms in each of the G - b padding graphs of pad_batch's layout: host int [G - b]."""
    pad_graphs, pad_atoms = shape.graphs - b, shape.atoms - int(atom_counts.sum())
    first = -(-np.arange(pad_graphs + 1) * pad_atoms // pad_graphs)  # ceil(g * A_pad / P)
    return np.diff(first)


#: Two attention groups only when they need at most this fraction of one group's attention
#: pairs: a second group costs a second attention call and a concatenation.
GROUP_GAIN = 0.8


def attention_groups(
    counts: np.ndarray, length: int, multiple: int
) -> tuple[np.ndarray, tuple[tuple[int, int], ...]]:
    """A grouped self-attention layout for G molecules with `counts` atoms (host int [G]).

    The k largest molecules go to a group at L_1 = `length` (the batch's L), the others to a
    group at L_2 = their largest count rounded up to `multiple`; k minimizes the attention pairs
    k L_1^2 + (G - k) L_2^2, and the split is taken only if that is at most GROUP_GAIN of the
    one group's G L_1^2 (else one group of G at `length`). Vectorized over k (no per-molecule
    Python). Returns (offset int64 [G]: first slot of each molecule in the flat buffer,
    groups ((B_1, L_1), ...)); molecules keep their rows, only their slots move.
    """
    g = len(counts)
    order = np.argsort(-counts, kind="stable")
    rank = np.empty(g, dtype=np.int64)
    rank[order] = np.arange(g)
    lengths = np.maximum(-(-counts[order] // multiple) * multiple, 1)  # descending
    k = np.arange(1, g)
    pairs = k * length**2 + (g - k) * lengths[k] ** 2
    if g > 1 and pairs.min() <= GROUP_GAIN * g * length**2:
        split = int(k[pairs.argmin()])
        second = int(lengths[split])
        offset = np.where(rank < split, rank * length, split * length + (rank - split) * second)
        return offset.astype(np.int64), ((split, length), (g - split, second))
    return np.arange(g, dtype=np.int64) * length, ((g, length),)


def size_sorted_order(
    order: np.ndarray, atom_counts: np.ndarray, batch_size: int, rng: np.random.Generator,
    window: int = 32,
) -> np.ndarray:
    """Less attention padding: within windows of `window` batches of the shuffled `order`,
    sort molecules by atom count, cut into batches, and shuffle the batches of the epoch.

    The epoch still visits every molecule once; batches hold molecules of similar size, so
    the dense [G, L] attention wastes fewer slots. Consumes `rng` (one permutation).
    """
    span = window * batch_size
    chunks = [order[i : i + span] for i in range(0, len(order), span)]
    sorted_order = np.concatenate(
        [c[np.argsort(atom_counts[c], kind="stable")] for c in chunks]) if chunks else order
    batches = [sorted_order[i : i + batch_size] for i in range(0, len(sorted_order), batch_size)]
    # Keep a partial batch last (only the final one can be partial): shuffle the full ones.
    full = [bt for bt in batches if len(bt) == batch_size]
    rest = [bt for bt in batches if len(bt) != batch_size]
    perm = rng.permutation(len(full))
    return np.concatenate([full[i] for i in perm] + rest) if batches else order
