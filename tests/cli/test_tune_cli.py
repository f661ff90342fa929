"""`molsam tune` through Typer's CliRunner: a tiny search, its table and files, `molsam train`
on its best.yaml, bad tune sections, and the one-line error without Optuna."""

from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

from molsam.cli.main import app
from tests.conftest import SHARED_DATA

runner = CliRunner()


def _recipe(tmp_path, tune: str = "{optim.rho: {low: 0.01, high: 0.1, log: true}}"):
    lines = (SHARED_DATA / "esol.csv").read_text().splitlines()[:41]
    (tmp_path / "esol.csv").write_text("\n".join(lines) + "\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "data: {path: esol.csv}\n"
        "split: {method: random, sizes: [0.6, 0.2, 0.2]}\n"
        "model: {hidden: 8, layers: 1, heads: 2}\n"
        "optim: {warmup_epochs: 1}\n"
        "train: {epochs: 1, batch_size: 8, workers: 1}\n"
        f"tune: {tune}\n"
    )
    return recipe


def test_tune_prints_best_trials_and_best_yaml_trains_as_is(tmp_path):
    pytest.importorskip("optuna")
    out = tmp_path / "tune"
    result = runner.invoke(app, ["tune", str(_recipe(tmp_path)), "--trials", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "trial 0 complete" in result.output and "trial 1 complete" in result.output
    assert "best trials of study 'molsam' (minimize val rmse)" in result.output
    assert "optim.rho" in result.output and "2 complete" in result.output
    for name in ("best.yaml", "trials.csv", "history.png", "importance.png", "study.journal"):
        assert (out / name).is_file(), name
    run = runner.invoke(app, ["train", str(out / "best.yaml"), "--out", str(tmp_path / "run")])
    assert run.exit_code == 0, run.output
    assert "test rmse:" in run.output


@pytest.mark.parametrize(
    ("tune", "expected"),
    [
        ("{optim.rhoo: [0.01]}", "error: tune.optim.rhoo: unknown key (did you mean 'optim.rho'?)"),
        ("{split.seed: [0, 1]}", "error: tune.split.seed: cannot be searched"),
        ("{model.dropout: {low: 0, high: 1.0}}",
         "error: tune.model.dropout.high: expected a number in [0, 1), got 1.0"),
        ("{optim.rho: {low: 0, high: 0.1, log: true}}",
         "error: tune.optim.rho.low: a log range needs low > 0, got 0"),
        ("{model.layers: {low: 4, high: 2}}", "error: tune.model.layers: low 4 is above high 2"),
        ("{model.pooling: [mean, max]}",
         "error: tune.model.pooling[1]: 'max' is not one of mean, sum, attention"),
    ],
)
def test_bad_tune_sections_are_one_line_errors(tmp_path, tune, expected):
    out = tmp_path / "tune"
    result = runner.invoke(app, ["tune", str(_recipe(tmp_path, tune)), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.output.strip().startswith(expected) and "\n" not in result.output.strip()
    assert not out.exists()  # rejected before any work


def test_without_optuna_tune_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError
    result = runner.invoke(app, ["tune", str(_recipe(tmp_path)), "--out", str(tmp_path / "t")])
    assert result.exit_code == 2
    assert result.output.strip() == "error: molsam tune needs Optuna: pip install molsam[tune]"


def test_sigterm_inside_a_trial_ends_like_ctrl_c(tmp_path, monkeypatch):
    pytest.importorskip("optuna")
    import os
    import signal

    from molsam.train.loop import ReplicateTrainer
    from molsam.tune import default_storage, load_study

    original = ReplicateTrainer._after_epoch
    calls = []

    def terminate_in_second_trial(self, record):
        original(self, record)
        calls.append(record.epoch)
        if len(calls) == 2:  # epochs: 1 per trial, so this is inside trial 1
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(ReplicateTrainer, "_after_epoch", terminate_in_second_trial)
    out = tmp_path / "tune"
    before = signal.getsignal(signal.SIGTERM)
    result = runner.invoke(app, ["tune", str(_recipe(tmp_path)), "--trials", "5", "--out", str(out)])
    assert result.exit_code == 130, result.output
    assert "interrupted" in result.output and (out / "best.yaml").is_file()
    states = [t.state.name for t in load_study(default_storage(out)).trials]
    assert states == ["COMPLETE", "FAIL"]
    assert signal.getsignal(signal.SIGTERM) == before  # the previous handler is back


def test_jobs_runs_trials_in_two_processes_and_prints_each(tmp_path):
    pytest.importorskip("optuna")
    from molsam.tune import default_storage, load_study

    out = tmp_path / "tune"
    result = runner.invoke(app, ["tune", str(_recipe(tmp_path)), "--trials", "3", "--jobs", "2",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    for number in range(3):  # the parent prints the trials its workers ran
        assert f"trial {number} complete" in result.output
    assert "3 trial(s) run now; study totals: 3 complete" in result.output
    assert all(t.user_attrs["worker"] for t in load_study(default_storage(out)).trials)
    bad = runner.invoke(app, ["tune", str(_recipe(tmp_path)), "--jobs", "0", "--out", str(out)])
    assert bad.exit_code == 2 and "--jobs" in bad.output
