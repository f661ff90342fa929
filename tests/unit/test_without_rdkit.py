"""What a GPU machine needs (model, store loading, training, checkpoints, prediction from a store)
imports and runs without RDKit: the child process below blocks every `rdkit` import."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT

SMILES = ["CCO", "c1ccccc1", "CCN", "CC(=O)O", "CCCl", "c1ccncc1", "C1CCCCC1", "OCC(O)CO",
          "CC#N", "CCOC(=O)C", "c1ccc(O)cc1", "CN(C)C"]

CHILD = textwrap.dedent(
    """
    import sys
    sys.modules["rdkit"] = None  # `import rdkit` (and every rdkit.*) now raises ImportError
    from pathlib import Path

    import numpy as np

    from molsam.config import recipe_from_dict
    from molsam.data.splits import SplitIndices
    from molsam.data.store import GraphStore
    from molsam.predict import load_ensemble
    from molsam.train.checkpoint import load_checkpoint
    from molsam.train.loop import ReplicateTrainer

    store_path, out = Path(sys.argv[1]), Path(sys.argv[2])
    store = GraphStore.load(store_path)
    source = store.batch_source("cpu")
    recipe_dict = {
        "data": {"path": str(store_path)},
        "model": {"hidden": 8, "layers": 1, "heads": 2, "dropout": 0.0, "pe_steps": 4},
        "optim": {"schedule": "constant"},
        "train": {"epochs": 1, "batch_size": 4, "device": "cpu"},
    }
    everything = np.arange(len(store))
    split = SplitIndices(everything[:8], everything[8:10], everything[10:])
    trainer = ReplicateTrainer(
        recipe_from_dict(recipe_dict), recipe_dict, source, split, task="classification",
        target_names=store.target_names, seed=0, out_dir=out, device=__import__("torch").device("cpu"),
    )
    trainer.fit()
    assert isinstance(load_checkpoint(out / "best.pt")["versions"]["rdkit"], str)
    ensemble = load_ensemble([out / "best.pt"], device="cpu")
    predictions = ensemble.predict_source(source, everything)
    assert predictions.shape == (1, len(store), 1) and np.isfinite(predictions).all()
    loaded = sorted(k for k, v in sys.modules.items() if k.startswith("rdkit") and v is not None)
    assert not loaded, loaded
    print("trained and predicted without rdkit")
    """
)


def test_train_and_predict_from_a_store_without_rdkit(tmp_path):
    pytest.importorskip("rdkit")  # only to build the store here; the child never imports it
    import numpy as np

    from molsam.data.store import GraphStore

    labels = np.array([[i % 2] for i in range(len(SMILES))], dtype=np.float32)
    store = GraphStore.from_smiles(SMILES, labels, target_names=["y"], task="classification",
                                   rwse_steps=4, workers=1)
    store_path = store.save(tmp_path / "store.pt")
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(store_path), str(tmp_path / "run")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trained and predicted without rdkit" in done.stdout
