"""molsam.predict: checkpoint predictions equal the trained model's, rows and columns survive any
input quirk, ensemble mean/std, empty input, atomic output. Also holds `make_run`, the tiny run
directory builder shared by the evaluate and CLI tests."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from molsam.config import recipe_from_dict
from molsam.data.pipeline import DataSpec, load_store
from molsam.errors import CheckpointError, InputError
from molsam.models import GPSModel
from molsam.predict import (
    load_ensemble,
    predict_csv,
    predict_smiles,
    resolve_model_paths,
)
from molsam.train.checkpoint import build_checkpoint, save_checkpoint
from tests.conftest import write_csv

SMILES = [
    "CCO", "c1ccccc1", "CCN", "CC(=O)O", "CCCl", "c1ccncc1", "C1CCCCC1", "OCC(O)CO",
    "CC#N", "CCOC(=O)C", "c1ccc(O)cc1", "CN(C)C", "C=CC=C", "ClC(Cl)Cl", "CC(C)O", "NC(=O)N",
    "c1ccc2ccccc2c1", "CCCCCC", "O=C=O", "CS(=O)C", "c1cc[nH]c1", "FC(F)F", "CCS", "C1CCOC1",
]
PE_STEPS = 8


def labels(task: str) -> np.ndarray:
    """Deterministic labels with both classes (classification) or a spread (regression)."""
    if task == "classification":
        return np.array([i % 2 for i in range(len(SMILES))], dtype=np.float64)
    return np.array([len(s) * 0.7 - 3.0 for s in SMILES], dtype=np.float64)


def make_run(
    folder: Path, task: str = "classification", seeds: tuple[int, ...] = (0,), steps: int = 5
) -> tuple[Path, list[GPSModel]]:
    """A run directory like `molsam train` writes: data.csv, recipe.yaml-less (the checkpoint
    holds the recipe), splits.json and seed_<s>/best.pt, with tiny models trained a few Adam steps.
    Returns the run directory and the trained models (eval mode)."""
    folder.mkdir(parents=True, exist_ok=True)
    y = labels(task)
    data = folder / "data.csv"
    data.write_text("smiles,y\n" + "".join(f"{s},{v:g}\n" for s, v in zip(SMILES, y)))
    recipe = recipe_from_dict({
        "data": {"path": str(data), "smiles_column": "smiles", "target_columns": ["y"],
                 "task": task},
        "model": {"hidden": 16, "layers": 1, "heads": 2, "pe_steps": PE_STEPS},
    })
    store = load_store(DataSpec(str(data), "smiles", ["y"], None, task), rwse_steps=PE_STEPS,
                       workers=1)
    source = store.batch_source("cpu")
    scaler = None
    target = torch.from_numpy(store.y).double()
    if task == "regression":
        scaler = {"mean": [float(store.y.mean())], "std": [float(store.y.std())]}
        target = (target - scaler["mean"][0]) / scaler["std"][0]
    models = []
    for seed in seeds:
        torch.manual_seed(seed)
        model = GPSModel(1, hidden=16, layers=1, heads=2, pe_steps=PE_STEPS, dropout=0.0)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        batch = source.gather(np.arange(len(store)))
        for _ in range(steps):
            optimizer.zero_grad()
            out = model(batch).double()
            loss = (torch.nn.functional.binary_cross_entropy_with_logits(out, target)
                    if task == "classification" else ((out - target) ** 2).mean())
            loss.backward()
            optimizer.step()
        model.eval()
        (folder / f"seed_{seed}").mkdir(exist_ok=True)
        save_checkpoint(folder / f"seed_{seed}" / "best.pt", build_checkpoint(
            model, target_names=["y"], task=task, recipe=recipe, split_seed=0, seed=seed,
            epoch=steps, scaler=scaler,
        ))
        models.append(model)
    order = np.random.default_rng(0).permutation(len(store))
    parts = {"train": order[:16], "val": order[16:20], "test": order[20:]}
    (folder / "splits.json").write_text(json.dumps({
        "method": "random", "seed": 0, "sizes": [0.67, 0.17, 0.16],
        **{k: {"indices": v.tolist(), "rows": store.rows[v].tolist(),
               "smiles": [store.smiles[i] for i in v]} for k, v in parts.items()},
    }))
    return folder, models


def reference(models: list[GPSModel], smiles: list[str], task: str, scaler=None) -> np.ndarray:
    """[M, N, 1] outputs of the in-process models, in output units, computed independently of
    molsam.predict (one batch, plain forward, torch sigmoid / unscale)."""
    from molsam.data.store import GraphStore

    store = GraphStore.from_smiles(smiles, rwse_steps=PE_STEPS, workers=1)
    batch = store.batch_source("cpu").gather(np.arange(len(store)))
    outs = []
    with torch.no_grad():
        for model in models:
            raw = model(batch).double()
            if task == "classification":
                outs.append(torch.sigmoid(raw).numpy())
            else:
                outs.append((raw * scaler["std"][0] + scaler["mean"][0]).numpy())
    return np.stack(outs)


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_checkpoint_predictions_equal_trained_model(tmp_path, task):
    run, models = make_run(tmp_path / "run", task)
    ensemble = load_ensemble([run / "seed_0" / "best.pt"], device="cpu")
    scaler = ensemble.scalers[0]
    if task == "regression":
        assert scaler is not None  # the scaler must be applied, or the comparison is trivial
    expected = reference(models, SMILES, task, scaler)[0, :, 0]
    found = predict_smiles(ensemble, SMILES)
    np.testing.assert_allclose(found.mean[:, 0], expected, rtol=0, atol=1e-6)
    # Through a CSV file too (blocks smaller than the file, two workers: order must hold).
    inp = write_csv(tmp_path / "in.csv", "smiles\n" + "\n".join(SMILES) + "\n")
    out = tmp_path / "out.csv"
    summary = predict_csv(ensemble, inp, out, workers=2, block_rows=5)
    rows = read_rows(out)
    assert rows[0] == ["smiles", "y", "molsam_error"]
    assert [r[0] for r in rows[1:]] == SMILES
    np.testing.assert_allclose([float(r[1]) for r in rows[1:]], expected, rtol=0, atol=1e-6)
    assert (summary.rows, summary.valid, summary.invalid) == (len(SMILES), len(SMILES), 0)


def test_rows_and_cells_preserved_with_bad_smiles_quotes_crlf_bom(tmp_path):
    run, models = make_run(tmp_path / "run")
    ensemble = load_ensemble([run], device="cpu")
    text = (
        'id,note,SMILES\n'
        '1,plain,CCO\n'
        '2,"has, comma and ""quote""",c1ccccc1\n'
        '3,bad,C1CC\n'
        '4,blank,\n'
        '5,valence,C(C)(C)(C)(C)C\n'
        '6,  spaced  , CCN \n'
    )
    inp = write_csv(tmp_path / "in.csv", "\ufeff" + text, newline="\r\n")
    out = tmp_path / "out.csv"
    summary = predict_csv(ensemble, inp, out, workers=1, block_rows=2)
    rows = read_rows(out)
    assert rows[0] == ["id", "note", "SMILES", "y", "molsam_error"]
    assert [r[:3] for r in rows[1:]] == [
        ["1", "plain", "CCO"],
        ["2", 'has, comma and "quote"', "c1ccccc1"],
        ["3", "bad", "C1CC"],
        ["4", "blank", ""],
        ["5", "valence", "C(C)(C)(C)(C)C"],
        ["6", "  spaced  ", " CCN "],
    ]
    errors = [r[4] for r in rows[1:]]
    assert errors[0] == errors[1] == errors[5] == ""
    assert "parse error" in errors[2] and errors[3] == "empty SMILES"
    assert "valence" in errors[4].lower()
    assert [r[3] == "" for r in rows[1:]] == [False, False, True, True, True, False]
    expected = reference(models, ["CCO", "c1ccccc1", "CCN"], "classification")[0, :, 0]
    np.testing.assert_allclose([float(rows[i][3]) for i in (1, 2, 6)], expected, atol=1e-6)
    assert (summary.rows, summary.valid, summary.invalid) == (6, 3, 3)


