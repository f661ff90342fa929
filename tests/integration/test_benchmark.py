"""`molsam benchmark`: a tiny real grid (2 datasets x 2 optimizers x 1 seed, tiny model) writes
the table and the plot, shares one split per dataset across optimizers, reproduces its numbers,
and resumes an interrupted grid without retraining finished cells."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from molsam.benchmark import load_suite, run_benchmark, suite_from_dict
from molsam.cli.main import app
from molsam.config import OPTIMIZERS
from molsam.errors import ConfigError
from tests.conftest import SHARED_DATA

TINY = ["model.hidden=16", "model.layers=1", "model.heads=2", "model.pe_steps=4",
        "train.epochs=2", "train.patience=null", "train.workers=1"]


def _tiny_csv(source: Path, dest: Path, n: int, classification: bool) -> Path:
    """n real molecules; for a classification set, positives and negatives alternate so every
    scaffold part holds both classes (ROC-AUC is defined on the tiny test part)."""
    with open(source, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        rows = list(reader)
    if classification:
        pos = [r for r in rows if r[1] == "1"][: n // 2]
        neg = [r for r in rows if r[1] == "0"][: n // 2]
        rows = [r for pair in zip(pos, neg) for r in pair]
    else:
        rows = rows[:n]
    with open(dest, "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    return dest


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory) -> Path:
    """Two tiny datasets with their recipes and a suite file, in a folder of their own; the
    recipe and data paths are relative, so they must resolve against the suite's folder."""
    root = tmp_path_factory.mktemp("suite")
    (root / "recipes").mkdir()
    (root / "data").mkdir()
    _tiny_csv(SHARED_DATA / "bbbp.csv", root / "data" / "bbbp40.csv", 48, True)
    _tiny_csv(SHARED_DATA / "esol.csv", root / "data" / "esol40.csv", 40, False)
    (root / "recipes" / "bbbp.yaml").write_text(
        "data: {path: ../data/bbbp40.csv, task: classification}\nsplit: {method: scaffold}\n")
    # data.path is set by the suite for this one (as the paper suite does for sider)
    (root / "recipes" / "esol.yaml").write_text(
        "data: {path: nowhere.csv, task: regression}\nsplit: {method: scaffold}\n")
    suite = root / "suite.yaml"
    suite.write_text(
        "datasets:\n"
        "  bbbp: recipes/bbbp.yaml\n"
        "  esol: {recipe: recipes/esol.yaml, set: [data.path=data/esol40.csv]}\n"
        "optimizers: [adam, graphsam]\n"
        "seeds: [0]\n"
        f"set: [{', '.join(TINY)}]\n"
        "optimizer_set: {graphsam: [optim.rho=0.05]}\n"
        "reference: {bbbp: 0.71}\n"
    )
    return suite


@pytest.fixture(scope="module")
def finished(suite_file, tmp_path_factory) -> Path:
    """One uninterrupted run of the grid."""
    out = tmp_path_factory.mktemp("bench") / "full"
    run_benchmark(load_suite(suite_file), out)
    return out


def _cells(out: Path) -> dict[tuple[str, str, str], dict]:
    with open(out / "cells.csv", newline="") as handle:
        return {(r["dataset"], r["optimizer"], r["seed"]): r for r in csv.DictReader(handle)}


def _split_indices(cell_dir: Path) -> dict[str, list[int]]:
    record = json.loads((cell_dir / "splits.json").read_text())
    return {part: record[part]["indices"] for part in ("train", "val", "test")}


