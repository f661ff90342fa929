"""The issue's files end to end through the CLI: an SD file (featurize, train, predict, evaluate),
a SMILES file, the CSV with ID and NAME columns, and its multiclass SOL_classification."""

from __future__ import annotations

import csv
import gzip
import io
import json

import numpy as np
import pytest
from sklearn import metrics as skm
from typer.testing import CliRunner

from molsam.cli.main import app
from molsam.train.checkpoint import load_checkpoint
from tests.solubility import CLASSES, write_solubility_csv, write_solubility_sdf

runner = CliRunner()
TINY = {"model": {"hidden": 16, "layers": 1, "heads": 2, "pe_steps": 4},
        "split": {"method": "random"}, "optim": {"warmup_epochs": 1},
        "train": {"epochs": 1, "batch_size": 8, "workers": 1, "device": "cpu"}}


def recipe(tmp_path, data: dict, seeds=(0,)) -> str:
    path = tmp_path / "recipe.json"  # JSON is YAML
    train = {**TINY["train"], "seeds": list(seeds)}
    path.write_text(json.dumps({**TINY, "data": data, "train": train}))
    return str(path)


def csv_rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("solubility")
    sdf = write_solubility_sdf(folder / "sol.sdf", n=36, bad_record=5)
    return sdf, write_solubility_csv(sdf, folder / "sol.csv")


def test_sd_file_featurize_train_predict_evaluate(tmp_path, files):
    sdf, table = files
    result = runner.invoke(app, ["featurize", str(sdf), "--targets", "SOL", "--split", "random",
                                 "-o", str(tmp_path / "f"), "-j", "1"])
    assert result.exit_code == 0, result.output
    assert "37 rows, 36 valid, 1 invalid" in result.output
    report = (tmp_path / "f" / "invalid_rows.csv").read_text().splitlines()
    assert report[0] == "row,record,smiles,reason" and "SD record 5 unreadable" in report[1]

    run = tmp_path / "run"
    result = runner.invoke(app, ["train", recipe(tmp_path, {"path": str(sdf),
                                                            "target_columns": ["SOL"]}),
                                 "--out", str(run)])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(run / "seed_0" / "best.pt")["target_names"] == ["SOL"]

    result = runner.invoke(app, ["predict", str(run), str(sdf), "-j", "1"])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    # The applicability-domain columns come by default with a checkpoint trained today.
    assert rows[0] == ["smiles", "name", "ID", "NAME", "SOL", "SOL_classification", "SOL_pred",
                       "molsam_train_similarity", "molsam_train_neighbors", "molsam_error"]
    assert len(rows) == 38 and rows[5][6:9] == ["", "", ""]
    assert "SD record 5 unreadable" in rows[5][9]
    assert rows[6][1:4] == ["nci-5", "5", "compound E4"]  # no row shifted past the bad record
    # The same molecules from the CSV built from the SD file get the same predictions.
    result = runner.invoke(app, ["predict", str(run), str(table), "-j", "1"])
    from_csv = csv_rows(result.stdout)
    from_sd = [r for r in csv_rows("\n".join(",".join(_quote(c) for c in r) for r in rows))
               if r["smiles"]]
    assert [r["smiles"] for r in from_sd] == [r["smiles"] for r in from_csv]
    np.testing.assert_allclose([float(r["SOL_pred"]) for r in from_sd],
                               [float(r["SOL_pred"]) for r in from_csv], rtol=0, atol=1e-6)

    packed = tmp_path / "sol.sdf.gz"
    packed.write_bytes(gzip.compress(sdf.read_bytes()))
    out = tmp_path / "scores.json"
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(packed), "-o", str(out),
                                 "-j", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    scores = json.loads(out.read_text())
    expected = np.sqrt(np.mean([(float(r["SOL_pred"]) - float(r["SOL"])) ** 2 for r in from_csv]))
    assert scores["n"] == 36
    assert scores["members"][0]["metrics"]["mean"]["rmse"] == pytest.approx(expected, rel=1e-5)


def _quote(cell: str) -> str:
    return '"' + cell.replace('"', '""') + '"'


