"""`molsam predict RUN INPUTS... --engine ray` on a local 2-CPU Ray: one output file per input,
every row in order, the same bytes as single-machine predict (molsam_error included); without
Ray, one line saying how to install it.

Ray runs in a spawned child process, never in the pytest process: Ray's driver keeps gRPC threads
alive even after ray.shutdown(), and a process with live threads can deadlock when it forks (a
forked child inherits a lock some other thread held); the featurization pools of later tests fork
the pytest process. A full suite once hung exactly there."""

from __future__ import annotations

import csv
import importlib.util
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from typer.testing import CliRunner

from molsam.cli.main import app
from molsam.predict import load_ensemble, predict_csv
from tests.conftest import write_csv
from tests.unit.test_predict import SMILES, make_run

runner = CliRunner()


def _table(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle, delimiter="\t" if path.suffix == ".tsv" else ","))


def test_without_ray_the_engine_is_one_line_saying_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    inp = write_csv(tmp_path / "in.csv", "smiles\nCCO\n")
    result = runner.invoke(app, ["predict", "run", str(inp), "--engine", "ray", "-o", "out"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: --engine ray needs Ray Data, which is not installed: pip install molsam[ray]"
    ]


def test_ray_predict_equals_single_machine_predict_file_for_file(tmp_path):
    if importlib.util.find_spec("ray") is None:  # not imported here: see the module docstring
        pytest.skip("ray is not installed (`make test` installs it: the test extra lists ray[data])")
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
        child.submit(_ray_predict_equals_single_machine, tmp_path).result()  # re-raises failures


def _ray_predict_equals_single_machine(tmp_path: Path) -> None:
    """The test's body, in a spawned child that starts and stops a local 2-CPU Ray."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        _check_ray_predict(tmp_path)
        _check_ray_parquet_and_excel(tmp_path / "formats")
    finally:
        ray.shutdown()


def _check_ray_predict(tmp_path: Path) -> None:
    run, _ = make_run(tmp_path / "run", seeds=(0, 1), steps=1)  # an ensemble: _std columns too
    folder = tmp_path / "inputs"
    folder.mkdir()
    # several blocks per file (block_rows below), an invalid row, a quoted cell with a comma
    first = ["id,smiles,note"] + [f"{i},{s},\"a, b\"" for i, s in enumerate(SMILES * 3)]
    first.insert(5, "x,not a smiles,bad")
    write_csv(folder / "a.csv", "\n".join(first) + "\n")
    write_csv(folder / "b.tsv", "smiles\tid\n" + "".join(f"{s}\t{i}\n" for i, s in enumerate(SMILES)))
    write_csv(folder / "c.csv", "id,smiles\n")  # no rows: a header-only output
    out = tmp_path / "out"

    from molsam.predict_ray import predict_files_ray

    summary = predict_files_ray([run], [folder], out, block_rows=4, actors=2, device="cpu")
    assert (summary.rows, summary.invalid) == (4 * len(SMILES) + 1, 1)
    assert sorted(p.name for p in out.iterdir()) == ["a.csv", "b.tsv", "c.csv"]
    ensemble = load_ensemble([run], "cpu")
    for name in ("a.csv", "b.tsv", "c.csv"):
        local = tmp_path / f"local-{name}"
        predict_csv(ensemble, folder / name, local, workers=1, block_rows=3)
        ours, theirs = _table(out / name), _table(local)
        assert ours[0] == theirs[0] and len(ours) == len(theirs), name  # columns, row count
        for row, expected in zip(ours[1:], theirs[1:]):  # every row, in order
            for cell, want, column in zip(row, expected, ours[0]):
                if column in ("y", "y_std") and want:  # other batches: float32 rounding only
                    assert float(cell) == pytest.approx(float(want), abs=1e-6), (name, column)
                else:
                    assert cell == want, (name, column)
    assert _table(out / "a.csv")[0][-1] == "molsam_error"
    assert _table(out / "a.csv")[5][-1].startswith("SMILES parse error")

    # the CLI reuses the Ray this process already runs; a missing column is one line
    result = runner.invoke(app, ["predict", str(run), str(folder / "b.tsv"), "--engine", "ray",
                                 "-o", str(tmp_path / "cli"), "--smiles-col", "nope"])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "no SMILES column 'nope'" in result.stderr


def _check_ray_parquet_and_excel(tmp_path: Path) -> None:
    """A Parquet input gives a Parquet output with the input's column types, an Excel input a
    CSV output; both equal single-machine predict row for row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.spreadsheets import write_parquet, write_xlsx

    run, _ = make_run(tmp_path / "run", steps=1)
    folder = tmp_path / "inputs"
    folder.mkdir(parents=True)
    smiles = SMILES + ["not a smiles"]
    write_parquet(folder / "lib.parquet", {
        "id": pa.array(range(len(smiles)), pa.int16()), "smiles": smiles,
        "w": pa.array([i / 4 for i in range(len(smiles))], pa.float32()),
    }, row_group_size=7)
    write_xlsx(folder / "sheet.xlsx", [["smiles", "id"], *[[s, i] for i, s in enumerate(smiles)]])
    out = tmp_path / "out"

    from molsam.predict_ray import predict_files_ray

    summary = predict_files_ray([run], [folder], out, block_rows=4, actors=2, device="cpu")
    assert (summary.rows, summary.invalid) == (2 * len(smiles), 2)
    assert sorted(p.name for p in out.iterdir()) == ["lib.parquet", "sheet.csv"]
    ensemble = load_ensemble([run], "cpu")
    local = tmp_path / "local.parquet"
    predict_csv(ensemble, folder / "lib.parquet", local, workers=1, block_rows=3)
    ours, theirs = pq.read_table(out / "lib.parquet"), pq.read_table(local)
    assert ours.schema == theirs.schema and ours.schema.field("id").type == pa.int16()
    assert ours.drop(["y"]).equals(theirs.drop(["y"]))
    assert ours.column("y").to_pylist()[:-1] == pytest.approx(theirs.column("y").to_pylist()[:-1],
                                                              abs=1e-6)
    assert ours.column("y").to_pylist()[-1] is None
    predict_csv(ensemble, folder / "sheet.xlsx", tmp_path / "local.csv", workers=1)
    ours, theirs = _table(out / "sheet.csv"), _table(tmp_path / "local.csv")
    assert ours[0] == theirs[0] == ["smiles", "id", "y", "molsam_error"]
    assert [r[:2] + r[3:] for r in ours] == [r[:2] + r[3:] for r in theirs]
    assert [float(r[2]) for r in ours[1:-1]] == pytest.approx([float(r[2]) for r in theirs[1:-1]],
                                                             abs=1e-6)