def test_ensemble_mean_and_population_std(tmp_path):
    run, models = make_run(tmp_path / "run", "regression", seeds=(0, 1))
    ensemble = load_ensemble([run], device="cpu")
    assert len(ensemble) == 2
    per_member = reference(models, SMILES, "regression", ensemble.scalers[0])
    assert np.abs(per_member[0] - per_member[1]).max() > 1e-3  # members really differ
    inp = write_csv(tmp_path / "in.csv", "smiles\n" + "\n".join(SMILES) + "\n")
    out = tmp_path / "out.csv"
    predict_csv(ensemble, inp, out, workers=1)
    rows = read_rows(out)
    assert rows[0] == ["smiles", "y", "y_std", "molsam_error"]
    mean = np.array([float(r[1]) for r in rows[1:]])
    std = np.array([float(r[2]) for r in rows[1:]])
    np.testing.assert_allclose(mean, per_member.mean(axis=0)[:, 0], atol=1e-6)
    np.testing.assert_allclose(std, per_member.std(axis=0, ddof=0)[:, 0], atol=1e-6)


def test_header_only_input_gives_header_only_output(tmp_path):
    run, _ = make_run(tmp_path / "run")
    ensemble = load_ensemble([run], device="cpu")
    inp = write_csv(tmp_path / "in.csv", "name,smiles\n")
    out = tmp_path / "out.csv"
    summary = predict_csv(ensemble, inp, out, workers=2)
    assert read_rows(out) == [["name", "smiles", "y", "molsam_error"]]
    assert summary.rows == 0


def test_prediction_column_renamed_when_input_has_it(tmp_path):
    run, _ = make_run(tmp_path / "run")
    ensemble = load_ensemble([run], device="cpu")
    out = tmp_path / "out.csv"
    predict_csv(ensemble, run / "data.csv", out, workers=1)
    assert read_rows(out)[0] == ["smiles", "y", "y_pred", "molsam_error"]


def test_failure_leaves_no_output_file(tmp_path):
    run, _ = make_run(tmp_path / "run")
    ensemble = load_ensemble([run], device="cpu")
    # Line 4 has too many fields: an InputError after a block was already written.
    inp = write_csv(tmp_path / "in.csv", "smiles\nCCO\nCCN\nCCC,extra\n")
    out = tmp_path / "out.csv"
    out.write_text("previous complete output\n")
    with pytest.raises(InputError, match="line 4"):
        predict_csv(ensemble, inp, out, workers=1, block_rows=1)
    assert out.read_text() == "previous complete output\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_checkpoints_must_agree(tmp_path):
    run_a, _ = make_run(tmp_path / "a", "classification")
    run_b, _ = make_run(tmp_path / "b", "regression")
    with pytest.raises(CheckpointError, match="task 'regression' differs"):
        load_ensemble([run_a / "seed_0" / "best.pt", run_b / "seed_0" / "best.pt"], device="cpu")


def test_model_paths_from_run_directory(tmp_path):
    run, _ = make_run(tmp_path / "run", seeds=(2, 10), steps=1)
    assert resolve_model_paths([run]) == [run / "seed_2" / "best.pt", run / "seed_10" / "best.pt"]
    with pytest.raises(CheckpointError, match="not a molsam run directory"):
        resolve_model_paths([tmp_path])
