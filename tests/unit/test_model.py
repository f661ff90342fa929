"""GPSModel: shapes, invariances, padding isolation, gradients, autocast, config, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rdkit import Chem
from torch.utils._python_dispatch import TorchDispatchMode

from molsam.chem.features import mol_to_graph, parse_smiles
from molsam.data.batching import BatchSource, GraphBatch
from molsam.models import POOLINGS, GPSModel

SMILES = [
    "CCO",
    "c1ccccc1O",
    "CC(=O)Nc1ccc(O)cc1",
    "[Na+].[Cl-]",
    "C",
    "O=C(O)C[C@H](N)C(=O)O",
    "CN1C=NC2=C1C(=O)N(C(=O)N2C)C",
]


def make_batch(mols: list[Chem.Mol], num_tasks: int = 2, pe_steps: int = 16) -> GraphBatch:
    graphs = [mol_to_graph(m, pe_steps) for m in mols]
    atom_counts = np.array([len(g.atom_codes) for g in graphs], dtype=np.int64)
    bond_counts = np.array([len(g.bond_codes) for g in graphs], dtype=np.int64)
    source = BatchSource(
        atom_ptr=torch.from_numpy(np.concatenate([[0], np.cumsum(atom_counts)])),
        bond_ptr=torch.from_numpy(np.concatenate([[0], np.cumsum(bond_counts)])),
        atom_codes=torch.from_numpy(np.concatenate([g.atom_codes for g in graphs])),
        rwse=torch.from_numpy(np.concatenate([g.rwse for g in graphs]).astype(np.float16)),
        bond_atoms=torch.from_numpy(np.concatenate([g.bond_atoms for g in graphs])),
        bond_codes=torch.from_numpy(np.concatenate([g.bond_codes for g in graphs])),
        y=torch.zeros(len(graphs), num_tasks),
        atom_counts_host=atom_counts,
        bond_counts_host=bond_counts,
    )
    return source.gather(np.arange(len(graphs)))


def mols(smiles: list[str]) -> list[Chem.Mol]:
    out = []
    for s in smiles:
        mol, reason = parse_smiles(s)
        assert mol is not None, reason
        out.append(mol)
    return out


def seeded_model(**kwargs) -> GPSModel:
    torch.manual_seed(0)
    return GPSModel(**{"num_tasks": 3, **kwargs}).eval()


@pytest.mark.parametrize("pooling", POOLINGS)
def test_output_shape(pooling: str) -> None:
    model = seeded_model(pooling=pooling)
    out = model(make_batch(mols(SMILES)))
    assert out.shape == (len(SMILES), 3)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("pooling", POOLINGS)
def test_atom_renumbering_does_not_change_prediction(pooling: str) -> None:
    model = seeded_model(pooling=pooling)
    mol = mols(["CC(=O)Nc1ccc(O)cc1"])[0]
    order = list(np.random.default_rng(0).permutation(mol.GetNumAtoms()))
    assert order != list(range(mol.GetNumAtoms()))
    renumbered = Chem.RenumberAtoms(mol, [int(i) for i in order])
    with torch.no_grad():
        a = model(make_batch([mol]))
        b = model(make_batch([renumbered]))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_prediction_alone_equals_prediction_in_batch(pooling: str) -> None:
    # The small molecules are padded up to caffeine's size inside the batch: padding must not leak.
    model = seeded_model(pooling=pooling)
    all_mols = mols(SMILES)
    with torch.no_grad():
        together = model(make_batch(all_mols))
        for i, mol in enumerate(all_mols):
            alone = model(make_batch([mol]))
            torch.testing.assert_close(alone[0], together[i], atol=1e-5, rtol=0)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_every_parameter_gets_a_gradient(pooling: str) -> None:
    model = seeded_model(pooling=pooling).train()
    model(make_batch(mols(SMILES))).square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


def test_bfloat16_autocast_runs_and_backpropagates() -> None:
    model = seeded_model(pooling="attention").train()
    batch = make_batch(mols(SMILES))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
    assert out.dtype == torch.bfloat16
    assert out.shape == (len(SMILES), 3)
    out.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    with torch.no_grad():
        reference = model.eval()(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(batch).float()
    torch.testing.assert_close(low, reference, atol=0.1, rtol=0.1)


def test_dropout_is_active_only_in_training() -> None:
    model = seeded_model(dropout=0.5)
    batch = make_batch(mols(SMILES))
    with torch.no_grad():
        torch.testing.assert_close(model(batch), model(batch))
        model.train()
        assert not torch.equal(model(batch), model(batch))


def test_config_round_trip_rebuilds_identical_model() -> None:
    model = seeded_model(hidden=32, layers=2, heads=2, pooling="sum", pe_steps=8, attn_dropout=0.1)
    config = model.config()
    assert all(isinstance(v, (int, float, str)) for v in config.values())
    rebuilt = GPSModel(**config)
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    assert rebuilt.config() == config
    batch = make_batch(mols(SMILES), pe_steps=8)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(batch), model(batch))
    assert repr(model) == (
        "GPSModel(num_tasks=3, hidden=32, layers=2, heads=2, dropout=0.1, pe_steps=8, "
        "pooling='sum', attn_dropout=0.1)"
    )


def test_reset_parameters_changes_weights() -> None:
    model = seeded_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.reset_parameters()
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any("atom_embedding" in k for k in changed)
    assert any("layers.0.attn.qkv" in k for k in changed)


def test_attention_on_atom_rows_equals_per_molecule_attention() -> None:
    """DenseSelfAttention projects atom rows and attends within each molecule only: the same as
    unpadded multi-head attention run on every molecule alone (padding neither leaks in nor
    changes a row)."""
    from molsam.models.gps import DenseSelfAttention, dense_index

    torch.manual_seed(0)
    batch = make_batch(mols(SMILES))
    hidden, heads = 16, 4
    attn = DenseSelfAttention(hidden, heads).eval()
    torch.nn.init.normal_(attn.qkv.bias)  # nonzero biases: padded slots must still not count
    x = torch.randn(batch.atom_codes.shape[0], hidden)
    flat, valid = dense_index(batch)
    got = attn(x, flat, valid)

    d = hidden // heads
    expected = []
    for g in range(batch.num_graphs):
        rows = x[batch.node_graph == g]  # [n, H]
        q, k, v = attn.qkv(rows).view(len(rows), 3, heads, d).permute(1, 2, 0, 3)  # [heads, n, d]
        weights = torch.softmax(q @ k.transpose(1, 2) / d**0.5, dim=-1)
        expected.append(attn.out((weights @ v).transpose(0, 1).reshape(len(rows), hidden)))
    torch.testing.assert_close(got, torch.cat(expected), rtol=1e-5, atol=1e-5)


class HostSyncDetector(TorchDispatchMode):
    """Records ops that make the host wait for the device on CUDA (.item(), nonzero, boolean-mask
    indexing, repeat_interleave without output_size): seen on CPU too, at the dispatcher."""

    SYNC_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2", "is_nonzero"}

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name in self.SYNC_OPS:
            self.found.append(name)
        if name in {"index", "index_put", "index_put_"}:
            if any(t is not None and t.dtype == torch.bool for t in args[1]):
                self.found.append(f"{name} with a boolean mask")
        if name == "repeat_interleave" and kwargs.get("output_size") is None:
            self.found.append(name)
        return func(*args, **kwargs)


def test_host_sync_detector_sees_item_and_boolean_masks() -> None:
    x = torch.randn(4)
    with HostSyncDetector() as detector:
        x.sum().item()
        x[x > 0]
    assert detector.found == ["_local_scalar_dense", "index with a boolean mask"]


@pytest.mark.parametrize("pooling", POOLINGS)
def test_forward_and_backward_never_sync_the_host(pooling: str) -> None:
    model = seeded_model(pooling=pooling, attn_dropout=0.1).train()
    batch = make_batch(mols(SMILES))
    with HostSyncDetector() as detector:
        model(batch).sum().backward()
    assert detector.found == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pooling": "max"}, "mean, sum, attention"),
        ({"hidden": 30, "heads": 4}, "not divisible by heads=4"),
        ({"layers": 0}, "layers"),
        ({"dropout": 1.5}, "dropout"),
        ({"hidden": True}, "hidden"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GPSModel(2, **kwargs)


def test_checkpoint_with_the_old_gate_bias_still_loads() -> None:
    # Attention pooling once had a gate bias, which a softmax over atoms ignores: weights saved
    # with it must load into today's bias-free gate and give the same outputs.
    model = seeded_model(pooling="attention").eval()
    old_state = dict(model.state_dict())
    old_state["gate.bias"] = torch.tensor([0.7])
    fresh = seeded_model(pooling="attention").eval()
    fresh.load_state_dict(old_state)
    batch = make_batch(mols(SMILES))
    with torch.no_grad():
        torch.testing.assert_close(fresh(batch), model(batch))


def test_parameter_groups_weights_split_every_parameter_once() -> None:
    from molsam.train.loop import parameter_groups

    model = seeded_model(pooling="attention")
    groups = parameter_groups(model, "weights")
    ids = [id(p) for g in groups for _, p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    perturbed = {name for name, _ in groups[0]["params"]}
    assert groups[1]["perturb"] is False
    assert all(n.endswith(".weight") and "norm" not in n and "embedding" not in n for n in perturbed)
    assert "layers.0.attn.qkv.weight" in perturbed and "head.3.weight" in perturbed
    assert parameter_groups(model, "all")[0]["params"] == list(model.named_parameters())


def test_code_embedding_bag_equals_the_sum_of_per_column_lookups():
    """Without gradients (embedding_bag) and with them (gather and sum), the same values;
    gradients, and gradients of gradients (sharpness' Hessian-vector products), exist."""
    from molsam.chem.spec import ATOM_VOCAB_SIZES
    from molsam.models.gps import CodeEmbedding

    torch.manual_seed(0)
    embedding = CodeEmbedding(ATOM_VOCAB_SIZES, 32).double()
    codes = torch.stack([torch.randint(0, s, (300,)) for s in ATOM_VOCAB_SIZES], 1).to(torch.uint8)
    upstream = torch.randn(300, 32, dtype=torch.float64)
    with torch.no_grad():
        bagged = embedding(codes)
    summed = embedding.table(codes.long() + embedding.offsets).sum(dim=1)
    torch.testing.assert_close(bagged, summed, rtol=1e-12, atol=1e-12)
    ours = embedding(codes)
    (g_ours,) = torch.autograd.grad((ours ** 2 * upstream).sum(), embedding.table.weight,
                                    create_graph=True)
    (hessian_vector,) = torch.autograd.grad((g_ours * g_ours).sum(), embedding.table.weight)
    assert torch.isfinite(hessian_vector).all()
