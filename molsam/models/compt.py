"""CoMPT: the Communicative Message Passing Transformer, the backbone of the GraphSAM paper.

Chen, Zheng, Lu, Yang, Li, Wang, Zhou, "Learning Attributed Graph Representations with
Communicative Message Passing Transformer", IJCAI 2021. The GraphSAM paper (Wang et al., ICLR
2024) reports its main gains on this model. What is built here is what the authors' code
computes, in molsam's batch layout; for one molecule of n atoms, d = hidden, h heads, d_k = d / h:

- Inputs: 115 atom columns (atomic number 1-100 + other, hybridization SP..SP3D2 + other, then
  the eight scalars of molsam.chem.compt_inputs) and 13 bond columns (bond type, stereo,
  conjugated, aromatic, in ring), rebuilt from molsam's integer codes; the atom's index in the
  molecule (a learned position embedding); D, the topological distance matrix.
- Embeddings: x_i = Linear(atom_i) * sqrt(d) + Pos(i + 1); e_ij = Linear(bond_ij) * sqrt(d), and
  where atoms i, j share no bond (the diagonal included) e_ij is the bond embedding's bias *
  sqrt(d): one shared "no-bond" vector.
- Each layer, with one norm module (LayerNorm on the unbiased std + 1e-6, or ScaleNorm):
      y = norm(x);  q_i = W_q y_i;  v_i = W_v y_i;  k_ij = W_k e_ij
      A_ij = softmax_j(q_i . k_ij / sqrt(d_k)) over the molecule's atoms
      M_ij = (A_ij + A_ji' - diag(A)_ij) * K(lambda * D_ij), with A' the "in" attention
             softmax_j(q_i . k_ji / sqrt(d_k)); e is symmetric, so A' = A and M = 2A - diag(A)
      a_i = mish(W_o concat_heads(sum_j M_ij v_j))
      f = y + norm(a);  x_next = y + f + norm(mish(W_1 f))
  K is exp(-x) or a row softmax of -x; lambda is a learned scalar per layer (0.1 at start).
  After the last layer, x = norm(x).
- Readout ("gru"): h_0 = max_i mish(x_i + b); a bidirectional GRU over the atoms in index order,
  mish(Linear(2d -> d)) per atom, averaged over atoms; then the generator, (Linear -> Mish ->
  norm -> Dropout) x (head_layers - 1) -> Linear(d -> tasks). Or "mean" pooling.
- Init: Xavier uniform on every parameter with more than one dimension.

Cheap exact attention: every pair without a bond has the same key, so per layer and head only
q_i . k_nobond (one number per atom) and q_i . k_ij on the bonds are computed, and the n x n
score matrix is filled from those. The reference builds dense n x n x d keys (~20-50x the
arithmetic on drug-like molecules) and gives the same scores.

Where molsam departs from the reference code, on purpose:
- The attention's fifth linear layer (an edge update the layer computes and then discards) is
  left out: it never changes an output and gets no gradient.
- The GRU and the max that starts it run over each molecule's real atoms only (the backward
  direction starts at the molecule's last atom). The reference runs over the padded batch and
  sums the padding slots' GRU outputs into the mean, so its numbers depend on which molecules
  share a batch and how much padding they carry; here padding and batch composition change
  nothing (tested).
- Positions past MAX_POSITIONS (128) share the last position embedding (the reference sizes
  the table to the dataset's largest molecule). The reference also drops BBBP molecules of 100
  atoms or more before splitting (2050 -> 2035 rows); molsam keeps every valid molecule.
- Training-side differences (the reference drops the last partial batch of every loader,
  evaluation included) live in the trainer, which scores every molecule.

Bond keys are factored: e_ij = W_e b_ij * sqrt(d) + c_e * sqrt(d) is linear in the 13 bond
columns, so W_k e_ij + k_b = (W_k W_e sqrt(d)) b_ij + (W_k c_e sqrt(d) + k_b): one d x 13 matrix
per layer instead of a d x d product over every bond (the largest matrix product of the
layer), and the no-bond key is the constant term. Used whenever the edge embedding's dropout
is off (evaluation, and every paper setting, whose dropout is 0); with dropout on, the
explicit form. The factored form is tested against the reference transcription, the explicit
one against the factored.

Attention keys are computed on the atom rows and bonds, and only scores, the kernel and values
are laid out densely per molecule ([B, L, L] with L = largest molecule in the batch); no host
synchronization in forward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from molsam.chem.spec import ATOM_VOCABULARIES, BOND_VOCABULARIES
from molsam.data.batching import GraphBatch
from molsam.models.features import FeatureScaler, joined_features
from molsam.models.gps import dense_index, to_dense

KERNELS = ("exp", "softmax")
NORMS = ("layer", "scale")
COMPT_POOLINGS = ("gru", "mean")
#: Atom and bond columns of the reference featurizer.
ATOM_COLUMNS = 115
BOND_COLUMNS = 13
#: Positions with their own embedding; larger molecules share the last one.
MAX_POSITIONS = 128

_ATOM_CODE = {name: column for column, (name, _) in enumerate(ATOM_VOCABULARIES)}
_BOND_CODE = {name: column for column, (name, _) in enumerate(BOND_VOCABULARIES)}
# molsam's hybridization codes (S, SP, SP2, SP3, SP3D, SP3D2, unknown) -> the reference's
# one-hot slot (SP, SP2, SP3, SP3D, SP3D2, other).
_HYBRIDIZATION_SLOT = (5, 0, 1, 2, 3, 4, 5)
# molsam's bond type codes (SINGLE, DOUBLE, TRIPLE, AROMATIC, unknown) -> the reference's slot;
# its one-hot has no "other" slot and sends unknown values to the last one (AROMATIC).
_BOND_TYPE_SLOT = (0, 1, 2, 3, 3)
# molsam's stereo codes (NONE, ANY, Z, E, CIS, TRANS, unknown) -> the reference's slot in
# (ANY, CIS, E, NONE, TRANS, Z), unknown to the last one as above.
_STEREO_SLOT = (3, 0, 5, 2, 1, 4, 5)
_AROMATIC_BOND_CODE = 3


def compt_atom_features(atom_codes: Tensor, atom_scalars: Tensor) -> Tensor:
    """The reference's 115 atom columns from molsam's codes and CoMPT's scalars.

    atom_codes uint8 [N, F_atom], atom_scalars float [N, 8] -> float [N, 115]: atomic number
    one-hot (1-100, then "other"), hybridization one-hot (SP..SP3D2, then "other"), scalars.
    """
    atomic_num = atom_codes[:, _ATOM_CODE["atomic_num"]].long() + 1  # codes start at Z = 1
    element_slot = torch.where(atomic_num <= 100, atomic_num - 1, 100)
    hybrid = atom_codes[:, _ATOM_CODE["hybridization"]].long()
    hybrid_slot = torch.as_tensor(_HYBRIDIZATION_SLOT, device=hybrid.device)[hybrid]
    return torch.cat([
        F.one_hot(element_slot, 101).to(atom_scalars.dtype),
        F.one_hot(hybrid_slot, 6).to(atom_scalars.dtype),
        atom_scalars,
    ], dim=1)


def compt_bond_features(bond_codes: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """The reference's 13 bond columns from molsam's bond codes: uint8 [E, F_bond] -> [E, 13]
    (type one-hot 4, stereo one-hot 6, conjugated, aromatic, in ring). A bond is aromatic
    exactly when its type is AROMATIC in a sanitized RDKit molecule."""
    device = bond_codes.device
    kind = bond_codes[:, _BOND_CODE["bond_type"]].long()
    stereo = bond_codes[:, _BOND_CODE["stereo"]].long()
    return torch.cat([
        F.one_hot(torch.as_tensor(_BOND_TYPE_SLOT, device=device)[kind], 4),
        F.one_hot(torch.as_tensor(_STEREO_SLOT, device=device)[stereo], 6),
        (bond_codes[:, _BOND_CODE["conjugated"]] == 1).long().unsqueeze(1),
        (kind == _AROMATIC_BOND_CODE).long().unsqueeze(1),
        (bond_codes[:, _BOND_CODE["in_ring"]] == 1).long().unsqueeze(1),
    ], dim=1).to(dtype)


class CoMPTLayerNorm(nn.Module):
    """The reference's LayerNorm: a * (x - mean) / (std + eps) + b with the unbiased std
    (torch.nn.LayerNorm divides by sqrt(biased var + eps): not the same function)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(-1, keepdim=True)
        return self.weight * (x - mean) / (x.std(-1, keepdim=True) + self.eps) + self.bias


