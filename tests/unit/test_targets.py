"""Target inference (ID and name columns never targets, ambiguity is an error) and multiclass
labels (sorted classes, codes, metrics, loss)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn import metrics as skm

from molsam.data.table import read_table
from molsam.data.targets import is_id_name
from molsam.errors import InputError
from molsam.train.inference import to_output_units
from molsam.train.losses import masked_loss
from molsam.train.metrics import task_metrics
from tests.conftest import write_csv
from tests.solubility import write_solubility_csv, write_solubility_sdf


@pytest.mark.parametrize("name", ["ID", "id", "mol_id", "CompoundID", "NAME", "Compound Name",
                                  "CAS No", "index", "Unnamed: 0", "canonical_smiles",
                                  "Molecule ChEMBL ID"])
def test_id_and_name_columns_by_name(name):
    assert is_id_name(name)


@pytest.mark.parametrize("name", ["SOL", "SOL_classification", "p_np", "Refractive Index",
                                  "Number of rings", "HIV_active", "NR-AR", "Class", "pIC50",
                                  "measured log solubility in mols per litre", "tox, liver"])
def test_targets_are_not_taken_for_ids(name):
    assert not is_id_name(name)


def test_issue_csv_without_targets_is_ambiguous_and_never_trains_on_id(tmp_path):
    sdf = write_solubility_sdf(tmp_path / "sol.sdf", n=12, bad_record=None)
    path = write_solubility_csv(sdf, tmp_path / "sol.csv")
    with pytest.raises(InputError) as info:
        read_table(path)
    message = str(info.value)
    assert "\n" not in message and "--targets" in message and "data.target_columns" in message
    assert "'SOL' (numbers)" in message and "'SOL_classification' (3 class labels)" in message
    assert "'ID'" not in message and "'NAME'" not in message


def test_inference_ignores_ids_by_content_and_says_why(tmp_path):
    rows = "".join(f"{i},mol {i} x,C{'C' * (i % 4)}O,{i % 2},{0.5 * i}\n" for i in range(1, 9))
    path = write_csv(tmp_path / "t.csv", "position,label,smiles,active,weight\n" + rows)
    table = read_table(path)
    assert table.target_names == ["active", "weight"] and table.task == "regression"
    assert "in sequence" in table.ignored["position"]
    assert "names, not class labels" in table.ignored["label"]
    # The issue's file with only numbers left: ID and NAME ignored, SOL is the target.
    path = write_csv(tmp_path / "s.csv", "ID,NAME,smiles,SOL\n1,a,CCO,0.5\n2,b,CCN,1.5\n3,c,CCC,2\n")
    table = read_table(path)
    assert table.target_names == ["SOL"] and set(table.ignored) == {"ID", "NAME"}


def test_text_labels_become_sorted_classes(tmp_path):
    path = write_csv(tmp_path / "t.csv", "smiles,SOL_classification\nCCO,(C) high\nCCN,(A) low\n"
                     "CCC,\nCCCC,(B) medium\nCCCO,(A) low\nCCCN,(C) high\nOCCO,(B) medium\n")
    table = read_table(path)
    assert table.task == "multiclass" and table.classes == [["(A) low", "(B) medium", "(C) high"]]
    codes = table.targets[:, 0]
    assert codes[[0, 1, 3]].tolist() == [2.0, 0.0, 1.0] and math.isnan(codes[2])
    # A model's classes code another file's labels; a label it does not know is an error.
    other = write_csv(tmp_path / "o.csv", "smiles,SOL_classification\nCCO,(B) medium\nCC,x\n")
    with pytest.raises(InputError, match=r"o.csv: line 3, column 'SOL_classification': 'x' is "
                                         r"not one of the classes \('\(A\) low'"):
        read_table(other, target_columns=["SOL_classification"], task="multiclass",
                   classes=[["(A) low", "(B) medium", "(C) high"]])


def test_integer_labels_declared_multiclass(tmp_path):
    path = write_csv(tmp_path / "t.csv", "smiles,grade\nCCO,2\nCCN,0\nCCC,10\nCCCC,2.0\n")
    table = read_table(path, task="multiclass")
    assert table.classes == [["0", "2", "10"]] and table.targets[:, 0].tolist() == [1, 0, 2, 1]
    bad = write_csv(tmp_path / "b.csv", "smiles,grade\nCCO,2\nCCN,0.5\n")
    with pytest.raises(InputError, match=r"b.csv: line 3, column 'grade': '0.5' is not a class"):
        read_table(bad, target_columns=["grade"], task="multiclass")


def test_text_and_numeric_targets_together_are_refused(tmp_path):
    path = write_csv(tmp_path / "t.csv", "smiles,a,b\nCCO,x,1\nCCN,y,2\nCC,x,3\nCCC,y,4\n")
    with pytest.raises(InputError, match=r"'b' hold numbers but 'a' hold class labels"):
        read_table(path, target_columns=["a", "b"])


def test_multiclass_metrics_against_sklearn():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(40, 4))
    y = np.concatenate([np.arange(4), rng.integers(0, 4, 36)]).astype(float)
    second = rng.integers(0, 2, 40).astype(float)
    second[:5] = np.nan
    raw = np.concatenate([logits, rng.normal(size=(40, 2))], axis=1)
    p = to_output_units(raw, "multiclass", None, [4, 2])
    np.testing.assert_allclose(p[:, :4].sum(axis=1), 1.0)
    scores = task_metrics(np.stack([y, second], 1), p, "multiclass", ["a", "b"],
                          classes=[list("wxyz"), ["n", "m"]])
    a = scores["tasks"]["a"]
    yi = y.astype(int)
    assert a["roc_auc"] == pytest.approx(skm.roc_auc_score(yi, p[:, :4], multi_class="ovr"))
    assert a["cross_entropy"] == pytest.approx(skm.log_loss(yi, p[:, :4]))
    assert a["accuracy"] == pytest.approx(np.mean(p[:, :4].argmax(1) == yi))
    assert a["macro_f1"] == pytest.approx(skm.f1_score(yi, p[:, :4].argmax(1), average="macro"))
    assert a["balanced_accuracy"] == pytest.approx(
        skm.balanced_accuracy_score(yi, p[:, :4].argmax(1)))
    b, keep = scores["tasks"]["b"], ~np.isnan(second)  # missing labels masked, own block
    assert b["cross_entropy"] == pytest.approx(skm.log_loss(second[keep].astype(int), p[keep, 4:]))
    # A class absent from the labels: the macro ROC-AUC averages the classes present.
    only = np.where(yi == 3, 2, yi)
    partial = task_metrics(only[:, None].astype(float), p[:, :4], "multiclass", ["a"],
                           classes=[list("wxyz")])["tasks"]["a"]["roc_auc"]
    expected = np.mean([skm.roc_auc_score(only == c, p[:, c]) for c in range(3)])
    assert partial == pytest.approx(expected)


def test_multiclass_loss_is_masked_cross_entropy_per_target():
    torch.manual_seed(0)
    out = torch.randn(6, 5)
    targets = torch.tensor([[0, 1], [2, float("nan")], [1, 0], [float("nan"), 1], [2, 1], [0, 0]])
    loss = masked_loss(out, targets, "multiclass", [3, 2])
    terms = []
    for t, (lo, hi) in enumerate([(0, 3), (3, 5)]):
        keep = ~torch.isnan(targets[:, t])
        terms.append(F.cross_entropy(out[keep, lo:hi], targets[keep, t].long(), reduction="none"))
    expected = torch.cat(terms).mean()
    torch.testing.assert_close(loss, expected)


def test_recipe_metric_must_fit_the_multiclass_task():
    from molsam.config import recipe_from_dict
    from molsam.errors import ConfigError

    ok = recipe_from_dict({"data": {"path": "x", "task": "multiclass"},
                           "train": {"metric": "macro_f1"}})
    assert ok.data.task == "multiclass" and ok.train.metric == "macro_f1"
    with pytest.raises(ConfigError, match="'rmse' does not apply to multiclass; valid: "
                                          "cross_entropy, accuracy, balanced_accuracy"):
        recipe_from_dict({"data": {"path": "x", "task": "multiclass"}, "train": {"metric": "rmse"}})
