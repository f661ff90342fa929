"""`molsam predict` with uncertainty, calibration, conformal intervals and the applicability
domain (issue 23, molsam.predict_uncertainty): columns for every task type, numbers equal to
the calibrators, metrics and RDKit they come from, seeded MC dropout, refusals in one line."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from molsam.calibrate import calibrate
from molsam.cli.main import app
from molsam.models import GPSModel
from molsam.predict import load_ensemble, predict_csv, predict_smiles
from molsam.predict_uncertainty import (
    NEIGHBORS_COLUMN,
    SIMILARITY_COLUMN,
    PredictOptions,
    mc_dropout_values,
)
from molsam.train.calibration import entry_of
from molsam.train.checkpoint import build_checkpoint, load_checkpoint, save_checkpoint
from molsam.train.domain import training_domain
from molsam.uncertainty import (
    calibrator_from_dict,
    logits_from_probabilities,
    pairwise_disagreement,
    predictive_entropy,
)
from molsam.uncertainty.domain import Fingerprints, nearest_neighbors
from tests.conftest import SHARED_DATA
from tests.unit.test_predict import SMILES

Chem = pytest.importorskip("rdkit.Chem")
from rdkit import DataStructs  # noqa: E402
from rdkit.Chem import rdFingerprintGenerator  # noqa: E402

runner = CliRunner()
PE_STEPS = 4
DOMAIN = [SIMILARITY_COLUMN, NEIGHBORS_COLUMN]
BAD = "C1CC"  # unclosed ring: an invalid SMILES
TRAIN = SMILES[:12]
QUERY = SMILES + ["CCCO", "c1ccccc1CC", BAD]


def esol(rows: int, start: int = 0) -> list[str]:
    lines = (SHARED_DATA / "esol.csv").read_text().splitlines()[1 + start : 1 + start + rows]
    return [line.split(",")[0] for line in lines]


def checkpoint(path: Path, task: str = "regression", targets=("y",), classes=None,
               dropout: float = 0.0, seed: int = 0, domain: bool = True) -> Path:
    """An untrained (seeded) GPS checkpoint; speed and bookkeeping do not depend on training."""
    torch.manual_seed(seed)
    outputs = sum(map(len, classes)) if classes else len(targets)
    model = GPSModel(outputs, hidden=16, layers=1, heads=2, pe_steps=PE_STEPS, dropout=dropout)
    scaler = ({"mean": [0.5] * len(targets), "std": [2.0] * len(targets)}
              if task == "regression" else None)
    ckpt = build_checkpoint(
        model, target_names=list(targets), task=task, classes=classes, scaler=scaler,
        recipe={"data": {"path": "x.csv", "smiles_column": "smiles"}}, split_seed=0, seed=seed,
        epoch=0)
    ckpt["domain"] = training_domain(TRAIN) if domain else None
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, ckpt)
    return path


def labelled(path: Path, columns: dict[str, list], smiles=SMILES) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["smiles", *columns])
        writer.writerows([s, *values] for s, *values in zip(smiles, *columns.values()))
    return path


def query_file(folder: Path) -> Path:
    path = folder / "query.csv"
    path.write_text("id,smiles\n" + "".join(f"q{i},{s}\n" for i, s in enumerate(QUERY)))
    return path


def predict_rows(args: list[str]) -> tuple[list[dict], str]:
    result = runner.invoke(app, ["predict", *args, "-j", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return list(csv.DictReader(io.StringIO(result.stdout))), result.stderr


def floats(rows: list[dict], column: str) -> np.ndarray:
    return np.array([float(r[column]) if r[column] else np.nan for r in rows])


# --------------------------------------------------------------------------- domain


def test_nearest_neighbor_count_is_strictly_above_the_threshold():
    # Query bits {0, 1} against {0, 1, 2, 3, 4}: Tanimoto 2 / 5 = 0.4 exactly.
    query = np.zeros((1, 256), np.uint8)
    train = np.zeros((2, 256), np.uint8)
    query[0, 0] = 0b11000000
    train[0, 0] = 0b11111000
    train[1, 0] = 0b11100000  # 2 / 3
    assert nearest_neighbors(query, train, threshold=0.4).n_similar[0] == 2  # >=
    assert nearest_neighbors(query, train, threshold=0.4, strict=True).n_similar[0] == 1  # >


def test_domain_similarity_equals_rdkit_bulk_tanimoto_against_training_molecules(tmp_path):
    ckpt = checkpoint(tmp_path / "m.pt")
    found = predict_smiles(load_ensemble([ckpt], "cpu"), QUERY)
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    train = [generator.GetFingerprint(Chem.MolFromSmiles(s)) for s in TRAIN]
    for i, smiles in enumerate(QUERY):
        if smiles == BAD:
            assert math.isnan(found.similarity[i]) and math.isnan(found.neighbors[i])
            continue
        sims = np.array(DataStructs.BulkTanimotoSimilarity(
            generator.GetFingerprint(Chem.MolFromSmiles(smiles)), train))
        assert found.similarity[i] == sims.max()  # the same integer ratio in float64
        assert found.neighbors[i] == (sims > 0.4).sum()
    assert found.similarity[0] == 1.0  # a training molecule itself


def test_domain_columns_by_default_none_with_no_domain_and_a_note_for_old_checkpoints(tmp_path):
    new = checkpoint(tmp_path / "new.pt")
    old = checkpoint(tmp_path / "old.pt", domain=False)
    inp = query_file(tmp_path)
    rows, err = predict_rows([str(new), str(inp)])
    assert list(rows[0]) == ["id", "smiles", "y", *DOMAIN, "molsam_error"]
    assert rows[-1][SIMILARITY_COLUMN] == rows[-1][NEIGHBORS_COLUMN] == ""
    assert rows[-1]["molsam_error"] and rows[-1]["y"] == ""
    assert "fingerprints" not in err
    # --no-domain: exactly the output of a checkpoint written before fingerprints existed.
    result = runner.invoke(app, ["predict", str(new), str(inp), "-j", "1", "--no-domain"])
    plain = runner.invoke(app, ["predict", str(old), str(inp), "-j", "1"])
    assert result.exit_code == plain.exit_code == 0
    assert result.stdout == plain.stdout
    assert plain.stdout.splitlines()[0] == "id,smiles,y,molsam_error"
    notes = [line for line in plain.stderr.splitlines() if "fingerprints" in line]
    assert len(notes) == 1 and str(old) in notes[0] and SIMILARITY_COLUMN in notes[0]
    assert "fingerprints" not in result.stderr


def test_training_stores_the_training_split_fingerprints_in_best_pt(trained):
    run, splits = trained["run"], trained["splits"]
    stored = torch.load(run / "seed_0" / "best.pt", weights_only=True)["domain"]
    assert isinstance(stored["bits"], bytes) and stored["split"] == "train"
    assert (len(stored["bits"]) + len(stored["valid"])) / stored["count"] <= 300
    fingerprints = Fingerprints.from_dict(stored)
    train_smiles = splits["train"]["smiles"]
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    expected = np.array([generator.GetFingerprintAsNumPy(Chem.MolFromSmiles(s))
                         for s in train_smiles])
    np.testing.assert_array_equal(fingerprints.unpacked(), expected)
    # predict's similarity to them equals RDKit's bulk Tanimoto against the training molecules
    query = splits["test"]["smiles"][:25]
    found = predict_smiles(load_ensemble([run], "cpu"), query)
    train_fps = [generator.GetFingerprint(Chem.MolFromSmiles(s)) for s in train_smiles]
    for i, smiles in enumerate(query):
        sims = DataStructs.BulkTanimotoSimilarity(
            generator.GetFingerprint(Chem.MolFromSmiles(smiles)), train_fps)
        assert found.similarity[i] == max(sims)
        assert found.neighbors[i] == sum(s > 0.4 for s in sims)


# --------------------------------------------------------------------------- intervals


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real run: 600 ESOL molecules with N(0, 1) labels, random split 0.2 / 0.4 / 0.4 (the
    validation part calibrates), one epoch of a tiny model; its splits.json and labels."""
    import json

    from molsam.config import recipe_from_dict
    from molsam.train.run import train_recipe

    folder = tmp_path_factory.mktemp("trained")
    smiles = esol(600)
    y = np.random.default_rng(1).standard_normal(len(smiles))
    data = labelled(folder / "data.csv", {"y": [f"{v:.6f}" for v in y]}, smiles)
    recipe = recipe_from_dict({
        "data": {"path": str(data)},
        "split": {"method": "random", "sizes": [0.2, 0.4, 0.4], "seed": 0},
        "model": {"hidden": 16, "layers": 1, "heads": 2, "dropout": 0.1},
        "optim": {"name": "adam", "lr": 3e-3, "schedule": "constant"},
        "train": {"epochs": 1, "batch_size": 32, "seeds": [0], "workers": 1, "device": "cpu"},
    })
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOLSAM_CACHE_DIR", str(folder / "cache"))
        train_recipe(recipe, folder / "run")
    splits = json.loads((folder / "run" / "splits.json").read_text())
    labels = dict(zip(smiles, y))
    test = splits["test"]["smiles"]
    test_csv = labelled(folder / "test.csv", {"y_true": [f"{labels[s]:.6f}" for s in test]}, test)
    return {"run": folder / "run", "splits": splits, "test": test_csv,
            "y": np.array([labels[s] for s in test])}


