"""CoMPT (molsam.models.compt) against a plain dense transcription of the reference formulas.

The transcription below follows the CoMPT authors' code (transformer_graph.py, dataset_graph.py)
step by step, with dense per-pair keys, both attention directions and RDKit features computed
the reference's way; it differs only where molsam's docstring says molsam departs (the GRU over
real atoms, the discarded edge layer). It is run one molecule at a time (no padding), in float64.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from rdkit import Chem
from rdkit.Chem import AllChem

from molsam.data.store import GraphStore
from molsam.data.splits import make_split
from molsam.models import CoMPTModel, build_model

SMILES = [
    "CC(=O)Nc1ccc(O)cc1",
    "C/C=C/C(=O)[O-].[Na+]",
    "CN1CCC[C@H]1c1cccnc1",
    "O=C(O)c1ccccc1OC(C)=O",
    "C#CCN(C)Cc1ccccc1",
    "FC(F)(F)c1ccc(Cl)cc1S(=O)(=O)N",
    "[NH3+]CCc1c[nH]c2ccccc12",
    "C",
]


def _one_hot(value, choices, unknown=True):
    vec = np.zeros(len(choices) + 1 if unknown else len(choices))
    vec[choices.index(value) if value in choices else -1] = 1
    return vec


def reference_inputs(smiles: str):
    """Atom [n, 116] (115 + index), bond [n, n, 13] and distance [n, n] arrays, as the
    reference's dataset_graph.py computes them."""
    mol = Chem.MolFromSmiles(smiles)
    AllChem.ComputeGasteigerCharges(mol)
    H = Chem.rdchem.HybridizationType
    B = Chem.rdchem.BondType
    S = Chem.rdchem.BondStereo

    def finite(x):
        return 0 if math.isnan(x) or math.isinf(x) else x

    atoms = []
    for atom in mol.GetAtoms():
        atoms.append(np.concatenate([
            _one_hot(atom.GetAtomicNum(), list(range(1, 101))),
            _one_hot(atom.GetHybridization(), [H.SP, H.SP2, H.SP3, H.SP3D, H.SP3D2]),
            [atom.GetTotalNumHs(includeNeighbors=True) / 8, atom.GetDegree() / 4,
             atom.GetFormalCharge() / 8, atom.GetTotalValence() / 8,
             finite(atom.GetDoubleProp("_GasteigerCharge")),
             finite(atom.GetDoubleProp("_GasteigerHCharge")),
             int(atom.GetIsAromatic()), int(atom.IsInRing())],
            [atom.GetIdx() + 1],
        ]))
    n = mol.GetNumAtoms()
    bonds = np.zeros((n, n, 13))
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        bonds[i, j] = bonds[j, i] = np.concatenate([
            _one_hot(bond.GetBondType(), [B.SINGLE, B.DOUBLE, B.TRIPLE, B.AROMATIC], False),
            _one_hot(bond.GetStereo(), [S.STEREOANY, S.STEREOCIS, S.STEREOE, S.STEREONONE,
                                        S.STEREOTRANS, S.STEREOZ], False),
            [int(bond.GetIsConjugated()), int(bond.GetIsAromatic()), int(bond.IsInRing())],
        ])
    return np.array(atoms), bonds, Chem.GetDistanceMatrix(mol)


def mish(x):
    return x * torch.tanh(F.softplus(x))


def norm(module, x):
    if hasattr(module, "eps") and hasattr(module, "weight"):  # the reference's LayerNorm
        return module.weight * (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True)
                                                                   + 1e-6) + module.bias
    return module.scale * x / torch.norm(x, dim=-1, keepdim=True).clamp(min=1e-5)