def test_grid_writes_table_plot_and_shares_one_split_per_dataset(finished):
    with open(finished / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["dataset"], r["optimizer"]) for r in rows] == [
        ("bbbp", "adam"), ("bbbp", "graphsam"), ("esol", "adam"), ("esol", "graphsam")]
    for row in rows:
        assert row["n"] == "1" and row["test_mean"] != "" and float(row["graphs_per_s"]) > 0
        assert row["metric"] == ("roc_auc" if row["dataset"] == "bbbp" else "rmse")
    # the baseline's time relative to itself is exactly 1
    assert all(float(r["epoch_time_vs_baseline"]) == 1.0 for r in rows if r["optimizer"] == "adam")
    markdown = (finished / "results.md").read_text()
    assert "| bbbp | roc_auc ↑ |" in markdown and "| esol | rmse ↓ |" in markdown
    assert "Not run" not in markdown
    assert (finished / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    for dataset in ("bbbp", "esol"):
        adam = finished / "cells" / dataset / "adam" / "seed_0"
        graphsam = finished / "cells" / dataset / "graphsam" / "seed_0"
        assert _split_indices(adam) == _split_indices(graphsam)
        assert len(_split_indices(adam)["test"]) > 0
        # each cell really trained its own optimizer, with its per-optimizer override
        assert "name: adam" in (adam / "recipe.yaml").read_text()
        recipe = (graphsam / "recipe.yaml").read_text()
        assert "name: graphsam" in recipe and "rho: 0.05" in recipe


def test_rerun_with_same_seeds_gives_identical_numbers(suite_file, finished, tmp_path):
    # One dataset keeps the test short; the resume test below also retrains esol cells afresh
    # and compares them with the first run.
    suite = load_suite(suite_file)
    run_benchmark(dataclasses.replace(suite, datasets=suite.datasets[:1]), tmp_path / "again")
    first, second = _cells(finished), _cells(tmp_path / "again")
    assert set(second) == {("bbbp", "adam", "0"), ("bbbp", "graphsam", "0")}
    for key in second:
        assert first[key]["test"] == second[key]["test"] != ""
        assert first[key]["val"] == second[key]["val"]


def test_interrupted_grid_resumes_without_redoing_finished_cells(suite_file, finished, tmp_path):
    out = tmp_path / "interrupted"
    suite = load_suite(suite_file)
    seen: list[str] = []

    def interrupt_third_cell(info: dict) -> None:
        seen.append(info["status"])
        if info["status"] in ("start", "resume"):
            state["cell"] = info["index"]

    def interrupt_after_first_epoch(info: dict) -> None:
        if state.get("cell") == 2 and info.get("done_epoch") and info["epoch"] == 0:
            raise KeyboardInterrupt

    state: dict = {}
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(suite, out, on_cell=interrupt_third_cell,
                      on_progress=interrupt_after_first_epoch)
    third = out / "cells" / "esol" / "adam" / "seed_0"
    assert not (third / "summary.json").exists() and (third / "seed_0" / "last.pt").exists()
    done = [out / "cells" / "bbbp" / o / "seed_0" for o in ("adam", "graphsam")]
    mtimes = {p: p.stat().st_mtime_ns for d in done for p in d.rglob("*") if p.is_file()}

    statuses: list[str] = []
    run_benchmark(suite, out, on_cell=lambda info: statuses.append(info["status"]))
    assert statuses == ["done", "done", "resume", "finished", "start", "finished"]
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # finished cells untouched
    assert _cells(out).keys() == _cells(finished).keys()
    for key, row in _cells(finished).items():
        assert _cells(out)[key]["test"] == row["test"], key  # resumed == uninterrupted
    assert (out / "results.md").read_text().split("\n| dataset | optimizer")[0] == \
        (finished / "results.md").read_text().split("\n| dataset | optimizer")[0]


def test_partial_grid_reports_missing_cells_and_cli_report_only(suite_file, finished, tmp_path):
    out = tmp_path / "partial"
    shutil.copytree(finished, out)
    (out / "cells" / "esol" / "graphsam" / "seed_0" / "summary.json").unlink()
    result = CliRunner().invoke(app, ["benchmark", str(suite_file), "--out", str(out),
                                      "--report-only"])
    assert result.exit_code == 0, result.output
    markdown = (out / "results.md").read_text()
    assert "Not run (1 cells): esol/graphsam/seed 0" in markdown
    assert "| esol | graphsam | 0 | not run |" in markdown


def test_cli_reports_a_bad_suite_in_one_line(tmp_path):
    (tmp_path / "r.yaml").write_text("data: {path: x.csv}\n")
    suite = tmp_path / "bad.yaml"
    suite.write_text("datasets: {a: r.yaml}\noptimizers: [adam, grapsam]\nseeds: [0]\n")
    result = CliRunner().invoke(app, ["benchmark", str(suite), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: optimizers[1]: 'grapsam' is not one of " + ", ".join(OPTIMIZERS))
    assert not (tmp_path / "o").exists()  # refused before any work


def test_cli_report_only_refuses_a_folder_without_cells(suite_file, tmp_path):
    result = CliRunner().invoke(app, ["benchmark", str(suite_file), "--out",
                                      str(tmp_path / "none"), "--report-only"])
    assert result.exit_code == 2
    assert "holds no benchmark cells to report" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_changed_recipe_is_refused_for_a_finished_cell(suite_file, finished, tmp_path):
    out = tmp_path / "changed"
    shutil.copytree(finished, out)
    text = suite_file.read_text().replace("optim.rho=0.05", "optim.rho=0.02")
    changed = suite_file.with_name("changed.yaml")
    changed.write_text(text)
    with pytest.raises(ConfigError, match="optim.rho differ"):
        run_benchmark(load_suite(changed), out)


@pytest.mark.parametrize("raw, message", [
    ({"datasets": {"a": "r.yaml"}, "optimizers": ["adam"], "seeds": [0], "sed": 1},
     "sed: unknown key"),
    ({"datasets": {"a": "r.yaml"}, "optimizers": ["adamw"], "seeds": [0]},
     "optimizers[0]: 'adamw' is not one of"),
    ({"datasets": {"a": "missing.yaml"}, "optimizers": ["adam"], "seeds": [0]},
     "datasets.a.recipe: recipe file not found"),
    ({"datasets": {"a": {"recipe": "r.yaml", "sett": []}}, "optimizers": ["adam"], "seeds": [0]},
     "datasets.a.sett: unknown key"),
    ({"datasets": {"a": "r.yaml"}, "optimizers": ["adam"], "seeds": [0], "set": ["train.seeds=[1]"]},
     "set[0]: train.seeds cannot be overridden"),
    ({"datasets": {"a": "r.yaml"}, "optimizers": ["adam"], "seeds": [0],
      "optimizer_set": {"adam": ["split.sizes=[0.5, 0.25, 0.25]"]}},
     "optimizer_set.adam[0]: split.sizes cannot be overridden"),
    ({"datasets": {"a": "r.yaml"}, "optimizers": ["adam"], "seeds": [0], "set": ["train.epoch=3"]},
     "train.epoch: unknown key"),
    ({"datasets": {"a": "r.yaml"}, "optimizers": ["adam"], "seeds": [-1]},
     "seeds[0]: expected an integer >= 0"),
])
def test_suite_errors_name_the_key(tmp_path, raw, message):
    (tmp_path / "r.yaml").write_text("data: {path: x.csv}\n")
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        suite_from_dict(raw, "suite.yaml", base_dir=tmp_path)


def test_variants_in_parallel_jobs_equal_plain_optimizers_run_serially(suite_file, finished, tmp_path):
    # A variant is a named optimizer setting: graphsam with the same override as the finished
    # grid's graphsam column must give the same numbers, also when two cells train at once in
    # worker processes. Adam cells of both grids must agree as well.
    base = suite_file.parent
    suite = suite_from_dict({
        "datasets": {"bbbp": "recipes/bbbp.yaml"},
        "optimizers": ["adam", "gs_r05"],
        "variants": {"gs_r05": {"optimizer": "graphsam", "set": ["optim.rho=0.05"]}},
        "seeds": [0], "set": TINY,
    }, base_dir=base)
    out = tmp_path / "variants"
    run_benchmark(suite, out, jobs=2)
    got = _cells(out)
    want = _cells(finished)
    assert got[("bbbp", "gs_r05", "0")]["test"] == want[("bbbp", "graphsam", "0")]["test"]
    assert got[("bbbp", "adam", "0")]["test"] == want[("bbbp", "adam", "0")]["test"]
    recipe = (out / "cells" / "bbbp" / "gs_r05" / "seed_0" / "recipe.yaml").read_text()
    assert "name: graphsam" in recipe and "rho: 0.05" in recipe


@pytest.mark.parametrize(("raw", "message"), [
    ({"variants": {"sam": {"optimizer": "sam"}}}, "variants.sam: a variant name must be"),
    ({"variants": {"v": {"optimizer": "samm"}}}, "variants.v.optimizer: 'samm' is not one of"),
    ({"variants": {"v": {"optimizer": "sam", "set": ["split.seed=3"]}}},
     "variants.v.set[0]: split.seed cannot be overridden"),
    ({"variants": {"v": {"optimizer": "sam", "sett": []}}}, "variants.v.sett: unknown key"),
])
def test_bad_variants_are_refused_in_one_line(tmp_path, raw, message):
    (tmp_path / "r.yaml").write_text("data: {path: x.csv}\n")
    suite = {"datasets": {"a": "r.yaml"}, "optimizers": ["adam", *raw["variants"]], "seeds": [0],
             **raw}
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        suite_from_dict(suite, base_dir=tmp_path)


def test_parallel_workers_end_when_the_benchmark_process_is_killed(tmp_path):
    # A worker that outlived a killed `molsam benchmark` would keep writing into a cell that the
    # rerun resumes: two writers in one run directory.
    import os
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import multiprocessing, os, sys, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from molsam.benchmark import _exit_with_parent\n"
        "if __name__ == '__main__':\n"
        "    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context('spawn'),\n"
        "                               initializer=_exit_with_parent, initargs=(os.getpid(),))\n"
        "    print(pool.submit(os.getpid).result(), flush=True)\n"
        "    pool.submit(time.sleep, 120)\n"
        "    time.sleep(120)\n"
    )
    (tmp_path / "parent.py").write_text(script)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    parent = subprocess.Popen([sys.executable, str(tmp_path / "parent.py")], stdout=subprocess.PIPE,
                              text=True, env=env)
    worker = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        try:  # reap it if it became our child (it does not, but be safe)
            os.waitpid(worker, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.2)
    else:
        os.kill(worker, signal.SIGKILL)
        pytest.fail("the pool worker outlived its parent by 30 s")


def test_sharpness_of_every_cell_is_measured_and_tabulated(suite_file, finished, tmp_path):
    # A grid given `sharpness:` measures each finished cell's best.pt once (also cells that
    # finished before the key was added) and reports the flatness columns per cell and per row.
    out = tmp_path / "flat"
    shutil.copytree(finished, out)
    suite = dataclasses.replace(load_suite(suite_file),
                                sharpness={"rhos": [0.05], "iters": 3, "probes": 2})
    statuses: list[str] = []
    run_benchmark(suite, out, on_cell=lambda info: statuses.append(info["status"]))
    assert statuses == ["done"] * 4  # nothing retrained
    measured = json.loads((out / "cells/bbbp/adam/seed_0/sharpness.json").read_text())
    assert measured["split"] == "train" and measured["top_eigenvalue"]["iterations"] >= 1
    cells = _cells(out)
    for row in cells.values():
        assert float(row["sharpness_rho0.05"]) >= 0.0
        assert row["top_eigenvalue"] != "" and row["hessian_trace"] != ""
    eigen = float(cells[("bbbp", "adam", "0")]["top_eigenvalue"])
    assert eigen == pytest.approx(measured["top_eigenvalue"]["eigenvalue"])
    assert "| top_eigenvalue_mean |" in (out / "results.md").read_text()
    stamp = (out / "cells/bbbp/adam/seed_0/sharpness.json").stat().st_mtime_ns
    run_benchmark(suite, out)  # measured once: a rerun keeps it
    assert (out / "cells/bbbp/adam/seed_0/sharpness.json").stat().st_mtime_ns == stamp