@pytest.mark.parametrize("level,low,high", [(0.9, 0.85, 0.95), (0.8, 0.74, 0.86)])
def test_conformal_intervals_cover_the_level_on_held_out_molecules(trained, level, low, high):
    rows, _ = predict_rows([str(trained["run"]), str(trained["test"]), "--interval",
                              str(level)])
    assert list(rows[0])[:6] == ["smiles", "y_true", "y", "y_lower", "y_upper", *DOMAIN[:1]]
    lower, upper, y = floats(rows, "y_lower"), floats(rows, "y_upper"), trained["y"]
    coverage = np.mean((lower <= y) & (y <= upper))
    assert low <= coverage <= high, coverage
    # The stored quantile at the stored level, the stored scores' quantile at another one.
    conformal = entry_of(load_checkpoint(trained["run"] / "seed_0" / "best.pt")["calibration"])[
        "calibrators"]["conformal"]
    scores = conformal["scores"][0]
    n = len(scores)
    assert n == conformal["counts"][0] and scores == sorted(scores)
    expected = scores[math.ceil((n + 1) * level - 1e-9) - 1]
    np.testing.assert_allclose((upper - lower) / 2, expected, rtol=1e-6)
    if level == 0.9:
        assert expected == pytest.approx(conformal["quantiles"][0])
    assert np.all(lower <= floats(rows, "y")) and np.all(floats(rows, "y") <= upper)


