"""benchmarks/peers/chemprop.py's pure helpers: chemprop's input files from molsam's molecules
and split indices, reading its predictions back, resuming, and the comparison table (no chemprop
needed)."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "peers" / "chemprop.py"


@pytest.fixture(scope="module")
def peers():
    spec = importlib.util.spec_from_file_location("peers_chemprop", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_splits_file_is_chemprops_one_replicate_list_of_molsam_indices(peers, tmp_path):
    path = peers.write_splits_file(tmp_path / "splits.json", np.array([4, 0, 2]),
                                   np.array([1], dtype=np.int64), [5, 3])
    saved = json.loads(path.read_text())
    assert saved == [{"train": [0, 2, 4], "val": [1], "test": [3, 5]}]
    assert all(type(i) is int for part in saved[0].values() for i in part)


def test_splits_file_refuses_overlapping_or_negative_indices(peers):
    with pytest.raises(ValueError, match="both train and test"):
        peers.chemprop_splits([0, 1], [2], [1])
    with pytest.raises(ValueError, match="negative"):
        peers.chemprop_splits([-1], [], [])


def test_chemprop_csv_holds_molsam_molecules_in_store_order(peers, tmp_path):
    y = np.array([[1.0, np.nan], [0.0, 1.0], [np.float32(-0.77), np.float32(3.54)]],
                 dtype=np.float32).astype(np.float64)
    names = ["p_np", "Neoplasms benign, malignant"]  # a comma in a name, as sider has
    path = peers.write_chemprop_csv(tmp_path / "data.csv", ["CCO", "c1ccccc1", "CC(=O)O"], y,
                                    names)
    rows = list(csv.reader(path.open(newline="")))
    assert rows[0] == ["smiles", *names]
    assert rows[1:] == [["CCO", "1.0", ""], ["c1ccccc1", "0.0", "1.0"],
                        ["CC(=O)O", "-0.77", "3.54"]]
    with pytest.raises(ValueError, match="label rows"):
        peers.write_chemprop_csv(tmp_path / "bad.csv", ["C"], y, names)


def test_test_predictions_are_read_in_target_order_and_checked(peers, tmp_path):
    path = tmp_path / "test_predictions.csv"
    path.write_text("smiles,b,a\nCCO,0.25,0.5\nCCN,0.75,1.5\n")
    got = peers.read_test_predictions(path, ["CCO", "CCN"], ["a", "b"])
    assert got.tolist() == [[0.5, 0.25], [1.5, 0.75]]
    with pytest.raises(ValueError, match="not the test split"):
        peers.read_test_predictions(path, ["CCN", "CCO"], ["a", "b"])
    with pytest.raises(ValueError, match="no prediction column"):
        peers.read_test_predictions(path, ["CCO", "CCN"], ["c"])


def test_chemprops_own_test_scores_are_parsed_from_its_log(peers):
    log = ("2026-12-08T04:43:58 - INFO:chemprop.cli.train - Test Set results:\n"
           "2026-12-08T04:43:58 - INFO:chemprop.cli.train - test/roc: 0.7182773351669312\n"
           "... test/mse: 2.9e-1\n")
    assert peers.parse_reported(log) == {"roc": 0.7182773351669312, "mse": 0.29}


def test_data_paths_and_molsam_overrides(peers):
    paths = peers.parse_data_paths(["Sider=/data/sider.csv"])
    assert paths == {"sider": "/data/sider.csv"}
    assert peers.molsam_overrides("sider", 3, paths, ["train.epochs=3"], 1) == [
        "train.seeds=[3]", "train.threads=1", "data.path=/data/sider.csv", "train.epochs=3"]
    assert peers.molsam_overrides("bbbp", None, paths, [], 2) == ["train.threads=2"]
    with pytest.raises(ValueError, match="DATASET=PATH"):
        peers.parse_data_paths(["sider"])


def test_resume_keys_cells_by_settings_and_skips_a_torn_line(peers, tmp_path):
    results = tmp_path / "results.jsonl"
    record = {"tool": "chemprop", "config": "default", "dataset": "bbbp", "seed": 0,
              "settings": {"epochs": None, "threads": 1}, "test": 0.9, "wall_s": 10.0,
              "metric": "roc_auc"}
    peers.append_result(results, record)
    with results.open("a") as handle:
        handle.write('{"tool": "molsam", "conf')  # killed mid-write
    assert peers.read_results(results) == [record]
    smoke = {**record, "settings": {"epochs": 3, "threads": 1}}
    assert peers.cell_key(record) != peers.cell_key(smoke)
    reordered = {**record, "settings": {"threads": 1, "epochs": None}}
    assert peers.cell_key(record) == peers.cell_key(reordered)


def _records(tool, config, scores, metric="roc_auc", dataset="bbbp", wall=10.0):
    return [{"tool": tool, "config": config, "dataset": dataset, "seed": seed, "test": score,
             "wall_s": wall, "metric": metric} for seed, score in scores.items()]


def test_paired_difference_is_molsam_minus_chemprop_on_shared_seeds(peers):
    records = (_records("molsam", "recipe", {0: 0.80, 1: 0.70, 2: 0.75}, wall=20.0)
               + _records("chemprop", "default", {0: 0.70, 1: 0.72})  # seed 2 not run yet
               + _records("chemprop", "+v1_rdkit_2d_normalized", {0: 0.90, 1: 0.90, 2: 0.90}))
    rows = peers.summary_rows(records)
    assert [(r["tool"], r["config"]) for r in rows] == [
        ("molsam", "recipe"), ("chemprop", "default"), ("chemprop", "+v1_rdkit_2d_normalized")]
    molsam, plain, rdkit = rows
    assert molsam["diff"] is None and molsam["test"][0] == pytest.approx(0.75)
    assert molsam["test"][1] == pytest.approx(0.05)  # sample std
    assert plain["diff_seeds"] == [0, 1]
    assert plain["diff"][0] == pytest.approx((0.10 - 0.02) / 2)
    assert plain["diff"][1] == pytest.approx(math.sqrt(2) * 0.06)
    assert rdkit["diff"][0] == pytest.approx(-0.15)
    table = peers.markdown_table(rows)
    assert "| bbbp | ROC-AUC ↑ | molsam | recipe | 3 | 0.750 ± 0.050 |  | 20 |" in table
    assert ("| bbbp | ROC-AUC ↑ | chemprop | default | 2 | 0.710 ± 0.014 "
            "| +0.040 ± 0.085 (n=2) | 10 |") in table
    assert "-0.150 ± 0.050 (n=3)" in table


def test_one_seed_shows_no_std_and_datasets_keep_their_order(peers):
    records = (_records("chemprop", "default", {0: 1.2}, metric="rmse", dataset="esol")
               + _records("molsam", "recipe", {0: 1.0}, metric="rmse", dataset="esol")
               + _records("molsam", "recipe", {0: 0.7}, dataset="bbbp"))
    rows = peers.summary_rows(records)
    assert [(r["dataset"], r["tool"]) for r in rows] == [
        ("esol", "molsam"), ("esol", "chemprop"), ("bbbp", "molsam")]
    table = peers.markdown_table(rows)
    assert "| esol | RMSE ↓ | chemprop | default | 1 | 1.200 | -0.200 (n=1) | 10 |" in table
