"""`molsam embed` (molsam.embed): the vector the prediction head reads, one row per input row
(invalid SMILES flagged as in predict), for GPS (with and without molecule features) and CoMPT,
as .npy (NaN rows + an errors sidecar), .csv, .tsv and .parquet."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from molsam.cli.main import app
from molsam.data.store import GraphStore
from molsam.embed import embed_smiles, embedding_width
from molsam.models import build_model
from molsam.predict import load_ensemble, predict_smiles
from molsam.train.checkpoint import build_checkpoint, save_checkpoint
from tests.unit.test_predict import SMILES

pytest.importorskip("rdkit")
runner = CliRunner()
BAD = ["C1CC", "not a smiles", ""]
#: Invalid rows between valid ones: rows must never shift.
ROWS = SMILES[:5] + [BAD[0]] + SMILES[5:12] + [BAD[1]] + SMILES[12:16] + [BAD[2]] + ["CCCO"]
CONFIGS = {
    "gps": {"hidden": 16, "layers": 1, "heads": 2, "pe_steps": 4, "pooling": "attention"},
    "gps_features": {"hidden": 16, "layers": 1, "heads": 2, "pe_steps": 4,
                     "mol_features": 2048, "feature_extras": ["morgan_count"]},
    "compt": {"name": "compt", "hidden": 16, "layers": 1, "heads": 2, "pooling": "gru",
              "kernel": "exp", "norm": "layer"},
}


def write_model(path, name="gps", seed=0, tasks=2):
    torch.manual_seed(seed)
    model = build_model({**CONFIGS[name], "num_tasks": tasks})
    if name == "gps_features":  # a scaler that is not the identity
        model.feature_scaler.fit(np.random.default_rng(0).random((8, 2048)) * 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, build_checkpoint(
        model, target_names=[f"t{i}" for i in range(tasks)], task="classification",
        recipe={"data": {"path": "x.csv", "smiles_column": "smiles"}}, split_seed=0, seed=seed,
        epoch=0))
    return path


def input_csv(folder):
    path = folder / "in.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "smiles", "note"])
        writer.writerows([f"r{i}", s, f"n,{i}"] for i, s in enumerate(ROWS))
    return path


@pytest.mark.parametrize("name", list(CONFIGS))
def test_embedding_is_what_the_head_reads_row_for_row(tmp_path, name):
    ckpt = write_model(tmp_path / "m.pt", name)
    vectors = embed_smiles(ckpt, ROWS, device="cpu")
    ensemble = load_ensemble([ckpt], "cpu")
    model = ensemble.models[0]
    assert vectors.shape == (len(ROWS), embedding_width(model)) and vectors.dtype == np.float32
    assert vectors.shape[1] == (16 + 2048 if name == "gps_features" else 16)
    invalid = [i for i, s in enumerate(ROWS) if s in BAD]
    assert np.isnan(vectors[invalid]).all() and not np.isnan(np.delete(vectors, invalid, 0)).any()
    # The head applied to the embedding gives predict's output, row for row (the file's rows
    # are batched by size, so a shifted row would be caught).
    with torch.no_grad():
        logits = model.head(torch.from_numpy(np.delete(vectors, invalid, 0))).numpy()
    predicted = predict_smiles(ensemble, ROWS).mean
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), np.delete(predicted, invalid, 0),
                               rtol=1e-5, atol=1e-6)
    # Each row alone (a batch of one) gives the same vector.
    for i in (0, 7, len(ROWS) - 1):
        alone = embed_smiles(ckpt, [ROWS[i]], device="cpu")[0]
        np.testing.assert_allclose(alone, vectors[i], rtol=1e-4, atol=1e-5)


def test_embed_outputs_keep_rows_and_flag_invalid_smiles(tmp_path):
    import pyarrow.parquet as pq

    run = tmp_path / "run"
    write_model(run / "seed_0" / "best.pt", seed=0)
    write_model(run / "seed_1" / "best.pt", seed=1)
    inp = input_csv(tmp_path)
    results = {}
    for suffix in ("npy", "csv", "tsv", "parquet"):
        out = tmp_path / f"emb.{suffix}"
        result = runner.invoke(app, ["embed", str(run), str(inp), "-o", str(out), "-j", "1",
                                     "--device", "cpu"])
        assert result.exit_code == 0, result.output
        assert f"embedding with {run / 'seed_0' / 'best.pt'}" in result.stderr
        assert f"{len(ROWS)} rows, {len(ROWS) - 3} valid, 3 invalid" in result.stderr
        results[suffix] = out
    vectors = np.load(results["npy"])
    np.testing.assert_array_equal(vectors, embed_smiles(run / "seed_0" / "best.pt", ROWS,
                                                        device="cpu"))
    with open(tmp_path / "emb.errors.csv", newline="") as handle:
        errors = list(csv.reader(handle))
    assert errors[0] == ["row", "smiles", "molsam_error"]
    assert [(int(r[0]), r[1]) for r in errors[1:]] == [
        (i, s) for i, s in enumerate(ROWS) if s in BAD]
    assert all(r[2] for r in errors[1:])
    with open(results["csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    names = [f"emb_{i}" for i in range(16)]
    assert list(rows[0]) == ["id", "smiles", "note", *names, "molsam_error"]
    assert [(r["id"], r["smiles"], r["note"]) for r in rows] == [
        (f"r{i}", s, f"n,{i}") for i, s in enumerate(ROWS)]
    for i, row in enumerate(rows):
        if ROWS[i] in BAD:
            assert row["molsam_error"] and all(row[n] == "" for n in names)
        else:
            assert row["molsam_error"] == ""
            assert np.array_equal(np.array([float(row[n]) for n in names], np.float32),
                                  vectors[i])  # 9 digits: float32 exactly
    with open(results["tsv"], newline="") as handle:
        assert list(csv.DictReader(handle, delimiter="\t")) == rows
    table = pq.read_table(results["parquet"])
    assert table.schema.names == list(rows[0])
    assert table.schema.field("emb_0").type == "double"
    got = np.array([table.column(n).to_pylist() for n in names], dtype=np.float64).T
    # The CSV's 9 significant digits, as float64: float32 exactly once rounded back.
    np.testing.assert_array_equal(got.astype(np.float32), vectors)


def test_embed_refuses_an_output_it_cannot_write_in_one_line(tmp_path):
    ckpt = write_model(tmp_path / "m.pt")
    inp = input_csv(tmp_path)
    result = runner.invoke(app, ["embed", str(ckpt), str(inp), "-o", str(tmp_path / "e.xlsx")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and ".npy, .csv, .tsv or .parquet" in lines[0]
    assert not (tmp_path / "e.xlsx").exists()


def test_pooled_batch_equals_store_batch(tmp_path):
    # Sanity of the comparison above: the store's batch of the valid molecules, embedded in
    # one go, equals the streamed file's rows.
    ckpt = write_model(tmp_path / "m.pt")
    valid = [s for s in ROWS if s not in BAD]
    store = GraphStore.from_smiles(valid, rwse_steps=4, workers=1)
    model = load_ensemble([ckpt], "cpu").models[0]
    from molsam.embed import representations

    batch = store.batch_source("cpu").gather(np.arange(len(store)))
    direct = representations(model, batch).numpy()
    np.testing.assert_allclose(direct, embed_smiles(ckpt, valid, device="cpu"),
                               rtol=1e-4, atol=1e-5)
