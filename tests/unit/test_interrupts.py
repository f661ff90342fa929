"""Ctrl-C during featurization: the parent stops at once, no worker prints a traceback, and the
commands say what an interrupt left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from molsam.cli.train import interrupted_message
from tests.conftest import ROOT

# Each round sends SIGINT to the whole process group (as a terminal's Ctrl-C does) at a
# different moment: while the pool forks, while the initializers run, mid-featurization.
CHILD = textwrap.dedent("""
    import os, signal, sys, threading, time
    from molsam.chem.parallel import featurize_many
    # A process started from a background job (nohup, `cmd &` in a script, some CI runners)
    # inherits SIGINT as ignored and Python then installs no handler; a terminal user's molsam
    # has Python's default one, which is what this test is about.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    smiles = ["CC(C)Cc1ccc(cc1)C(C)C(=O)O", "c1ccccc1O", "CCN(CC)CC"] * 1500
    outcomes = []
    for delay in (0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3):
        timer = threading.Timer(delay, os.killpg, (0, signal.SIGINT))
        try:
            timer.start()
            featurize_many(smiles, 8, workers=2, chunk_size=64)
            timer.join()
            time.sleep(1.0)  # finished first: the signal must still reach this process
            outcomes.append("lost")
        except KeyboardInterrupt:
            outcomes.append("interrupted")
        timer.join()
    print(" ".join(outcomes), flush=True)
""")


def test_ctrl_c_during_pool_start_and_featurization_stops_cleanly(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120,
        start_new_session=True,  # its own process group: the SIGINTs never reach pytest
    )
    outcomes = child.stdout.split()
    # Every interrupt was raised in the parent (none swallowed by a dying worker, no hang).
    assert child.returncode == 0, child.stderr
    assert outcomes == ["interrupted"] * 7, outcomes
    assert "Traceback" not in child.stderr and "KeyboardInterrupt" not in child.stderr, child.stderr


def test_featurize_and_predict_cli_interrupts_are_one_line(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from molsam.cli.main import app

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    data = tmp_path / "mols.csv"
    data.write_text("smiles,y\nCCO,1\nCCN,0\n")
    monkeypatch.setattr("molsam.data.pipeline.load_store", interrupt)
    result = CliRunner().invoke(app, ["featurize", str(data), "--out", str(tmp_path / "out")])
    assert result.exit_code == 130
    assert "interrupted: nothing was written" in result.output
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr("molsam.predict.load_ensemble", interrupt)
    result = CliRunner().invoke(app, ["predict", "x.pt", str(data), "-o", str(tmp_path / "p.csv")])
    assert result.exit_code == 130 and "interrupted: no output written" in result.output


def test_resume_hint_points_only_at_a_resumable_folder(tmp_path):
    recipe = Path("recipes/quickstart.yaml")
    fresh = tmp_path / "run"
    # Interrupted while featurizing: no run folder yet, so no resume command.
    message = interrupted_message(fresh, recipe, fresh)
    assert "--resume" not in message
    assert f"molsam train {recipe} --out {fresh}" in message
    fresh.mkdir()
    (fresh / "recipe.yaml").write_text("data: {path: x.csv}\n")
    assert "--resume" not in interrupted_message(fresh, recipe, fresh)  # no splits.json yet
    (fresh / "splits.json").write_text("{}")
    assert f"molsam train --resume {fresh}" in interrupted_message(fresh, recipe, None)
