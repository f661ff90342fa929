"""`molsam tune --jobs 2` on a tiny fixture: one shared trial budget, outputs written once by the
parent, and a study without RUNNING trials after a worker dies or the parent is stopped.

Each test starts two worker processes (spawn: a fresh interpreter imports torch), so they take a
few seconds each; the fixture keeps the trials themselves to a second or two."""

from __future__ import annotations

import csv
import os
import signal
import time

import pytest

optuna = pytest.importorskip("optuna")  # the `tune` extra; `make test` installs it

from optuna.trial import TrialState  # noqa: E402

import molsam.tune as tune_module  # noqa: E402
from molsam import tune_jobs  # noqa: E402
from molsam.cli.signals import sigterm_as_interrupt as _sigterm_as_interrupt  # noqa: E402
from molsam.errors import ConfigError, MolsamError  # noqa: E402
from molsam.tune import default_storage, load_study, tune_recipe  # noqa: E402
from tests.integration.test_tune import _recipe  # noqa: E402


def _states(study) -> list[str]:
    return [t.state.name for t in study.get_trials(deepcopy=False)]


def test_two_workers_share_the_budget_and_the_parent_writes_once(tmp_path, monkeypatch):
    recipe = _recipe(tmp_path, epochs=1)
    out = tmp_path / "tune"
    writes, finished = [], []
    original = tune_module.write_outputs

    def counting(*args, **kwargs):
        writes.append(len(load_study(default_storage(out)).trials))
        return original(*args, **kwargs)

    monkeypatch.setattr(tune_module, "write_outputs", counting)
    result = tune_recipe(recipe, out, trials=5, jobs=2,
                         on_trial=lambda study, trial: finished.append(trial.number))
    study = load_study(result.storage)
    assert result.storage == str(out / "study.journal")  # a journal file, not SQLite
    assert _states(study) == ["COMPLETE"] * 5 and result.trials_run == 5  # 5 in all, not 5 each
    workers = {t.user_attrs["worker"] for t in study.trials}
    assert len(workers) == 2  # both processes ran trials ...
    assert str(os.getpid()) not in {w.split(":")[1] for w in workers}  # ... and not the parent
    assert sorted(finished) == [0, 1, 2, 3, 4]  # every trial reported to the parent's callback
    assert writes == [5]  # outputs written once, after the last trial
    with open(out / "trials.csv", newline="") as handle:
        assert [r["state"] for r in csv.DictReader(handle)] == ["COMPLETE"] * 5
    assert (out / "best.yaml").is_file() and (out / "history.png").is_file()
    # Distinct sampler seeds per worker: no two trials drew the same point.
    assert len({t.params["optim.rho"] for t in study.trials}) == 5


def test_a_dead_worker_is_reported_and_its_trial_failed(tmp_path):
    recipe = _recipe(tmp_path, epochs=4)
    out = tmp_path / "tune"
    killed = []

    def kill_the_first_worker_seen(info: dict) -> None:
        if killed:
            return
        trial = load_study(default_storage(out)).trials[info["trial"]]
        pid = int(trial.user_attrs["worker"].split(":")[1])
        # The message comes just before the worker writes the epoch's score to the journal; a
        # worker killed while it holds the journal's lock file makes the others wait for
        # Optuna's 30 s stale-lock grace (correct, but slow for a test): kill it mid-epoch.
        time.sleep(0.3)
        os.kill(pid, signal.SIGKILL)  # as the kernel's OOM killer would
        killed.append(pid)

    with pytest.raises(MolsamError, match=r"^worker [12] of 2 \(pid \d+\) died \(signal "
                                          r"SIGKILL\); trial \d+ marked failed; the other workers "
                                          r"were stopped") as info:
        tune_recipe(recipe, out, trials=6, jobs=2, on_epoch=kill_the_first_worker_seen)
    study = load_study(default_storage(out))
    assert "RUNNING" not in _states(study) and len(study.trials) <= 6
    # The trial the worker was running when it died (it may have finished the one whose epoch
    # triggered the kill and started the next during the 0.3 s): failed, and named in the error.
    died = [t for t in study.trials if t.user_attrs.get("error") == "its worker died"]
    assert len(died) == 1 and died[0].state == TrialState.FAIL
    assert int(died[0].user_attrs["worker"].split(":")[1]) == killed[0]
    assert f"trial {died[0].number} marked failed" in str(info.value)
    assert (out / "trials.csv").is_file()  # outputs written before the error