def test_interval_at_another_level_without_stored_scores_is_refused_in_one_line(trained,
                                                                               tmp_path):
    ckpt = load_checkpoint(trained["run"] / "seed_0" / "best.pt")
    del ckpt["calibration"]["model"]["calibrators"]["conformal"]["scores"]  # an older file
    save_checkpoint(tmp_path / "old.pt", ckpt)
    result = runner.invoke(app, ["predict", str(tmp_path / "old.pt"), str(trained["test"]),
                                 "--interval", "0.8", "-o", str(tmp_path / "o.csv")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --interval 0.8:")
    assert "molsam calibrate" in lines[0] and "--alpha 0.2" in lines[0]
    assert not (tmp_path / "o.csv").exists()
    rows, _ = predict_rows([str(tmp_path / "old.pt"), str(trained["test"]), "--interval", "0.9"])
    assert rows[0]["y_lower"] != ""


@pytest.mark.parametrize("args,message", [
    (["--interval", "1.5"], "--interval: expected a coverage level in (0, 1)"),
    (["--interval", "0.9", "--no-calibration"], "drop --no-calibration"),
    (["--uncertainty", "ensemble"], "needs two or more models"),
    (["--uncertainty", "mve"], "train.loss: mve"),
    (["--uncertainty", "sometimes"], "is not one of ensemble, dropout, mve, auto"),
    (["--samples", "5"], "--samples is for MC dropout"),
])
def test_options_the_checkpoint_cannot_honour_are_one_line(trained, tmp_path, args, message):
    result = runner.invoke(app, ["predict", str(trained["run"]), str(trained["test"]), *args,
                                 "-o", str(tmp_path / "o.csv")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "o.csv").exists()


def test_classifier_interval_and_dropout_without_dropout_are_refused(tmp_path):
    ckpt = checkpoint(tmp_path / "c.pt", task="classification")
    inp = query_file(tmp_path)
    for args, message in ((["--interval", "0.9"], "for regression models"),
                          (["--uncertainty", "dropout"], "has no dropout")):
        result = runner.invoke(app, ["predict", str(ckpt), str(inp), *args])
        assert result.exit_code == 2 and message in result.stderr, result.output


def test_mve_sigma_and_normalized_intervals_equal_the_stored_calibration(tmp_path):
    from molsam.config import recipe_from_dict
    from molsam.evaluate import evaluate
    from molsam.train.run import train_recipe

    smiles = esol(160)
    y = np.random.default_rng(2).standard_normal(len(smiles))
    data = labelled(tmp_path / "d.csv", {"y": [f"{v:.6f}" for v in y]}, smiles)
    train_recipe(recipe_from_dict({
        "data": {"path": str(data)}, "split": {"method": "random", "sizes": [0.5, 0.5, 0.0]},
        "model": {"hidden": 16, "layers": 1, "heads": 2, "dropout": 0.0},
        "optim": {"name": "adam", "schedule": "constant"},
        "train": {"epochs": 2, "batch_size": 16, "seeds": [0], "workers": 1, "device": "cpu",
                  "loss": "mve"},
    }), tmp_path / "run")
    val = evaluate([tmp_path / "run"], split="val", device="cpu", workers=1)
    import json

    val_smiles = json.loads((tmp_path / "run" / "splits.json").read_text())["val"]["smiles"]
    found = predict_smiles(load_ensemble([tmp_path / "run"], "cpu"), val_smiles,
                           options=PredictOptions(uncertainty="auto", interval=0.9))
    calibrated = val.arrays["calibrated"]
    np.testing.assert_allclose(found.sigma, calibrated.sigma, rtol=1e-6)  # z-scaled MVE sigma
    np.testing.assert_allclose(found.lower, calibrated.lower, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(found.upper, calibrated.upper, rtol=1e-6, atol=1e-9)
    raw = predict_smiles(load_ensemble([tmp_path / "run"], "cpu"), val_smiles,
                         options=PredictOptions(uncertainty="mve", calibration=False))
    np.testing.assert_allclose(raw.sigma, val.arrays["outputs"].sigma, rtol=1e-6)


# --------------------------------------------------------------------------- classification


def _binary_ensemble(tmp_path: Path) -> list[Path]:
    paths = [checkpoint(tmp_path / f"seed_{s}" / "best.pt", task="classification", seed=s)
             for s in (0, 1, 2)]
    cal = labelled(tmp_path / "cal.csv", {"y": [i % 2 for i in range(len(SMILES))]})
    calibrate(paths, str(cal), device="cpu", workers=1)
    return paths


def test_ensemble_probabilities_are_temperature_calibrated_with_entropy_and_disagreement(
        tmp_path):
    paths = _binary_ensemble(tmp_path)
    ensemble = load_ensemble(paths, "cpu")
    plain = predict_smiles(ensemble, QUERY)
    found = predict_smiles(ensemble, QUERY, options=PredictOptions(uncertainty="auto"))
    ckpt = load_checkpoint(paths[0])
    entry = entry_of(ckpt["calibration"], [[s, load_checkpoint(p)["created"]]
                                           for s, p in zip((0, 1, 2), paths)])
    temperature = calibrator_from_dict(entry["calibrators"]["temperature"])
    valid = ~np.isnan(plain.mean[:, 0])
    expected = temperature.apply(logits_from_probabilities(plain.mean[valid]))
    np.testing.assert_allclose(found.mean[valid], expected, rtol=1e-12)
    assert not np.allclose(found.mean[valid], plain.mean[valid])  # T != 1 on these labels
    np.testing.assert_allclose(found.entropy[valid], predictive_entropy(expected), rtol=1e-12)
    np.testing.assert_array_equal(found.disagreement[valid],
                                  pairwise_disagreement(plain.members[:, valid]))
    assert np.isnan(found.entropy[~valid]).all() and np.isnan(found.disagreement[~valid]).all()
    np.testing.assert_array_equal(found.std, plain.std)  # the members' spread, as before
    off = predict_smiles(ensemble, QUERY,
                         options=PredictOptions(uncertainty="auto", calibration=False))
    np.testing.assert_array_equal(off.mean, plain.mean)
    np.testing.assert_allclose(off.entropy[valid], predictive_entropy(plain.mean[valid]))


def test_dropout_predictions_are_seeded_and_repeatable(tmp_path):
    ckpt = checkpoint(tmp_path / "d.pt", dropout=0.3)
    inp = query_file(tmp_path)
    ensemble = load_ensemble([ckpt], "cpu")
    outputs = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        outputs[name] = tmp_path / f"{name}.csv"
        predict_csv(ensemble, inp, outputs[name], workers=1, block_rows=10,
                    options=PredictOptions(uncertainty="dropout", samples=6, seed=seed))
    text = {name: path.read_text() for name, path in outputs.items()}
    assert text["a"] == text["b"] and text["a"] != text["c"]
    rows = list(csv.DictReader(io.StringIO(text["a"])))
    assert list(rows[0]) == ["id", "smiles", "y", "y_std", *DOMAIN, "molsam_error"]
    std = floats(rows, "y_std")
    assert np.all(std[:-1] > 0) and np.isnan(std[-1])
    # The point prediction stays the eval-mode one; the spread is the samples' std.
    plain = predict_smiles(ensemble, QUERY)
    np.testing.assert_allclose(floats(rows, "y")[:-1], plain.mean[:-1, 0], rtol=1e-6)
    direct = predict_smiles(ensemble, QUERY[:5], options=PredictOptions(
        uncertainty="dropout", samples=6, seed=7))
    from molsam.data.store import GraphStore

    source = GraphStore.from_smiles(QUERY[:5], rwse_steps=PE_STEPS, workers=1).batch_source("cpu")
    samples = mc_dropout_values(ensemble, source, np.arange(5), 6, seed=7)
    np.testing.assert_allclose(direct.sigma[:, 0], samples.std(axis=0)[:, 0], rtol=1e-12)
    # The model's train/eval flags are as they were.
    assert not any(m.training for m in ensemble.models[0].modules())


# --------------------------------------------------------------------------- every task type


def _task_setups(folder: Path) -> dict:
    """task type -> (checkpoints, options, expected prediction columns)."""
    classes = [["a", "b", "c"]]
    reg = [checkpoint(folder / "reg.pt", dropout=0.2)]
    multi = [checkpoint(folder / f"multi/seed_{s}/best.pt", targets=("t1", "t2"), seed=s)
             for s in (0, 1)]
    binary = _binary_ensemble(folder / "binary")
    multiclass = [checkpoint(folder / "mc.pt", task="multiclass", targets=("k",),
                             classes=classes, dropout=0.2)]
    rng = np.random.default_rng(0)
    calibrate(reg, str(labelled(folder / "r.csv", {"y": rng.normal(size=len(SMILES))})),
              device="cpu", workers=1)
    calibrate(multi, str(labelled(folder / "m.csv", {"t1": rng.normal(size=len(SMILES)),
                                                     "t2": rng.normal(size=len(SMILES))})),
              device="cpu", workers=1)
    calibrate(multiclass, str(labelled(folder / "k.csv", {"k": [classes[0][i % 3] for i in
                                                              range(len(SMILES))]})),
              device="cpu", workers=1)
    return {
        "regression": (reg, ["--uncertainty", "auto", "--interval", "0.9"],
                       ["y", "y_std", "y_lower", "y_upper"]),
        "regression_multitask": (multi, ["--uncertainty", "ensemble", "--interval", "0.9"],
                                 ["t1", "t2", "t1_std", "t2_std", "t1_lower", "t1_upper",
                                  "t2_lower", "t2_upper"]),
        "binary": (binary, ["--uncertainty", "auto"],
                   ["y", "y_std", "y_entropy", "y_disagreement"]),
        "multiclass": (multiclass, ["--uncertainty", "dropout", "--samples", "4"],
                       ["k_a", "k_b", "k_c", "k", "k_entropy", "k_disagreement"]),
    }


@pytest.fixture(scope="module")
def task_setups(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tasks")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOLSAM_CACHE_DIR", str(folder / "cache"))
        return folder, _task_setups(folder)


@pytest.mark.parametrize("task", ["regression", "regression_multitask", "binary", "multiclass"])
def test_output_columns_and_cells_for_every_task_type(task_setups, task, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, setups = task_setups
    paths, args, expected = setups[task]
    inp = query_file(tmp_path)
    outputs = {}
    for suffix in ("csv", "tsv", "parquet"):
        out = tmp_path / f"out.{suffix}"
        result = runner.invoke(app, ["predict", *map(str, paths), str(inp), "-o", str(out),
                                     "-j", "1", *args])
        assert result.exit_code == 0, result.output
        outputs[suffix] = out
    with open(outputs["csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["id", "smiles", *expected, *DOMAIN, "molsam_error"]
    assert len(rows) == len(QUERY) and [r["id"] for r in rows] == [f"q{i}" for i in
                                                                    range(len(QUERY))]
    bad = rows[-1]
    assert bad["smiles"] == BAD and bad["molsam_error"]
    assert all(bad[c] == "" for c in [*expected, *DOMAIN])
    good = rows[:-1]
    assert all(r["molsam_error"] == "" and all(r[c] != "" for c in [*expected, *DOMAIN])
               for r in good)
    for column in expected:
        if column.endswith("_std"):
            assert np.all(floats(good, column) >= 0)
        if column.endswith("_entropy"):
            top = math.log(3) if task == "multiclass" else math.log(2)
            assert np.all((floats(good, column) >= 0) & (floats(good, column) <= top + 1e-12))
        if column.endswith("_disagreement"):
            assert np.all((floats(good, column) >= 0) & (floats(good, column) <= 1))
        if column.endswith("_lower"):
            value = column.removesuffix("_lower")
            assert np.all(floats(good, column) <= floats(good, value))
            assert np.all(floats(good, value) <= floats(good, f"{value}_upper"))
    if task == "multiclass":
        p = np.stack([floats(good, c) for c in ("k_a", "k_b", "k_c")], axis=1)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
        assert [r["k"] for r in good] == [["a", "b", "c"][i] for i in p.argmax(axis=1)]
    # TSV holds the same cells; Parquet the same values, new numbers as float64 (null: invalid).
    with open(outputs["csv"], newline="") as handle:
        cells = list(csv.reader(handle))
    with open(outputs["tsv"], newline="") as handle:
        assert list(csv.reader(handle, delimiter="\t")) == cells
    table = pq.read_table(outputs["parquet"])
    assert table.schema.names == cells[0]
    for column in [*expected, *DOMAIN]:
        if column == "k":
            continue
        assert table.schema.field(column).type == pa.float64()
        got = table.column(column).to_pylist()
        assert got[-1] is None
        assert got[:-1] == [float(r[column]) for r in good]


def test_ensemble_spread_is_z_scaled_by_the_ensemble_calibration(task_setups):
    _, setups = task_setups
    paths = setups["regression_multitask"][0]
    ensemble = load_ensemble(paths, "cpu")
    plain = predict_smiles(ensemble, QUERY)
    found = predict_smiles(ensemble, QUERY, options=PredictOptions(uncertainty="ensemble"))
    entry = entry_of(load_checkpoint(paths[0])["calibration"], ensemble.member_ids)
    assert entry["sigma"] == "ensemble"
    scales = np.array(entry["calibrators"]["sigma_scaling"]["scales"])
    np.testing.assert_allclose(found.sigma, plain.std * scales, rtol=1e-12)
    raw = predict_smiles(ensemble, QUERY, options=PredictOptions(uncertainty="ensemble",
                                                                  calibration=False))
    np.testing.assert_array_equal(raw.sigma, plain.std)


def test_plain_output_is_unchanged_by_the_new_code_paths(task_setups, tmp_path):
    # Plain predict of a checkpoint without fingerprints: the columns predict always wrote.
    _, setups = task_setups
    paths = setups["regression_multitask"][0]
    inp = query_file(tmp_path)
    rows, _ = predict_rows([*map(str, paths), str(inp), "--no-domain"])
    assert list(rows[0]) == ["id", "smiles", "t1", "t2", "t1_std", "t2_std", "molsam_error"]
    members = predict_smiles(load_ensemble(paths, "cpu"), QUERY).members
    np.testing.assert_allclose(floats(rows, "t1")[:-1], members[:, :-1, 0].mean(axis=0),
                               rtol=1e-6)


# --------------------------------------------------------------------------- Ray


def test_ray_engine_writes_the_same_uncertainty_and_domain_columns(trained, tmp_path):
    import importlib.util
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (`make test` installs it: the test extra lists "
                    "ray[data])")
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
        child.submit(_ray_equals_local, trained["run"], trained["test"], tmp_path).result()


def _ray_equals_local(run: Path, inp: Path, folder: Path) -> None:
    """In a spawned child (tests/integration/test_predict_ray.py says why)."""
    import ray

    args = ["--uncertainty", "dropout", "--samples", "3", "--interval", "0.9"]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        local = runner.invoke(app, ["predict", str(run), str(inp), "-o",
                                    str(folder / "local.csv"), "-j", "1", *args])
        assert local.exit_code == 0, local.output
        result = runner.invoke(app, ["predict", str(run), str(inp), "--engine", "ray",
                                     "-o", str(folder / "ray"), "--device", "cpu", *args])
        assert result.exit_code == 0, result.output
        assert "uncertainty: MC dropout" in result.stderr
    finally:
        ray.shutdown()
    assert (folder / "ray" / inp.name).read_text() == (folder / "local.csv").read_text()


def test_an_ensemble_searches_its_members_training_sets_once_or_their_union(tmp_path):
    same = [checkpoint(tmp_path / f"same/seed_{s}/best.pt", seed=s) for s in (0, 1)]
    assert len(load_ensemble(same, "cpu").domain) == len(TRAIN)  # one shared split: once
    other = tmp_path / "other.pt"
    checkpoint(other)
    ckpt = load_checkpoint(other)
    ckpt["domain"] = training_domain(SMILES[12:])
    save_checkpoint(other, ckpt)
    union = load_ensemble([same[0], other], "cpu")
    assert len(union.domain) == len(SMILES)
    found = predict_smiles(union, QUERY)
    assert np.all(found.similarity[: len(SMILES)] == 1.0)  # every molecule is in one set
