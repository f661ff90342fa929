"""GPS graph transformer for molecules.

Rampasek, Galkin, Dwivedi, Luu, Wolf, Beaini, "Recipe for a General, Powerful, Scalable Graph
Transformer", NeurIPS 2022. Each GPS layer adds a local message-passing update (here GINE:
Hu, Liu, Gomes, Zitnik, Liang, Vijay Pande, Leskovec, "Strategies for Pre-training Graph Neural
Networks", ICLR 2020) and a global multi-head self-attention update over the atoms of each molecule
(Vaswani et al., "Attention Is All You Need", NeurIPS 2017), then a feed-forward block.

Choices that differ from the paper's reference code, and why:
- LayerNorm instead of BatchNorm: BatchNorm's running statistics would also move on the perturbed
  forward pass of SAM-type optimizers (GraphSAM, SAM, ...), so evaluation would see statistics of
  weights that were never kept.
- No host synchronization in `forward`: the dense attention layout is built from
  `batch.node_graph`, `batch.node_slot` and the host int `batch.max_atoms` with index_copy, never
  with `to_dense_batch` (which calls `.item()` without `max_num_nodes`), boolean-mask indexing,
  `.nonzero()` or `.tolist()`. The forward is therefore capturable in a CUDA graph once the
  batch's shapes are fixed (molsam.train.static pads batches to bucketed shapes and captures the
  whole step there: Adam with capturable=True, lr and rho as device tensors, re-anchor steps
  eager); an eager step with varying shapes is not captured.
- torch-geometric (Fey & Lenssen, ICLR-W 2019) ops are equivalent but not used, because none
  made a step faster (benchmarks/pyg_ops.py, CPU, BBBP batch 32, hidden 64 x 3, same run:
  GINEConv 1.00-1.05x molsam's step time, `scatter` readout 0.99-1.10x, `to_dense_batch` with
  max_num_nodes and batch_size 1.12-1.18x: it recounts atoms and rebuilds the index in every
  layer, where molsam builds the layout once per forward) and importing torch_geometric costs
  about as much as importing torch, at every CLI start. tests/unit/test_pyg.py asserts each
  equivalence (1e-6), so a swap stays a one-line change. PyG's `Batch` is accepted as input
  (GraphBatch.from_pyg), and a GraphStore exports to PyG (molsam.data.pyg).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from molsam.chem.spec import ATOM_VOCAB_SIZES, BOND_VOCAB_SIZES, DEFAULT_RWSE_STEPS
from molsam.data.batching import GraphBatch
from molsam.models.features import FeatureScaler, joined_features

POOLINGS = ("mean", "sum", "attention")


class CodeEmbedding(nn.Module):
    """Sum of one learned embedding per integer code column.

    Stored as a single table with per-column offsets so that all columns are embedded by one
    lookup (one kernel) instead of one per column; mathematically the same as a ModuleList of
    nn.Embedding whose outputs are summed (OGB's AtomEncoder, Hu et al. 2020).

    Without gradients (predict, evaluate, validation) the lookup and the sum are one
    `F.embedding_bag(mode="sum")` (a row of C codes is one bag): 6.5x faster than gathering
    [R, C, dim] and summing it, on 5,000 atoms, with the same values. With gradients the
    gather-and-sum stays: embedding_bag's backward has no derivative of its own, which the
    Hessian-vector products of molsam.analysis.sharpness need, and its backward is no faster.

    Input: uint8/int [R, C] codes, column c in 0..vocab_sizes[c]-1. Output: float [R, dim].
    """

    def __init__(self, vocab_sizes: tuple[int, ...] | list[int], dim: int) -> None:
        super().__init__()
        sizes = [int(s) for s in vocab_sizes]
        offsets = torch.tensor([0] + sizes[:-1], dtype=torch.long).cumsum(0)
        # Not persistent: derived from the vocabulary, so it stays out of checkpoints.
        self.register_buffer("offsets", offsets, persistent=False)
        self.table = nn.Embedding(sum(sizes), dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.table.weight)

    def forward(self, codes: Tensor) -> Tensor:
        index = codes.long() + self.offsets
        if torch.is_grad_enabled() and self.table.weight.requires_grad:
            return self.table(index).sum(dim=1)
        return F.embedding_bag(index, self.table.weight, mode="sum")


def dense_index(batch: GraphBatch) -> tuple[Tensor, Tensor]:
    """Flat slot of each atom in the dense [B, L] layout, and the key-padding mask.

    Returns:
        flat:  int64 [N], node_graph * L + node_slot with L = batch.max_atoms.
        valid: bool [B, L], True where a slot holds an atom.
    """
    length = batch.max_atoms
    flat = batch.node_graph * length + batch.node_slot
    valid = torch.zeros(batch.num_graphs * length, dtype=torch.bool, device=flat.device)
    valid = valid.index_fill(0, flat, True)
    return flat, valid.view(batch.num_graphs, length)


def attention_layout(batch: GraphBatch) -> tuple[Tensor, Tensor, tuple[tuple[int, int], ...]]:
    """The self-attention's dense layout: dense_index's [B, L] as one group, or the batch's
    own grouping (`batch.attn_groups`, set by molsam.data.buckets on the CPU).

    A group is a run of S_g = B_g * L_g slots of one flat buffer holding B_g molecules at
    L_g slots each; attention runs per group, so a batch's few large molecules need not make
    every small one pay L_max^2 (GraphBatch docstring).

    Returns:
        flat:   int64 [N], slot of each atom in the buffer of S = sum_g S_g slots.
        valid:  bool [S], True where a slot holds an atom.
        groups: ((B_1, L_1), ...), the buffer's runs in order.
    """
    if batch.attn_groups is None:
        flat, valid = dense_index(batch)
        return flat, valid.view(-1), ((batch.num_graphs, batch.max_atoms),)
    flat = batch.attn_offset[batch.node_graph] + batch.node_slot
    slots = sum(b * length for b, length in batch.attn_groups)
    valid = torch.zeros(slots, dtype=torch.bool, device=flat.device).index_fill(0, flat, True)
    return flat, valid, batch.attn_groups


def to_dense(x: Tensor, flat: Tensor, num_graphs: int, length: int) -> Tensor:
    """Scatter node rows [N, H] into a zero-padded [B, L, H] tensor (differentiable)."""
    # In place into fresh zeros (which need no gradient): the out-of-place index_copy would
    # first clone the [B*L, H] zeros, one more full-size copy per call.
    dense = x.new_zeros(num_graphs * length, x.shape[-1])
    return dense.index_copy_(0, flat, x).view(num_graphs, length, x.shape[-1])


class GINELayer(nn.Module):
    """GINE message passing (Hu et al., ICLR 2020), eps fixed at 0:

        h_i = MLP(x_i + sum_{j -> i} ReLU(x_j + e_ji))

    Written with index_add_ (no host sync). PyG's `GINEConv(mlp, eps=0)` is the same function
    (tested), but not faster here and not used (module docstring). Shapes: x [N, H],
    edge_index int64 [2, E] (row 0 source, row 1 target), edge_attr [E, H] -> [N, H].
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                module.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        src, dst = edge_index[0], edge_index[1]
        messages = F.relu(x.index_select(0, src) + edge_attr)
        # Accumulate in the message dtype (fp32 under autocast since embeddings stay fp32).
        aggregated = torch.zeros(
            x.shape[0], x.shape[1], dtype=messages.dtype, device=x.device
        ).index_add_(0, dst, messages)
        return self.mlp(x + aggregated)


class DenseSelfAttention(nn.Module):
    """Multi-head self-attention over the atoms of each molecule, padded to [B, L, H].

    Uses torch.nn.functional.scaled_dot_product_attention (flash / memory-efficient kernels where
    available). `valid` bool [B, L] masks padded keys; padded query rows are computed but
    discarded by the caller. Every molecule has at least one atom, so no row is fully masked.
    """

    def __init__(self, hidden: int, heads: int, attn_dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.attn_dropout = attn_dropout
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.qkv.weight)
        nn.init.zeros_(self.qkv.bias)
        self.out.reset_parameters()

    def forward(
        self, x: Tensor, flat: Tensor, valid: Tensor,
        groups: tuple[tuple[int, int], ...] | None = None,
    ) -> Tensor:
        """x [N, H] atom rows, flat int64 [N], valid bool [B, L] (dense_index) -> [N, H]; or,
        with `groups` (attention_layout), valid bool [S] over runs of [B_g, L_g] slots.

        The q/k/v and output projections run on the N atom rows, not on the padded slots
        (row-wise linear maps, so the result is the same; on BBBP batches of 32 about half of
        the slots are padding). Only q, k, v are laid out densely, for the attention itself.
        """
        if groups is None:
            groups = ((valid.shape[0], valid.shape[1]),)
        valid = valid.reshape(-1)
        hidden = x.shape[-1]
        d = hidden // self.heads
        qkv = self.qkv(x)
        # In place into fresh zeros (see to_dense): zeros in padded slots.
        dense = qkv.new_zeros(valid.shape[0], qkv.shape[-1]).index_copy_(0, flat, qkv)
        outputs, start = [], 0
        for b, length in groups:
            end = start + b * length
            q, k, v = (
                dense[start:end].view(b, length, 3, self.heads, d)
                .permute(2, 0, 3, 1, 4)  # [3, B_g, heads, L_g, d]
                .unbind(0)
            )
            mask = valid[start:end].view(b, 1, 1, length)  # True = may attend
            attended = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.attn_dropout if self.training else 0.0
            )
            # [B_g, heads, L_g, d] -> [B_g * L_g, H]
            outputs.append(attended.transpose(1, 2).reshape(b * length, hidden))
            start = end
        # Back to atom rows: the N real slots.
        rows = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
        return self.out(rows.index_select(0, flat))