def gru_steps(gru: torch.nn.GRU, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """torch's GRU equations written out, with `gru`'s weights: x [n, d], h [d] -> [n, d]."""
    w_ir, w_iz, w_in = gru.weight_ih_l0.chunk(3)
    w_hr, w_hz, w_hn = gru.weight_hh_l0.chunk(3)
    b_ir, b_iz, b_in = gru.bias_ih_l0.chunk(3)
    b_hr, b_hz, b_hn = gru.bias_hh_l0.chunk(3)
    out = []
    for x_t in x:
        r = torch.sigmoid(w_ir @ x_t + b_ir + w_hr @ h + b_hr)
        z = torch.sigmoid(w_iz @ x_t + b_iz + w_hz @ h + b_hz)
        n = torch.tanh(w_in @ x_t + b_in + r * (w_hn @ h + b_hn))
        h = (1 - z) * n + z * h
        out.append(h)
    return torch.stack(out)


def reference_forward(model: CoMPTModel, smiles: str) -> torch.Tensor:
    """One molecule through the reference's formulas with `model`'s weights: [tasks]."""
    atoms, bonds, dist = (torch.tensor(a, dtype=torch.float64) for a in reference_inputs(smiles))
    d, h = model.hidden, model.heads
    dk = d // h
    x = model.atom_embedding(atoms[:, :-1]) * math.sqrt(d) + model.position(atoms[:, -1].long())
    edge = model.bond_embedding(bonds) * math.sqrt(d)  # [n, n, d], bias alone where no bond
    n = x.shape[0]
    for layer in model.layers:
        att = layer.attention
        y = norm(layer.norm, x)
        q = att.query(y).view(n, h, dk).transpose(0, 1)                 # [h, n, dk]
        key = att.key(edge).view(n, n, h, dk).permute(2, 0, 1, 3)       # [h, n, n, dk]
        v = att.value(y).view(n, h, dk).transpose(0, 1)
        out_scores = torch.einsum("hmd,hmnd->hmn", q, key) / math.sqrt(dk)
        in_scores = torch.einsum("hnd,hmnd->hnm", q, key) / math.sqrt(dk)
        out_attn, in_attn = out_scores.softmax(-1), in_scores.softmax(-1)
        diag = torch.diag_embed(torch.diagonal(out_attn, dim1=-2, dim2=-1))
        message = out_attn + in_attn - diag
        scaled = att.attenuation * dist
        kernel = torch.exp(-scaled) if att.kernel == "exp" else torch.softmax(-scaled, -1)
        message = message * kernel
        hidden = torch.einsum("hmn,hnd->hmd", message, v).transpose(0, 1).reshape(n, d)
        a = mish(att.out(hidden))
        first = y + norm(layer.norm, a)
        second = mish(layer.feed_forward(first))
        x = y + first + norm(layer.norm, second)
    x = norm(model.final_norm, x)
    if model.pooling == "gru":
        readout = model.readout
        h0 = mish(x + readout.bias).max(dim=0).values
        ahead = gru_steps(readout.forward_gru, x, h0)
        behind = gru_steps(readout.backward_gru, x.flip(0), h0).flip(0)
        message = torch.cat([ahead, behind], dim=1)  # the bidirectional GRU's output
        pooled = mish(readout.project(message)).mean(dim=0)
    else:
        pooled = x.mean(dim=0)
    return model.head(pooled)


def compt_store(smiles, **kwargs) -> GraphStore:
    targets = np.arange(len(smiles), dtype=np.float64).reshape(-1, 1)
    return GraphStore.from_smiles(smiles, targets, target_names=["y"], task="regression",
                                  rwse_steps=0, workers=1, extras=("compt",), **kwargs)


@pytest.mark.parametrize("kernel,norm_kind,pooling,head_layers", [
    ("exp", "layer", "gru", 2), ("softmax", "scale", "gru", 4), ("exp", "scale", "mean", 1),
])
def test_model_equals_dense_reference_forward_and_gradients(kernel, norm_kind, pooling,
                                                            head_layers):
    torch.manual_seed(0)
    model = CoMPTModel(3, hidden=32, layers=2, heads=4, kernel=kernel, norm=norm_kind,
                       pooling=pooling, head_layers=head_layers).double()
    with torch.no_grad():  # lambda away from its start, so the kernel is really tested
        for i, layer in enumerate(model.layers):
            layer.attention.attenuation.fill_(0.3 + 0.2 * i)
    batch = compt_store(SMILES).batch_source().gather(np.arange(len(SMILES)))
    ours = model(batch)
    theirs = torch.stack([reference_forward(model, s) for s in SMILES])
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)

    weights = torch.randn_like(ours)
    params = [p for p in model.parameters()]
    ours_grads = torch.autograd.grad((ours * weights).sum(), params, allow_unused=True)
    theirs_grads = torch.autograd.grad((theirs * weights).sum(), params, allow_unused=True)
    for (name, _), a, b in zip(model.named_parameters(), ours_grads, theirs_grads):
        if a is None and b is None:
            continue
        a = torch.zeros_like(b) if a is None else a
        b = torch.zeros_like(a) if b is None else b
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6, msg=name)