class ScaleNorm(nn.Module):
    """ScaleNorm (Nguyen & Salazar, "Transformers without Tears", 2019): g * x / ||x||, g a
    learned scalar starting at sqrt(dim), ||x|| clamped below at eps."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(math.sqrt(dim)))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return x * (self.scale / torch.norm(x, dim=-1, keepdim=True).clamp(min=self.eps))


def make_norm(kind: str, dim: int) -> nn.Module:
    return CoMPTLayerNorm(dim) if kind == "layer" else ScaleNorm(dim)


@dataclass
class BondInputs:
    """A batch's bonds for the attention keys: features float [E, 13], the bond embedding's
    weight * sqrt(d) [d, 13] and its bias * sqrt(d) [d] (the no-bond embedding), and, when
    the embedding's dropout is on, the embedded bonds themselves [E, d] (else None)."""

    features: Tensor
    weight: Tensor
    no_bond: Tensor
    embedding: Tensor | None = None


class CoMPTAttention(nn.Module):
    """One layer's multi-head attention with bond keys and the distance kernel (module
    docstring, cheap exact form). Shapes: y [N, d] atom rows -> [N, d]."""

    def __init__(self, hidden: int, heads: int, kernel: str, dropout: float) -> None:
        super().__init__()
        self.heads, self.kernel = heads, kernel
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)
        self.attenuation = nn.Parameter(torch.tensor(0.1))
        self.dropout = nn.Dropout(dropout)

    def distance_weights(self, distances: Tensor, valid: Tensor) -> Tensor:
        """K(lambda * D): float [B, L, L], zero on padded keys (D masked to +inf there)."""
        scaled = (self.attenuation * distances).masked_fill(~valid.unsqueeze(1), math.inf)
        if self.kernel == "exp":
            return torch.exp(-scaled)
        return torch.softmax(-scaled, dim=-1)

    def bond_keys(self, bonds: "BondInputs") -> tuple[Tensor, Tensor]:
        """(keys of the bonds [E, d], the shared no-bond key [d])."""
        if bonds.embedding is not None:  # explicit: e_ij as embedded (dropout on)
            return self.key(bonds.embedding), self.key(bonds.no_bond)
        # factored (module docstring): W_k W_e sqrt(d) is d x 13
        weight = self.key.weight @ bonds.weight
        no_bond = self.key.weight @ bonds.no_bond + self.key.bias
        return torch.addmm(no_bond, bonds.features, weight.t()), no_bond

    def forward(
        self, y: Tensor, bonds: "BondInputs", batch: GraphBatch,
        flat: Tensor, valid: Tensor, kernel_weights: Tensor,
    ) -> Tensor:
        b, length = valid.shape
        heads = self.heads
        d_k = y.shape[-1] // heads
        q = self.query(y).view(-1, heads, d_k)                       # [N, h, d_k]
        v = to_dense(self.value(y), flat, b, length)                 # [B, L, d]
        key_bond, key_no_bond = self.bond_keys(bonds)
        key_no_bond = key_no_bond.view(heads, d_k)                   # [h, d_k]
        key_bond = key_bond.view(-1, heads, d_k)                     # [E, h, d_k]
        source, target = batch.edge_index
        scale = 1.0 / math.sqrt(d_k)
        no_bond_scores = (q * key_no_bond).sum(-1) * scale           # [N, h]
        bond_scores = (q.index_select(0, source) * key_bond).sum(-1) * scale  # [E, h]
        # Scores [B, L, L, h]: the no-bond score of query i everywhere in row i, then the bond
        # scores written over their (i, j) pairs.
        rows = to_dense(no_bond_scores, flat, b, length)             # [B, L, h]
        scores = rows.unsqueeze(2).expand(b, length, length, heads).reshape(-1, heads)
        pair = flat.index_select(0, source) * length + batch.node_slot.index_select(0, target)
        scores = scores.index_copy(0, pair, bond_scores).view(b, length, length, heads)
        scores = scores.permute(0, 3, 1, 2)                          # [B, h, L, L]
        scores = scores.masked_fill(~valid.view(b, 1, 1, length), -math.inf)
        attention = torch.softmax(scores, dim=-1)
        # out + in - diag, with in == out (symmetric bond features): 2 A - diag(A).
        message = 2 * attention - torch.diag_embed(attention.diagonal(dim1=-2, dim2=-1))
        message = self.dropout(message * kernel_weights.unsqueeze(1))
        values = v.view(b, length, heads, d_k).transpose(1, 2)       # [B, h, L, d_k]
        mixed = (message @ values).transpose(1, 2).reshape(b * length, heads * d_k)
        return F.mish(self.out(mixed.index_select(0, flat)))