class GPSLayer(nn.Module):
    """One GPS layer (Rampasek et al. 2022, eq. 2-4), with LayerNorm in place of BatchNorm:

        local  = LN(x + Dropout(GINE(x, e)))
        global = LN(x + Dropout(Attn(x)))
        h      = local + global
        out    = LN(h + Dropout(FFN(h)))

    Shapes: x [N, H] -> [N, H].
    """

    def __init__(self, hidden: int, heads: int, dropout: float, attn_dropout: float) -> None:
        super().__init__()
        self.local = GINELayer(hidden)
        self.attn = DenseSelfAttention(hidden, heads, attn_dropout)
        self.norm_local = nn.LayerNorm(hidden)
        self.norm_attn = nn.LayerNorm(hidden)
        self.norm_out = nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(
            nn.Linear(hidden, 2 * hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(2 * hidden, hidden)
        )
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.local.reset_parameters()
        self.attn.reset_parameters()
        for norm in (self.norm_local, self.norm_attn, self.norm_out):
            norm.reset_parameters()
        for module in self.ffn:
            if isinstance(module, nn.Linear):
                module.reset_parameters()

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor,
        flat: Tensor,
        valid: Tensor,
        groups: tuple[tuple[int, int], ...] | None = None,
    ) -> Tensor:
        local = self.norm_local(x + self.dropout(self.local(x, edge_index, edge_attr)))
        attended = self.attn(x, flat, valid, groups)
        glob = self.norm_attn(x + self.dropout(attended))
        h = local + glob
        return self.norm_out(h + self.dropout(self.ffn(h)))


