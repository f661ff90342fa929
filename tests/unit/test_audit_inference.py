"""Inference and data properties the audit found untested: batches smaller than the data keep
rows in order (predict and evaluate), the deterministic scaffold split equals DeepChem's
ScaffoldSplitter written independently here, and every benchmark suite shipped loads."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from rdkit import Chem, RDLogger
from rdkit.Chem.Scaffolds import MurckoScaffold
from sklearn import metrics as skm

from molsam.benchmark import build_cell_recipe, cells, load_suite
from molsam.data.splits import make_split
from molsam.evaluate import evaluate
from molsam.predict import load_ensemble, predict_csv, predict_smiles
from tests.conftest import ROOT, SHARED_DATA, write_csv
from tests.unit.test_predict import SMILES, labels, make_run, read_rows, reference


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_predict_with_batches_smaller_than_the_data_keeps_row_order(tmp_path, task):
    run, models = make_run(tmp_path / "run", task, steps=3)
    ensemble = load_ensemble([run], device="cpu")
    expected = reference(models, SMILES, task, ensemble.scalers[0])[0, :, 0]
    assert len(np.unique(np.round(expected, 6))) > len(SMILES) // 2  # rows tell apart
    for batch_size in (1, 3, 7):
        found = predict_smiles(ensemble, SMILES, batch_size=batch_size)
        np.testing.assert_allclose(found.mean[:, 0], expected, rtol=0, atol=1e-6)
    inp = write_csv(tmp_path / "in.csv", "smiles\n" + "\n".join(SMILES) + "\n")
    predict_csv(ensemble, inp, tmp_path / "out.csv", batch_size=2, block_rows=11, workers=1)
    rows = read_rows(tmp_path / "out.csv")
    assert [r[0] for r in rows[1:]] == SMILES
    np.testing.assert_allclose([float(r[1]) for r in rows[1:]], expected, rtol=0, atol=1e-6)


def test_evaluate_with_batches_smaller_than_the_data(tmp_path):
    run, models = make_run(tmp_path / "run", "classification", steps=3)
    y = labels("classification")
    p = reference(models, SMILES, "classification")[0, :, 0]
    for batch_size in (2, 5):
        result = evaluate([run], split="all", batch_size=batch_size, device="cpu", workers=1)
        assert result.n == len(SMILES)
        assert result.final["tasks"]["y"]["roc_auc"] == pytest.approx(
            skm.roc_auc_score(y, p), abs=1e-9)
        assert result.final["tasks"]["y"]["accuracy"] == pytest.approx(
            skm.accuracy_score(y, p >= 0.5))


def _deepchem_scaffold_split(mols: list[Chem.Mol], frac_train: float = 0.8,
                             frac_valid: float = 0.1) -> tuple[list[int], list[int], list[int]]:
    """DeepChem's ScaffoldSplitter, written from its rules (molsam.data.splits) on RDKit directly:
    Bemis-Murcko scaffold SMILES without chirality; sets sorted by (size, first index), largest
    first; a set goes to train unless train would pass 80%, else to valid unless train + valid
    would pass 90%, else to test."""
    scaffolds: dict[str, list[int]] = {}
    for i, mol in enumerate(mols):
        scaffold = MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False)
        scaffolds.setdefault(scaffold, []).append(i)
    ordered = sorted(scaffolds.values(), key=lambda s: (len(s), s[0]), reverse=True)
    train_cutoff = frac_train * len(mols)
    valid_cutoff = (frac_train + frac_valid) * len(mols)
    train, valid, test = [], [], []
    for group in ordered:
        if len(train) + len(group) > train_cutoff:
            if len(train) + len(valid) + len(group) > valid_cutoff:
                test += group
            else:
                valid += group
        else:
            train += group
    return train, valid, test


def test_deterministic_scaffold_split_equals_deepchem_on_bbbp_index_for_index():
    with open(SHARED_DATA / "bbbp.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    RDLogger.DisableLog("rdApp.*")  # bbbp holds a few SMILES RDKit rejects (left out below)
    try:
        parsed = [(r["smiles"], Chem.MolFromSmiles(r["smiles"])) for r in rows]
    finally:
        RDLogger.EnableLog("rdApp.*")
    smiles = [text for text, mol in parsed if mol is not None]
    ours = make_split("scaffold", smiles, (0.8, 0.1, 0.1), seed=0)
    theirs = _deepchem_scaffold_split([mol for _, mol in parsed if mol is not None])
    assert [len(p) for p in theirs] == [1631, 204, 204]
    assert sorted(ours.train.tolist()) == sorted(theirs[0])
    assert sorted(ours.val.tolist()) == sorted(theirs[1])
    assert sorted(ours.test.tolist()) == sorted(theirs[2])


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks" / "suites").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_benchmark_suite_loads(path):
    suite = load_suite(path)
    assert suite.optimizers and suite.seeds and suite.datasets
    # Every cell's recipe validates too (dataset recipe + suite, variant and optimizer keys), so
    # a suite cannot fail hours into a grid on a cell nobody built before.
    for cell in cells(suite):
        recipe = build_cell_recipe(suite, cell)
        assert recipe.optim.name == suite.algorithm(cell.optimizer)
        assert recipe.train.seeds == (cell.seed,)