def test_smiles_file_predicts_like_the_csv(tmp_path, files):
    sdf, table = files
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", recipe(tmp_path, {"path": str(table),
                                                            "target_columns": ["SOL"]}),
                                 "--out", str(run)])
    assert result.exit_code == 0, result.output
    molecules = csv_rows(table.read_text())
    smi = tmp_path / "sol.smi"
    smi.write_text("".join(f"{r['smiles']} {r['NAME']}\n" for r in molecules))
    result = runner.invoke(app, ["predict", str(run), str(smi), "-j", "1"])
    assert result.exit_code == 0, result.output
    got = csv_rows(result.stdout)
    assert list(got[0]) == ["smiles", "name", "SOL", "molsam_train_similarity",
                            "molsam_train_neighbors", "molsam_error"]
    assert [r["name"] for r in got] == [r["NAME"] for r in molecules]
    reference = csv_rows(runner.invoke(app, ["predict", str(run), str(table), "-j", "1"]).stdout)
    np.testing.assert_allclose([float(r["SOL"]) for r in got],
                               [float(r["SOL_pred"]) for r in reference], rtol=0, atol=1e-6)
    # A SMILES file with a header line carries labels: featurize and evaluate read them.
    labeled = tmp_path / "labeled.smi"
    labeled.write_text("SMILES Name SOL\n" + "".join(
        f"{r['smiles']}\t{r['ID']}\t{r['SOL']}\n" for r in molecules))
    result = runner.invoke(app, ["featurize", str(labeled), "--smiles-col", "SMILES", "--split",
                                 "random", "-o", str(tmp_path / "f"), "-j", "1"])
    assert result.exit_code == 0, result.output
    assert "targets: 'SOL' (regression); ignored columns: 'Name'" in " ".join(result.output.split())
    scores = []
    for data in (labeled, table):
        out = tmp_path / f"{data.suffix}.json"
        result = runner.invoke(app, ["evaluate", str(run), "--data", str(data), "-o", str(out),
                                     "-j", "1", "--device", "cpu"])
        assert result.exit_code == 0, result.output
        scores.append(json.loads(out.read_text())["members"][0]["metrics"]["mean"]["rmse"])
    assert scores[0] == pytest.approx(scores[1], rel=1e-6)