class GPSModel(nn.Module):
    """GPS graph transformer with a graph readout and a multi-task head.

    Input embedding: sum of learned embeddings of the integer atom codes (one table per
    column of molsam.chem.spec.ATOM_VOCABULARIES) plus a linear projection of the RWSE
    encodings (Dwivedi et al., ICLR 2022). Bonds: sum of learned embeddings of the bond codes,
    shared by all layers. Then `layers` GPS layers, a readout over the atoms of each molecule and
    an MLP head.

    Args:
        num_tasks: T, outputs per molecule (logits for classification, standardized values for
            regression).
        hidden: H, width of atom and bond representations; divisible by `heads`.
        layers: number of GPS layers.
        heads: attention heads.
        dropout: dropout after the local, attention and feed-forward blocks and in the head.
        pe_steps: K, RWSE steps the featurizer produced (batch.rwse is [N, K]).
        pooling: graph readout, one of "mean", "sum", "attention" (softmax-gated sum, Li et al.,
            "Gated Graph Sequence Neural Networks", ICLR 2016).
        attn_dropout: dropout on attention weights.
        mol_features: F molecule-level feature columns (molsam.chem.descriptors) scaled by a
            FeatureScaler and joined to the pooled representation before the head; 0: none.
        feature_extras: the featurizer extras that make some of those columns (e.g.
            ("rdkit2d",)); the others are input columns (data.feature_columns).

    forward(batch: GraphBatch or a torch-geometric Batch) -> float [B, T].
    """

    def __init__(
        self,
        num_tasks: int,
        *,
        hidden: int = 64,
        layers: int = 3,
        heads: int = 4,
        dropout: float = 0.1,
        pe_steps: int = DEFAULT_RWSE_STEPS,
        pooling: str = "mean",
        attn_dropout: float = 0.0,
        mol_features: int = 0,
        feature_extras: tuple[str, ...] | list[str] = (),
    ) -> None:
        super().__init__()
        _check_positive_int("num_tasks", num_tasks)
        _check_positive_int("hidden", hidden)
        _check_positive_int("layers", layers)
        _check_positive_int("heads", heads)
        if isinstance(pe_steps, bool) or not isinstance(pe_steps, int) or pe_steps < 0:
            raise ValueError(f"pe_steps: expected an int >= 0, got {pe_steps!r}")
        if hidden % heads != 0:
            divisors = [h for h in range(1, hidden + 1) if hidden % h == 0]
            raise ValueError(
                f"hidden={hidden} is not divisible by heads={heads}; valid heads for this "
                f"hidden: {', '.join(map(str, divisors))}"
            )
        if pooling not in POOLINGS:
            raise ValueError(f"pooling: {pooling!r} is not one of {', '.join(POOLINGS)}")
        for name, p in (("dropout", dropout), ("attn_dropout", attn_dropout)):
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
                raise ValueError(f"{name}: expected a number in [0, 1), got {p!r}")

        self.num_tasks = num_tasks
        self.hidden = hidden
        self.num_layers = layers
        self.heads = heads
        self.dropout_p = float(dropout)
        self.pe_steps = pe_steps
        self.pooling = pooling
        self.attn_dropout = float(attn_dropout)
        self.mol_features = int(mol_features)
        self.feature_extras = tuple(feature_extras)
        if self.feature_extras and not self.mol_features:
            raise ValueError("feature_extras without mol_features: their columns must be counted")
        self.feature_scaler = FeatureScaler(self.mol_features) if self.mol_features else None

        self.atom_embedding = CodeEmbedding(ATOM_VOCAB_SIZES, hidden)
        self.bond_embedding = CodeEmbedding(BOND_VOCAB_SIZES, hidden)
        self.pe_projection = nn.Linear(pe_steps, hidden) if pe_steps > 0 else None
        self.layers = nn.ModuleList(
            GPSLayer(hidden, heads, self.dropout_p, self.attn_dropout) for _ in range(layers)
        )
        # No bias: a softmax over the atoms does not change when a constant is added to every
        # score, so a gate bias would never get a gradient (and could never learn).
        self.gate = nn.Linear(hidden, 1, bias=False) if pooling == "attention" else None
        self.head = nn.Sequential(
            nn.Linear(hidden + self.mol_features, hidden), nn.ReLU(), nn.Dropout(self.dropout_p),
            nn.Linear(hidden, num_tasks)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.atom_embedding.reset_parameters()
        self.bond_embedding.reset_parameters()
        if self.pe_projection is not None:
            self.pe_projection.reset_parameters()
        for layer in self.layers:
            layer.reset_parameters()
        if self.gate is not None:
            self.gate.reset_parameters()
        for module in self.head:
            if isinstance(module, nn.Linear):
                module.reset_parameters()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # Checkpoints written before the gate lost its bias still load: the bias only shifted
        # every softmax score by one constant, so dropping it leaves the outputs unchanged.
        state_dict.pop(f"{prefix}gate.bias", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def config(self) -> dict:
        """Constructor arguments as plain builtins: `GPSModel(**model.config())` rebuilds it."""
        return {
            "num_tasks": self.num_tasks,
            "hidden": self.hidden,
            "layers": self.num_layers,
            "heads": self.heads,
            "dropout": self.dropout_p,
            "pe_steps": self.pe_steps,
            "pooling": self.pooling,
            "attn_dropout": self.attn_dropout,
            # only when used: configs of models without them stay as they were
            **({"mol_features": self.mol_features, "feature_extras": list(self.feature_extras)}
               if self.mol_features else {}),
        }

    @property
    def featurizer_extras(self) -> tuple[str, ...]:
        """Featurizer extras this model reads (its molecule-level features)."""
        return self.feature_extras

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    def _as_graph_batch(self, batch: GraphBatch | Any) -> GraphBatch:
        """molsam's batch as is; a torch-geometric Batch/Data converted (GraphBatch.from_pyg)."""
        if isinstance(batch, GraphBatch):
            return batch
        batch = GraphBatch.from_pyg(batch)
        if self.pe_projection is not None and batch.rwse.shape[-1] != self.pe_steps:
            raise ValueError(f"PyG batch: rwse has {batch.rwse.shape[-1]} columns, this model "
                             f"reads {self.pe_steps} (pe_steps)")
        return batch

    def embed(self, batch: GraphBatch | Any, layout: tuple | None = None) -> Tensor:
        """Atom representations after the last GPS layer: [N, H].

        `batch`: a GraphBatch or a torch-geometric Batch (molsam.data.pyg layout).
        `layout` is attention_layout(batch) (or dense_index(batch) for a batch without
        attention groups), computed here when not given.
        """
        batch = self._as_graph_batch(batch)
        flat, valid, *groups = attention_layout(batch) if layout is None else layout
        x = self.atom_embedding(batch.atom_codes)
        if self.pe_projection is not None:
            x = x + self.pe_projection(batch.rwse.to(self.pe_projection.weight.dtype))
        edge_attr = self.bond_embedding(batch.bond_codes)
        groups = groups[0] if groups else None
        for layer in self.layers:
            x = layer(x, batch.edge_index, edge_attr, flat, valid, groups)
        return x

    def readout(
        self, x: Tensor, batch: GraphBatch, layout: tuple[Tensor, Tensor] | None = None
    ) -> Tensor:
        """Pool atom rows [N, H] into molecule rows [B, H] (no host sync). `layout`:
        dense_index(batch), computed here when needed and not given."""
        b = batch.num_graphs
        if self.pooling == "attention":
            flat, valid = dense_index(batch) if layout is None else layout
            dense = to_dense(x, flat, b, batch.max_atoms)  # [B, L, H]
            scores = self.gate(dense).squeeze(-1).float()  # [B, L]
            scores = scores.masked_fill(~valid, float("-inf"))
            weights = torch.softmax(scores, dim=-1).to(dense.dtype)
            return torch.bmm(weights.unsqueeze(1), dense).squeeze(1)
        pooled = x.new_zeros(b, x.shape[1]).index_add_(0, batch.node_graph, x)
        if self.pooling == "mean":
            counts = torch.zeros(b, dtype=x.dtype, device=x.device).index_add_(
                0, batch.node_graph, torch.ones_like(batch.node_graph, dtype=x.dtype)
            )
            pooled = pooled / counts.clamp(min=1).unsqueeze(1)
        return pooled

    def forward(self, batch: GraphBatch | Any) -> Tensor:
        """batch with B molecules -> float [B, num_tasks].

        `batch`: molsam's GraphBatch, or a torch-geometric `Batch` of molecules in molsam's
        layout (`GraphStore.to_pyg_dataset` + PyG's DataLoader): same outputs for the same
        molecules.
        """
        batch = self._as_graph_batch(batch)
        layout = attention_layout(batch)  # built once, shared by every layer
        # The attention readout reads the [B, L] layout: the same one unless the batch is
        # grouped (then readout builds it).
        plain = layout[:2] if batch.attn_groups is None else None
        if plain is not None:
            plain = (plain[0], plain[1].view(batch.num_graphs, batch.max_atoms))
        pooled = self.readout(self.embed(batch, layout), batch, plain)
        return self.head(joined_features(self.feature_scaler, pooled, batch))


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