class CoMPTLayer(nn.Module):
    """y = norm(x); f = y + norm(attention(y)); x_next = y + f + norm(mish(W_1 f)).
    One norm module per layer, used three times (as in the reference)."""

    def __init__(self, hidden: int, heads: int, kernel: str, norm: str, dropout: float) -> None:
        super().__init__()
        self.attention = CoMPTAttention(hidden, heads, kernel, dropout)
        self.feed_forward = nn.Linear(hidden, hidden)
        self.norm = make_norm(norm, hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, bonds: "BondInputs", batch: GraphBatch,
                flat: Tensor, valid: Tensor) -> Tensor:
        y = self.dropout(self.norm(x))
        weights = self.attention.distance_weights(batch.distances, valid)
        attended = self.attention(y, bonds, batch, flat, valid, weights)
        f = y + self.dropout(self.norm(attended))
        return y + f + self.dropout(self.norm(self.dropout(F.mish(self.feed_forward(f)))))


class GRUReadout(nn.Module):
    """The reference's "gru" aggregation over each molecule's real atoms (module docstring):
    x [N, d] -> [B, d]. Two one-directional GRUs hold the bidirectional GRU's weights, so the
    backward pass can start at each molecule's own last atom without packing (which would need
    the lengths on the host)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.forward_gru = nn.GRU(hidden, hidden, batch_first=True)
        self.backward_gru = nn.GRU(hidden, hidden, batch_first=True)
        self.project = nn.Linear(2 * hidden, hidden)
        self.bias = nn.Parameter(torch.empty(hidden))

    def reset_bias(self) -> None:
        bound = 1.0 / math.sqrt(self.bias.numel())
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor, batch: GraphBatch, flat: Tensor) -> Tensor:
        b, length = batch.num_graphs, batch.max_atoms
        counts = torch.zeros(b, dtype=x.dtype, device=x.device).index_add_(
            0, batch.node_graph, torch.ones_like(x[:, 0]))
        start = F.mish(x + self.bias)
        initial = torch.full((b, x.shape[1]), -math.inf, dtype=x.dtype, device=x.device)
        rows = batch.node_graph.unsqueeze(1).expand_as(start)
        initial = initial.scatter_reduce(0, rows, start, "amax").unsqueeze(0)  # [1, B, d]
        ahead, _ = self.forward_gru(to_dense(x, flat, b, length), initial)
        # Reversed within each molecule: atom slot s of a molecule of n atoms goes to n - 1 - s.
        size = counts.long().index_select(0, batch.node_graph)
        reverse = batch.node_graph * length + (size - 1 - batch.node_slot)
        behind, _ = self.backward_gru(to_dense(x, reverse, b, length), initial)
        both = torch.cat([
            ahead.reshape(b * length, -1).index_select(0, flat),
            behind.reshape(b * length, -1).index_select(0, reverse),
        ], dim=1)
        per_atom = F.mish(self.project(both))
        summed = per_atom.new_zeros(b, per_atom.shape[1]).index_add_(0, batch.node_graph, per_atom)
        return summed / counts.unsqueeze(1)


class CoMPTModel(nn.Module):
    """CoMPT (module docstring) with molsam's batch: forward(GraphBatch) -> float [B, T].

    The batch must come from a store featurized with the "compt" extra (atom_scalars and
    distances set; molsam.chem.compt_inputs).

    Args:
        num_tasks: T outputs per molecule.
        hidden: d (256 in every paper setting); divisible by `heads`.
        layers: encoder layers; heads: attention heads.
        dropout: every dropout of the reference (0 in all of its settings).
        kernel: distance kernel, "exp" or "softmax".
        norm: "layer" (the reference's LayerNorm) or "scale" (ScaleNorm).
        pooling: "gru" (the reference's readout) or "mean".
        head_layers: generator layers (the reference's n_generator_layers).
        mol_features, feature_extras: molecule-level features joined before the generator
            (as GPSModel's; not in the reference).
    """

    name = "compt"
    #: CoMPT reads no random-walk encodings; its featurizer adds the "compt" extra.
    pe_steps = 0

    def __init__(
        self,
        num_tasks: int,
        *,
        hidden: int = 256,
        layers: int = 4,
        heads: int = 4,
        dropout: float = 0.0,
        kernel: str = "exp",
        norm: str = "layer",
        pooling: str = "gru",
        head_layers: int = 2,
        mol_features: int = 0,
        feature_extras: tuple[str, ...] | list[str] = (),
    ) -> None:
        super().__init__()
        for key, value in (("num_tasks", num_tasks), ("hidden", hidden), ("layers", layers),
                           ("heads", heads), ("head_layers", head_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key}: expected an int >= 1, got {value!r}")
        if hidden % heads:
            raise ValueError(f"hidden={hidden} is not divisible by heads={heads}")
        for key, value, choices in (("kernel", kernel, KERNELS), ("norm", norm, NORMS),
                                    ("pooling", pooling, COMPT_POOLINGS)):
            if value not in choices:
                raise ValueError(f"{key}: {value!r} is not one of {', '.join(choices)}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
                or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: expected a number in [0, 1), got {dropout!r}")
        self.num_tasks, self.hidden, self.num_layers, self.heads = num_tasks, hidden, layers, heads
        self.dropout_p, self.kernel, self.norm_kind = float(dropout), kernel, norm
        self.pooling, self.head_layers = pooling, head_layers
        self.mol_features, self.feature_extras = int(mol_features), tuple(feature_extras)
        if self.feature_extras and not self.mol_features:
            raise ValueError("feature_extras without mol_features: their columns must be counted")
        self.feature_scaler = FeatureScaler(self.mol_features) if self.mol_features else None
        width = hidden + self.mol_features

        self.atom_embedding = nn.Linear(ATOM_COLUMNS, hidden)
        self.bond_embedding = nn.Linear(BOND_COLUMNS, hidden)
        self.position = nn.Embedding(MAX_POSITIONS + 1, hidden, padding_idx=0)
        self.dropout = nn.Dropout(self.dropout_p)
        self.layers = nn.ModuleList(
            CoMPTLayer(hidden, heads, kernel, norm, self.dropout_p) for _ in range(layers))
        self.final_norm = make_norm(norm, hidden)
        self.readout = GRUReadout(hidden) if pooling == "gru" else None
        blocks: list[nn.Module] = []
        for i in range(head_layers - 1):
            blocks += [nn.Linear(width if i == 0 else hidden, hidden), nn.Mish(),
                       make_norm(norm, hidden), nn.Dropout(self.dropout_p)]
        self.head = nn.Sequential(*blocks, nn.Linear(hidden if blocks else width, num_tasks))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default init, then Xavier uniform on every parameter with more than one
        dimension, as the reference (the position table's padding row included)."""
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        if self.readout is not None:
            self.readout.reset_bias()
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def config(self) -> dict:
        """Constructor arguments plus `name`: molsam.models.build_model(config) rebuilds it."""
        return {
            "name": self.name, "num_tasks": self.num_tasks, "hidden": self.hidden,
            "layers": self.num_layers, "heads": self.heads, "dropout": self.dropout_p,
            "kernel": self.kernel, "norm": self.norm_kind, "pooling": self.pooling,
            "head_layers": self.head_layers,
            **({"mol_features": self.mol_features, "feature_extras": list(self.feature_extras)}
               if self.mol_features else {}),
        }

    @property
    def featurizer_extras(self) -> tuple[str, ...]:
        """The "compt" extra (its atom scalars and distances) and any molecule-level ones."""
        return ("compt", *self.feature_extras)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"

    def embed(self, batch: GraphBatch) -> Tensor:
        """Atom representations after the final norm: [N, d]."""
        if batch.atom_scalars is None or batch.distances is None:
            raise ValueError("CoMPT needs a store featurized with the 'compt' extra "
                             "(atom scalars and distance matrices); featurize for model.name compt")
        flat, valid = dense_index(batch)
        root_d = math.sqrt(self.hidden)
        atoms = compt_atom_features(batch.atom_codes, batch.atom_scalars.to(self.atom_embedding.weight.dtype))
        positions = (batch.node_slot + 1).clamp(max=MAX_POSITIONS)
        x = self.dropout(self.atom_embedding(atoms)) * root_d + self.dropout(self.position(positions))
        bond_features = compt_bond_features(batch.bond_codes, x.dtype)
        if self.training and self.dropout_p > 0:  # dropout on e_ij: explicit embeddings
            bonds = BondInputs(
                bond_features, self.bond_embedding.weight * root_d,
                self.dropout(self.bond_embedding.bias) * root_d,
                embedding=self.dropout(self.bond_embedding(bond_features)) * root_d)
        else:
            bonds = BondInputs(bond_features, self.bond_embedding.weight * root_d,
                               self.bond_embedding.bias * root_d)
        for layer in self.layers:
            x = layer(x, bonds, batch, flat, valid)
        return self.final_norm(x)

    def pool(self, x: Tensor, batch: GraphBatch) -> Tensor:
        """Molecule representations [B, d] from atom rows [N, d]."""
        if self.readout is not None:
            return self.readout(x, batch, dense_index(batch)[0])
        counts = torch.zeros(batch.num_graphs, dtype=x.dtype, device=x.device).index_add_(
            0, batch.node_graph, torch.ones_like(x[:, 0]))
        summed = x.new_zeros(batch.num_graphs, x.shape[1]).index_add_(0, batch.node_graph, x)
        return summed / counts.unsqueeze(1)

    def forward(self, batch: GraphBatch) -> Tensor:
        pooled = self.pool(self.embed(batch), batch)
        return self.head(joined_features(self.feature_scaler, pooled, batch))