def test_issue_csv_ids_never_targets_and_ambiguity_is_one_line(tmp_path, files):
    _, table = files
    result = runner.invoke(app, ["train", recipe(tmp_path, {"path": str(table)}),
                                 "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    line = result.output.strip()
    assert "\n" not in line and line.startswith("error: ") and "cannot tell which" in line
    assert "'SOL' (numbers), 'SOL_classification' (3 class labels)" in line
    # Without the class column, the ID column is printed as ignored and SOL is the target.
    only = tmp_path / "numbers.csv"
    only.write_text("".join(",".join(r.split(",")[:4]) + "\n"
                            for r in table.read_text().splitlines()))
    result = runner.invoke(app, ["train", recipe(tmp_path, {"path": str(only)}),
                                 "--out", str(tmp_path / "r2")])
    assert result.exit_code == 0, result.output
    assert "targets: 'SOL' (regression); ignored columns: 'ID' (an ID or name column" in \
        " ".join(result.output.split())
    assert load_checkpoint(tmp_path / "r2" / "seed_0" / "best.pt")["target_names"] == ["SOL"]


def test_multiclass_train_predict_evaluate(tmp_path, files):
    _, table = files
    run = tmp_path / "run"
    data = {"path": str(table), "target_columns": ["SOL_classification"]}
    result = runner.invoke(app, ["train", recipe(tmp_path, data, seeds=(0, 1)), "--out", str(run)])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "'SOL_classification' (multiclass: (A) low, (B) medium, (C) high)" in flat
    assert "test cross_entropy:" in flat
    ckpt = load_checkpoint(run / "seed_0" / "best.pt")
    assert ckpt["task"] == "multiclass" and ckpt["classes"] == [list(CLASSES)]
    splits = json.loads((run / "splits.json").read_text())
    counts = [splits["stats"][p]["tasks"]["SOL_classification"]["class_counts"]
              for p in ("train", "val", "test")]
    assert [sum(c[k] for c in counts) for k in CLASSES] == [12, 12, 12]  # per-class statistics
    header = "metrics.csv header"
    assert (run / "seed_0" / "metrics.csv").read_text().startswith(
        "epoch,train_loss,val_cross_entropy,val_accuracy,val_balanced_accuracy,val_roc_auc,"
        "val_macro_f1"), header

    probability = [f"SOL_classification_{c}" for c in CLASSES]
    members = []
    for seed in (0, 1):
        result = runner.invoke(app, ["predict", str(run / f"seed_{seed}" / "best.pt"), str(table),
                                     "-j", "1", "--batch-size", "5"])
        assert result.exit_code == 0, result.output
        members.append(np.array([[float(r[c]) for c in probability]
                                 for r in csv_rows(result.stdout)]))
    result = runner.invoke(app, ["predict", str(run), str(table), "-j", "1"])
    rows = csv_rows(result.stdout)
    assert list(rows[0])[5:] == [*probability, "SOL_classification_pred",
                                 *(f"{c}_std" for c in probability), "molsam_train_similarity",
                                 "molsam_train_neighbors", "molsam_error"]
    mean = np.array([[float(r[c]) for c in probability] for r in rows])
    std = np.array([[float(r[f"{c}_std"]) for c in probability] for r in rows])
    np.testing.assert_allclose(mean.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(mean, np.mean(members, axis=0), atol=1e-6)
    np.testing.assert_allclose(std, np.std(members, axis=0), atol=1e-6)
    assert [r["SOL_classification_pred"] for r in rows] == [CLASSES[i] for i in mean.argmax(1)]

    out = tmp_path / "scores.json"
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(table), "-o", str(out),
                                 "-j", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    for name in ("cross_entropy", "accuracy", "balanced_accuracy", "roc_auc", "macro_f1"):
        assert name in result.output
    scores = json.loads(out.read_text())["ensemble"]["tasks"]["SOL_classification"]
    y = np.array([CLASSES.index(r["SOL_classification"]) for r in rows])
    assert scores["accuracy"] == pytest.approx(np.mean(mean.argmax(1) == y))
    assert scores["cross_entropy"] == pytest.approx(skm.log_loss(y, mean), rel=1e-5)
    assert scores["roc_auc"] == pytest.approx(
        skm.roc_auc_score(y, mean, multi_class="ovr"), rel=1e-5)
    assert scores["macro_f1"] == pytest.approx(skm.f1_score(y, mean.argmax(1), average="macro"))
    # A file without '(A) low' labels is coded with the model's classes, not its own.
    subset = tmp_path / "no_low.csv"
    kept = [line for line in table.read_text().splitlines() if "(A) low" not in line]
    subset.write_text("\n".join(kept) + "\n")
    result = runner.invoke(app, ["evaluate", str(run / "seed_0" / "best.pt"), "--data",
                                 str(subset), "-o", str(out), "-j", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    keep = y != 0
    scores = json.loads(out.read_text())["members"][0]["metrics"]["tasks"]["SOL_classification"]
    assert scores["accuracy"] == pytest.approx(np.mean(members[0][keep].argmax(1) == y[keep]))


def test_integer_labels_declared_multiclass_featurize(tmp_path):
    rows = "".join(f"{'C' * (i % 5 + 1)}O{'C' * (i // 5)},{i % 3 * 5}\n" for i in range(18))
    path = tmp_path / "grades.csv"
    path.write_text("smiles,grade\n" + rows)
    out = tmp_path / "f"
    result = runner.invoke(app, ["featurize", str(path), "--task", "multiclass", "--split",
                                 "random", "-o", str(out), "-j", "1"])
    assert result.exit_code == 0, result.output
    assert "'grade' (multiclass: 0, 5, 10)" in " ".join(result.output.split())
    stats = json.loads((out / "splits.json").read_text())["stats"]
    counts = [stats[p]["tasks"]["grade"]["class_counts"] for p in ("train", "val", "test")]
    assert [sum(c[k] for c in counts) for k in ("0", "5", "10")] == [6, 6, 6]
    # Without --task the same integers are a regression target, as before.
    result = runner.invoke(app, ["featurize", str(path), "--split", "random",
                                 "-o", str(tmp_path / "g"), "-j", "1"])
    assert result.exit_code == 0 and "'grade' (regression)" in result.output


def test_two_multiclass_targets_train_and_predict(tmp_path, files):
    _, table = files
    molecules = csv_rows(table.read_text())
    path = tmp_path / "two.csv"
    path.write_text("smiles,sol,parity\n" + "".join(
        f"{r['smiles']},{r['SOL_classification']},{'' if i % 7 == 0 else 'odd' if i % 2 else 'even'}\n"
        for i, r in enumerate(molecules)))
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", recipe(tmp_path, {"path": str(path)}), "--out", str(run)])
    assert result.exit_code == 0, result.output
    ckpt = load_checkpoint(run / "seed_0" / "best.pt")
    assert ckpt["target_names"] == ["sol", "parity"]
    assert ckpt["classes"] == [list(CLASSES), ["even", "odd"]]
    assert ckpt["model_config"]["num_tasks"] == 5  # 3 + 2 logits
    result = runner.invoke(app, ["predict", str(run), str(path), "-j", "1"])
    rows = csv_rows(result.stdout)
    assert list(rows[0])[3:] == [*(f"sol_{c}" for c in CLASSES), "sol_pred", "parity_even",
                                 "parity_odd", "parity_pred", "molsam_train_similarity",
                                 "molsam_train_neighbors", "molsam_error"]
    for row in rows:
        assert float(row["parity_even"]) + float(row["parity_odd"]) == pytest.approx(1, abs=1e-6)
        best = "even" if float(row["parity_even"]) > float(row["parity_odd"]) else "odd"
        assert row["parity_pred"] == best
