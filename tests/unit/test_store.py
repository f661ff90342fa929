"""GraphStore: CSR layout, batching, save/load, caching, and the real bad-input files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from molsam.chem.features import mol_to_graph
from molsam.data.pipeline import DataSpec, load_store
from molsam.data.store import GraphStore
from molsam.errors import InputError
from rdkit import Chem
from tests.conftest import SHARED_DATA, write_csv

SMILES = ["CCO", "not a smiles", "c1ccccc1O", "", "[Na+].[Cl-]", "CC(=O)Nc1ccc(O)cc1"]


def test_invalid_rows_are_skipped_not_shifted():
    labels = np.arange(len(SMILES), dtype=np.float32)[:, None]
    store = GraphStore.from_smiles(SMILES, labels, target_names=["y"], workers=1)
    assert store.smiles == ["CCO", "c1ccccc1O", "[Na+].[Cl-]", "CC(=O)Nc1ccc(O)cc1"]
    assert store.rows.tolist() == [0, 2, 4, 5]
    assert store.y[:, 0].tolist() == [0.0, 2.0, 4.0, 5.0]  # labels follow their molecule
    assert [(r.row, r.smiles) for r in store.invalid] == [(1, "not a smiles"), (3, "")]


def test_parallel_equals_serial():
    smiles = [s for s in SMILES if s] * 300
    serial = GraphStore.from_smiles(smiles, workers=1)
    parallel = GraphStore.from_smiles(smiles, workers=2)
    for name in ("atom_counts", "bond_counts", "atom_codes", "rwse", "bond_atoms", "bond_codes"):
        assert np.array_equal(getattr(serial, name), getattr(parallel, name)), name
    assert serial.rows.tolist() == parallel.rows.tolist()


def test_batch_gather_reassembles_molecules():
    store = GraphStore.from_smiles(SMILES, workers=1)
    batch = store.batch_source().gather(np.array([3, 0, 1]))
    expected = [mol_to_graph(Chem.MolFromSmiles(store.smiles[i])) for i in (3, 0, 1)]
    assert batch.num_graphs == 3
    assert batch.max_atoms == max(len(g.atom_codes) for g in expected)
    assert torch.equal(batch.atom_codes, torch.from_numpy(np.concatenate([g.atom_codes for g in expected])))
    sizes = [len(g.atom_codes) for g in expected]
    assert batch.node_graph.tolist() == sum(([i] * n for i, n in enumerate(sizes)), [])
    assert batch.node_slot.tolist() == sum((list(range(n)) for n in sizes), [])
    # edges: both directions, shifted by each molecule's first atom in the batch
    offsets = np.cumsum([0] + sizes[:-1])
    bonds = np.concatenate([g.bond_atoms + o for g, o in zip(expected, offsets)])
    m = len(bonds)
    assert batch.edge_index.shape == (2, 2 * m)
    assert batch.edge_index[:, :m].t().tolist() == bonds.tolist()
    assert batch.edge_index[:, m:].t().tolist() == bonds[:, ::-1].tolist()


def test_save_load_round_trip(tmp_path):
    store = GraphStore.from_smiles(SMILES, np.ones((6, 2), np.float32), target_names=["a", "b"], workers=1)
    loaded = GraphStore.load(store.save(tmp_path / "s.pt"))
    assert loaded.smiles == store.smiles and loaded.target_names == ["a", "b"]
    assert np.array_equal(loaded.rwse, store.rwse) and loaded.rwse.dtype == np.float16
    assert loaded.invalid == store.invalid
    assert list(tmp_path.iterdir()) == [tmp_path / "s.pt"]  # no temporary file left behind


def test_load_refuses_foreign_files(tmp_path):
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not a molsam store"):
        GraphStore.load(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    with pytest.raises(InputError, match="not a readable molsam store"):
        GraphStore.load(tmp_path / "junk.pt")


def test_raw_bbbp_reports_exactly_its_eleven_invalid_smiles(raw_data_dir):
    store = load_store(DataSpec("bbbp"), workers=2)
    assert len(store) == 2039
    assert len(store.invalid) == 11
    assert all("valence" in r.reason or "kekulize" in r.reason for r in store.invalid)
    assert store.target_names == ["p_np"] and store.task == "classification"
    assert store.ids is not None and len(store.ids) == 2039


def test_tox21_keeps_missing_labels_as_nan():
    store = load_store(DataSpec(str(SHARED_DATA / "tox21.csv")), workers=2)
    assert store.num_tasks == 12
    assert len(store.invalid) == 8  # the [AlH3] SMILES current RDKit rejects
    assert np.isnan(store.y).sum() > 15_000


def test_cache_hit_returns_the_same_store(tmp_path, isolated_cache):
    path = write_csv(tmp_path / "c.csv", "smiles,y\nCCO,1\nCCN,0\n")
    first = load_store(DataSpec(str(path)), workers=1)
    cached = list((isolated_cache / "stores").glob("c-*.pt"))
    assert len(cached) == 1
    again = load_store(DataSpec(str(path)), workers=1)
    assert again.smiles == first.smiles and again.source_hash == first.source_hash
    write_csv(path, "smiles,y\nCCO,1\nCCC,0\n")  # changed content: a new entry
    assert load_store(DataSpec(str(path)), workers=1).smiles == ["CCO", "CCC"]


def test_no_valid_molecule_and_strict(tmp_path):
    path = write_csv(tmp_path / "bad.csv", "smiles,y\nxx,1\nyy,0\n")
    with pytest.raises(InputError, match="not one valid molecule"):
        load_store(DataSpec(str(path)), workers=1)
    mixed = write_csv(tmp_path / "mixed.csv", "smiles,y\nCCO,1\nC1CC,0\n")
    with pytest.raises(InputError, match=r"mixed.csv: line 3: invalid SMILES 'C1CC'"):
        load_store(DataSpec(str(mixed)), workers=1, strict=True)


def test_raw_esol_uses_registry_columns(raw_data_dir):
    store = load_store(DataSpec("esol"), workers=1)
    assert store.target_names == ["measured log solubility in mols per litre"]
    assert store.task == "regression" and len(store) == 1128
    assert not any(s != s.strip() for s in store.smiles)  # trailing whitespace stripped
    assert not math.isnan(float(store.y.mean()))


def test_builtin_dataset_is_offline():
    store = load_store(DataSpec("chembl2321810"), workers=2)
    assert len(store) == 1017 and store.task == "regression"
    assert store.ids[0].startswith("CHEMBL")


def _reference_distinct_rows(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The previous implementation's output (np.unique's stable sort on the row hashes): the
    store file's RWSE table and index must stay byte for byte what they were."""
    from molsam.data.store import _row_digest

    raw = np.ascontiguousarray(values).view(np.uint8).reshape(len(values), -1)
    _, first, index = np.unique(_row_digest(raw), return_index=True, return_inverse=True)
    return values[first], index.astype(np.int32)


def test_distinct_rows_rebuild_every_row_bit_for_bit(monkeypatch):
    from molsam.data import store as store_module

    rng = np.random.default_rng(0)
    pool = rng.random((50, 16)).astype(np.float16)
    pool[1] = -pool[0]  # differ in sign bits only
    pool[2] = 0.0
    pool[3] = -0.0  # equal to 0.0 as floats, not as bits: must stay a row of its own
    values = pool[rng.integers(0, len(pool), 5000)]
    table, index = store_module.distinct_rows(values)
    reference = _reference_distinct_rows(values)
    assert np.array_equal(table.view(np.uint16), reference[0].view(np.uint16))
    assert index.dtype == np.int32 and np.array_equal(index, reference[1])
    assert np.array_equal(table[index].view(np.uint16), values.view(np.uint16))
    assert len(np.unique(table.view(np.uint16), axis=0)) == len(table)
    # Should every hash collide, the exact check catches it and the rows still come back.
    monkeypatch.setattr(store_module, "_row_digest", lambda raw: np.zeros(len(raw), np.uint64))
    table, index = store_module.distinct_rows(values)
    assert np.array_equal(table[index].view(np.uint16), values.view(np.uint16))
    assert len(table) == len(np.unique(values.view(np.uint16), axis=0))