def test_sigterm_to_the_parent_stops_the_workers_cleanly(tmp_path, monkeypatch):
    monkeypatch.setattr(tune_jobs, "INTERRUPT_GRACE_S", 0.5)  # no Ctrl-C reaches the workers here
    # Trials long enough that the ones running at the first epoch's SIGTERM cannot finish within
    # the grace (with 4 epochs, an idle machine sometimes completed all 6 first).
    recipe = _recipe(tmp_path, epochs=16)
    out = tmp_path / "tune"

    def terminate_self(info: dict) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # a scheduler stopping the search

    with pytest.raises(KeyboardInterrupt) as info, _sigterm_as_interrupt():
        tune_recipe(recipe, out, trials=6, jobs=2, on_epoch=terminate_self)
    assert info.value.tune_result.interrupted
    study = load_study(default_storage(out))
    states = _states(study)
    assert states and "RUNNING" not in states and "FAIL" in states  # stopped mid-trial
    assert (out / "trials.csv").is_file()
    tune_recipe(recipe, out, trials=1)  # and the study continues
    assert _states(load_study(default_storage(out)))[-1] == "COMPLETE"


def test_sqlite_is_refused_for_several_workers(tmp_path):
    recipe = _recipe(tmp_path, epochs=1)
    with pytest.raises(ConfigError, match=r"^--jobs 2: sqlite:///.*study\.db is SQLite, which "
                                          r"Optuna advises against for several processes"):
        tune_recipe(recipe, tmp_path / "t", trials=2, jobs=2,
                    storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert not (tmp_path / "study.db").exists()


def test_budget_claims_are_exact_and_seeds_distinct():
    import multiprocessing

    claimed = multiprocessing.get_context("spawn").Value("i", 0)
    taken = [tune_jobs.claim_trial(claimed, 3, None) for _ in range(5)]
    assert taken == [True, True, True, False, False] and claimed.value == 3
    assert not tune_jobs.claim_trial(multiprocessing.Value("i", 0), None, deadline=0.0)
    assert tune_jobs.worker_seed(0, 0) != tune_jobs.worker_seed(0, 1)
    assert tune_jobs.worker_seed(0, 1) == tune_jobs.worker_seed(0, 1)


def test_sigterm_to_the_command_stops_quickly_without_worker_tracebacks(tmp_path):
    """`molsam tune --jobs 2` as a scheduler stops it: SIGTERM once trials are under way. The
    workers must stop at once (no waiting for a Ctrl-C they never got), print no Optuna
    traceback, and leave no trial RUNNING, whenever the signal lands (mid-training or between
    trials: short trials make both likely)."""
    import subprocess
    import sys

    from molsam.config import save_recipe

    recipe_path = tmp_path / "recipe.yaml"
    save_recipe(_recipe(tmp_path, epochs=3), recipe_path)
    out = tmp_path / "tune"
    command = [sys.executable, "-m", "molsam", "tune", str(recipe_path), "--trials", "400",
               "--jobs", "2", "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    lines = []
    for line in process.stdout:  # wait until trials are being completed
        lines.append(line)
        if "complete" in line and sum("complete" in seen for seen in lines) >= 3:
            break
    process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    rest, _ = process.communicate(timeout=120)
    stopped_after = time.monotonic() - started
    output = "".join(lines) + rest
    assert "Traceback" not in output, output[-3000:]
    assert "interrupted" in output
    states = _states(load_study(default_storage(out)))
    assert "RUNNING" not in states and len(states) < 400
    assert stopped_after < 15, stopped_after  # measured ~5 s on a loaded 2-core machine