def test_padding_and_batch_composition_do_not_change_a_molecule():
    torch.manual_seed(1)
    model = CoMPTModel(2, hidden=16, layers=2, heads=2).double().eval()
    source = compt_store(SMILES).batch_source()
    together = model(source.gather(np.arange(len(SMILES))))
    for i in range(len(SMILES)):
        alone = model(source.gather(np.array([i])))
        torch.testing.assert_close(alone[0], together[i], rtol=1e-9, atol=1e-9)
    reordered = model(source.gather(np.array([7, 2, 5])))
    torch.testing.assert_close(reordered, together[[7, 2, 5]], rtol=1e-9, atol=1e-9)


def test_gps_and_compt_stores_give_the_same_splits():
    smiles = [s for s in SMILES] + ["c1ccncc1", "CCN(CC)CC", "OC1CCCCC1", "c1ccc2ccccc2c1"] * 3
    gps = GraphStore.from_smiles(smiles, np.zeros((len(smiles), 1)), target_names=["y"],
                                 task="regression", workers=1)
    compt = compt_store(smiles)
    assert gps.smiles == compt.smiles
    for method in ("scaffold", "scaffold_balanced", "random"):
        a = make_split(method, gps.smiles, (0.8, 0.1, 0.1), 3, scaffold_ids=gps.scaffold_ids)
        b = make_split(method, compt.smiles, (0.8, 0.1, 0.1), 3, scaffold_ids=compt.scaffold_ids)
        for part in ("train", "val", "test"):
            np.testing.assert_array_equal(getattr(a, part), getattr(b, part))


def test_store_round_trip_keeps_compt_inputs(tmp_path):
    store = compt_store(SMILES)
    store.save(tmp_path / "store.pt")
    loaded = GraphStore.load(tmp_path / "store.pt")
    np.testing.assert_array_equal(loaded.atom_scalars, store.atom_scalars)
    np.testing.assert_array_equal(loaded.distances, store.distances)
    assert loaded.spec["extras"] == ["compt"]


def test_disconnected_fragments_get_no_distance_weight():
    batch = compt_store(["CCO.[Na+]"]).batch_source().gather(np.array([0]))
    assert batch.distances[0, 0, 3].item() == 1e8
    model = CoMPTModel(1, hidden=8, layers=1, heads=2)
    weights = model.layers[0].attention.distance_weights(
        batch.distances, torch.ones(1, 4, dtype=torch.bool))
    assert weights[0, 0, 3].item() == 0.0 and weights[0, 0, 1].item() > 0


def test_build_model_round_trips_config():
    model = CoMPTModel(2, hidden=16, layers=1, heads=2, kernel="softmax", norm="scale")
    again = build_model(model.config())
    assert isinstance(again, CoMPTModel) and again.config() == model.config()


def test_batch_without_compt_inputs_is_refused_with_a_message():
    store = GraphStore.from_smiles(["CCO"], np.zeros((1, 1)), target_names=["y"], workers=1)
    with pytest.raises(ValueError, match="compt"):
        CoMPTModel(1, hidden=8, layers=1, heads=2)(store.batch_source().gather(np.array([0])))


def test_factored_bond_keys_equal_the_explicit_embedding():
    """The explicit path (taken when the edge embedding's dropout is on) and the factored one
    give the same outputs when that dropout happens to drop nothing."""
    torch.manual_seed(3)
    model = CoMPTModel(2, hidden=16, layers=2, heads=2).double().train()
    batch = compt_store(SMILES).batch_source().gather(np.arange(len(SMILES)))
    factored = model(batch)
    model.dropout_p = 0.5  # takes the explicit path; the Dropout modules themselves keep p = 0
    explicit = model(batch)
    torch.testing.assert_close(explicit, factored, rtol=1e-10, atol=1e-10)
