"""Faults of the machine, made real (issue 25, deliverable 5): a read-only or uncreatable cache, a
full disk, an output folder that cannot be written, a storage that cannot be opened, a kill in
the middle of a write, SIGTERM, a truncated last.pt. Each gives one line naming the path and what
to do (or a warning, and the work goes on), and loses nothing already written.

A full disk is a 1 MiB tmpfs filled to the last byte and a read-only folder a read-only tmpfs:
root writes through mode bits, so chmod would prove nothing there. Both need root and
`mount -t tmpfs`; without root the read-only folder is chmod 555 instead, and the full-disk tests
are skipped (they say so). Kills are real signals to real `molsam` processes.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from molsam.cli.main import app
from tests.conftest import ROOT, SHARED_DATA, write_csv
from tests.unit.test_predict import make_run

runner = CliRunner()
NO_SPACE = "No space left on device"


def one_line_error(result, *texts: str) -> str:
    """The error line ending the command's output (notes printed before it are not errors)."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == lines[-1:], result.output
    for text in texts:
        assert text in errors[0], errors[0]
    assert "Traceback" not in result.output
    return errors[0]


# ----------------------------------------------------------------------------------- the faults
def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture
def mount_tmpfs():
    """mount(folder, options): a tmpfs there, unmounted after the test (or the test skipped,
    saying why, where tmpfs cannot be mounted)."""
    mounted: list[Path] = []

    def mount(folder: Path, options: str) -> Path:
        if not _is_root():
            pytest.skip("mounting a tmpfs (a real full disk) needs root")
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"mount -t tmpfs fails here: {done.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.fixture
def disk(tmp_path, mount_tmpfs) -> Path:
    """A 1 MiB file system of its own; `fill(disk)` then leaves no byte free."""
    return mount_tmpfs(tmp_path / "disk", "size=1m")


def fill(folder: Path) -> None:
    with open(folder / "filler", "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


@pytest.fixture
def read_only(tmp_path, mount_tmpfs):
    """A folder nothing can be written into: a read-only tmpfs as root, chmod 555 otherwise."""
    folder = tmp_path / "read-only"
    if _is_root():
        yield mount_tmpfs(folder, "ro,size=64k")
        return
    folder.mkdir()
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)


def left_over(folder: Path, *keep: str) -> list[str]:
    """Files and folders in `folder` other than `keep` and the filler (temp files, staging)."""
    return sorted(p.name for p in folder.iterdir() if p.name not in {"filler", *keep})


def esol(path: Path, rows: slice = slice(0, 40), extra: str = "") -> Path:
    lines = (SHARED_DATA / "esol.csv").read_text().splitlines()
    return write_csv(path, "\n".join([lines[0], *lines[1:][rows]]) + "\n" + extra)


def recipe(tmp_path: Path, epochs: int = 1) -> Path:
    esol(tmp_path / "esol.csv")
    return write_csv(tmp_path / "r.yaml", (
        "data: {path: esol.csv}\n"
        "split: {method: random, sizes: [0.6, 0.2, 0.2]}\n"
        "model: {hidden: 8, layers: 1, heads: 2, pe_steps: 4}\n"
        f"train: {{epochs: {epochs}, batch_size: 8, workers: 1, seeds: [0], patience: null}}\n"
        "tune: {optim.rho: {low: 0.01, high: 0.1, log: true}}\n"))


# ----------------------------------------------------------------- 1. a cache that can't be written
@pytest.mark.parametrize("where", ["read-only folder", "folder inside a read-only one",
                                   "a file in the way"])
def test_unwritable_cache_featurize_and_train_work_without_it(tmp_path, read_only, where,
                                                              monkeypatch, caplog):
    """Before: PermissionError / OSError traceback from store.save into the cache."""
    from molsam.data import datasets

    cache = {"read-only folder": read_only, "folder inside a read-only one": read_only / "cache",
             "a file in the way": write_csv(tmp_path / "file", "x\n") / "cache"}[where]
    monkeypatch.setenv("MOLSAM_CACHE_DIR", str(cache))
    for command in (["featurize", str(esol(tmp_path / "esol.csv")), "--out",
                     str(tmp_path / "f"), "--workers", "1"],
                    ["train", str(recipe(tmp_path)), "--out", str(tmp_path / "run")]):
        # As in a process of its own:
        monkeypatch.setattr(datasets, "_REPORTED", set(), raising=False)
        caplog.clear()
        result = runner.invoke(app, command)
        assert result.exit_code == 0, result.output
        warnings = [r.getMessage() for r in caplog.records if "cache folder" in r.getMessage()]
        assert len(warnings) == 1, warnings  # once, however many stores it could not keep
        assert warnings[0].startswith(f"warning: cache folder {cache} cannot be written (")
        assert "going on without the cache (set MOLSAM_CACHE_DIR to a writable folder" in \
            warnings[0]
    assert (tmp_path / "f" / "store.pt").is_file() and (tmp_path / "run" / "summary.json").is_file()


def test_builtin_dataset_without_a_writable_cache(read_only, monkeypatch, caplog):
    """Before: OSError traceback writing chembl2321810.csv into the cache."""
    from molsam.data import datasets

    monkeypatch.setenv("MOLSAM_CACHE_DIR", str(read_only))
    monkeypatch.setattr(datasets, "_REPORTED", set(), raising=False)
    path = datasets.dataset_path("chembl2321810")
    assert path.is_file() and read_only not in path.parents
    assert path.read_text().startswith("smiles,chembl_id,activity\n")
    assert sum("cache folder" in r.getMessage() for r in caplog.records) == 1


# -------------------------------------------------------------------------------- 2. a full disk
def test_full_disk_predict_keeps_the_old_output(tmp_path, disk):
    """Before: `OSError: [Errno 28] No space left on device` traceback."""
    run, _ = make_run(tmp_path / "run", steps=1)
    write_csv(disk / "p.csv", "old output\n")
    fill(disk)
    for name in ("p.csv", "p.parquet"):
        result = runner.invoke(app, ["predict", str(run), str(run / "data.csv"), "-o",
                                     str(disk / name), "--workers", "1"])
        one_line_error(result, f"error: --out {disk / name}: cannot write {disk / name} "
                               f"({NO_SPACE}); free space on that disk or choose another --out")
    assert (disk / "p.csv").read_text() == "old output\n"
    assert left_over(disk, "p.csv") == []


def test_full_disk_featurize_keeps_the_old_set(tmp_path, disk):
    """Before: `RuntimeError: [enforce fail at inline_container.cc:672]` from torch.save."""
    out = disk / "f"
    assert runner.invoke(app, ["featurize", str(esol(tmp_path / "a.csv", slice(0, 20))),
                               "--out", str(out), "--workers", "1"]).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    fill(disk)
    result = runner.invoke(app, ["featurize", str(esol(tmp_path / "b.csv")), "--out", str(out),
                                 "--workers", "1"])
    one_line_error(result, f"error: --out {out}: cannot write {out}/", f"({NO_SPACE}); free space "
                   "on that disk or choose another --out")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no staging folder either


def test_full_disk_train_evaluate_sharpness(tmp_path, disk):
    """Before: train stopped with an OSError traceback, and evaluate's old eval.json was left
    empty (sharpness's JSON was already atomic)."""
    run, _ = make_run(tmp_path / "run", steps=1)
    r = recipe(tmp_path)
    write_csv(disk / "eval.json", "{}\n")
    write_csv(disk / "s.json", "{}\n")
    fill(disk)
    one_line_error(runner.invoke(app, ["train", str(r), "--out", str(disk / "run")]),
                   f"error: {disk / 'run'}/", f"{NO_SPACE}; free space on that disk")
    one_line_error(runner.invoke(app, ["evaluate", str(run), "--out", str(disk / "eval.json")]),
                   f"error: --out {disk / 'eval.json'}: cannot write {disk}/eval.",
                   f"({NO_SPACE}); free space on that disk or choose another --out")
    one_line_error(runner.invoke(app, ["sharpness", str(run), "--out", str(disk / "s.json"),
                                       "--iters", "0", "--probes", "0", "--rho", "0.01"]),
                   f"cannot write {disk / 's.json'} ({NO_SPACE}); free space on that disk")
    assert (disk / "eval.json").read_text() == "{}\n" and (disk / "s.json").read_text() == "{}\n"
    assert left_over(disk, "eval.json", "s.json", "run") == []
    assert sorted(p.name for p in (disk / "run").iterdir()) == [".molsam.lock"]


def test_full_disk_tune_and_benchmark(tmp_path, disk):
    """Before: OSError tracebacks (tune from Optuna's journal file, benchmark from the cell's
    training)."""
    pytest.importorskip("optuna")
    r = recipe(tmp_path)
    suite = write_csv(tmp_path / "suite.yaml", f"datasets: {{esol: {r}}}\noptimizers: [adam]\n"
                      "seeds: [0]\n")
    fill(disk)
    one_line_error(runner.invoke(app, ["tune", str(r), "--trials", "1", "--out",
                                       str(disk / "t")]),
                   f"error: {disk / 't' / 'study.journal'}: {NO_SPACE}; free space on that disk")
    one_line_error(runner.invoke(app, ["benchmark", str(suite), "--out", str(disk / "b")]),
                   f"error: {disk / 'b'}/", f"{NO_SPACE}; free space on that disk")


def test_full_disk_ray_outputs_one_line(tmp_path, disk):
    """The Ray engine's driver writes every output file (molsam.predict_ray._Outputs): a full
    disk there is one OutputError naming the file (the Ray task failure is rebuilt from it), and
    the temp file goes. Ray itself is not started: the writer is what fails."""
    from molsam.errors import OutputError
    from molsam.predict_ray import _FilePlan, _Outputs

    fill(disk)
    plan = _FilePlan("in.csv", str(disk / "in.csv"), 0, ",", ["smiles", "y"], None)
    outputs = _Outputs([plan])
    with pytest.raises(OutputError) as error:
        outputs.add(0, 0, "CCO,1\n" * 2000, False)
        outputs.add(0, 1, "", True)
    outputs.abort()
    assert str(error.value) == (f"--out {disk / 'in.csv'}: cannot write {disk / 'in.csv'} "
                                f"({NO_SPACE}); free space on that disk or choose another --out")
    assert left_over(disk) == []


def test_stray_os_errors_are_one_line_at_the_cli_boundary(tmp_path, monkeypatch):
    """Any command: an OSError of the machine that no writer caught, or torch.save's
    RuntimeError over one, is one line naming the path; any other error keeps its traceback."""
    data = esol(tmp_path / "esol.csv")

    def raising(error):
        def load_store(*args, **kwargs):
            raise error
        return load_store

    cases = [
        (PermissionError(errno.EACCES, "Permission denied", "/some/where"),
         "error: /some/where: Permission denied; fix its permissions or choose another place"),
        (OSError(errno.EROFS, "Read-only file system", "/ro/x"),
         "error: /ro/x: Read-only file system; choose another place on a writable file system"),
    ]
    for exc, line in cases:
        monkeypatch.setattr("molsam.data.pipeline.load_store", raising(exc))
        assert one_line_error(runner.invoke(app, ["featurize", str(data)])) == line
    monkeypatch.setattr("molsam.data.pipeline.load_store", raising(RuntimeError("a bug")))
    result = runner.invoke(app, ["featurize", str(data)])
    assert result.exit_code == 1 and isinstance(result.exception, RuntimeError)


def test_torch_save_on_a_full_disk_names_the_file(disk):
    """torch.save's own failure is `RuntimeError: [enforce fail at inline_container.cc]`
    without a path: checkpoints and stores name theirs."""
    import torch

    from molsam.train.checkpoint import save_checkpoint

    (disk / "last.pt").write_bytes(b"old")
    fill(disk)
    with pytest.raises(OSError) as error:
        save_checkpoint(disk / "last.pt", {"w": torch.zeros(10000)})
    assert (error.value.errno, error.value.filename) == (errno.ENOSPC, str(disk / "last.pt"))
    assert (disk / "last.pt").read_bytes() == b"old" and left_over(disk, "last.pt") == []


# ----------------------------------------------------------- 3. Ray: an --out that can't be written
@pytest.mark.parametrize("inside", [False, True])
def test_ray_unwritable_out_refused_before_ray_starts(tmp_path, read_only, inside, monkeypatch):
    """Before: a PermissionError (OSError) traceback, for an existing read-only --out only after
    Ray had started."""
    ray = pytest.importorskip("ray")
    run, _ = make_run(tmp_path / "run", steps=1)

    def started(*args, **kwargs):
        raise AssertionError("Ray was started before --out was checked")

    monkeypatch.setattr(ray, "init", started)
    out = read_only / "preds" if inside else read_only
    result = runner.invoke(app, ["predict", str(run), str(run / "data.csv"), "--engine", "ray",
                                 "--out", str(out)])
    one_line_error(result, f"error: --out {out}: ",
                   "cannot create the folder" if inside else "the folder is not writable")


# ---------------------------------------------------------------- 4. a storage that can't be opened
def test_tune_storage_that_cannot_be_opened_is_one_line(tmp_path, read_only):
    """Before: SQLAlchemy tracebacks (NoSuchModuleError, OperationalError)."""
    pytest.importorskip("optuna")
    r = recipe(tmp_path)
    cases = [
        ("bogus://x/y", "error: --storage bogus://x/y: 'bogus' is not a kind of database "
                        "SQLAlchemy knows (or its driver is not installed); give a journal file "
                        "path or another database URL"),
        (f"sqlite:///{tmp_path}/missing/study.db",
         f"error: --storage sqlite:///{tmp_path}/missing/study.db: folder {tmp_path}/missing "
         "does not exist; create it, or give a journal file path"),
        (f"sqlite:///{read_only}/study.db",
         f"error: --storage sqlite:///{read_only}/study.db: cannot open the database (unable to "
         "open database file); check the URL and that the database (server or file) can be "
         "reached, or give a journal file path"),
    ]
    for storage, line in cases:
        result = runner.invoke(app, ["tune", str(r), "--trials", "1", "--storage", storage,
                                     "--out", str(tmp_path / "t")])
        assert one_line_error(result).startswith(line), result.output


# ---------------------------------------------------------- 5. featurize's outputs change together
KILLED_FEATURIZE = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    out, data, when = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    replace = os.replace

    def killing_replace(src, dst, *args, **kwargs):
        dst = Path(dst)
        # "after": at the rename of splits.json into --out, store.pt being renamed already;
        # "before": at the rename of splits.json anywhere else (its staging copy).
        if dst.name == "splits.json" and (dst.parent == out) == (when == "after"):
            os.kill(os.getpid(), signal.SIGKILL)
        return replace(src, dst, *args, **kwargs)

    os.replace = killing_replace
    from molsam.cli.main import app
    app(["featurize", data, "--out", str(out), "--workers", "1"])
""")


def whole_set(out: Path) -> str:
    """The source of the set in `out`, read with molsam's readers and checked to be one set."""
    from molsam.data.splits import file_split
    from molsam.data.store import GraphStore

    store = GraphStore.load(out / "store.pt")
    file_split(out / "splits.json", len(store))
    record = json.loads((out / "splits.json").read_text())
    assert record["source"] == store.source
    for part in ("train", "val", "test"):
        assert record[part]["smiles"] == [store.smiles[i] for i in record[part]["indices"]]
    with open(out / "invalid_rows.csv", newline="") as handle:
        invalid = [row[2] for row in list(csv.reader(handle))[1:]]
    assert invalid == [row.smiles for row in store.invalid]
    return store.source


@pytest.mark.parametrize("when", ["after", "before"])
def test_featurize_killed_while_replacing_leaves_one_whole_set(tmp_path, when, monkeypatch):
    """Before: store.pt, splits.json and invalid_rows.csv were replaced one at a time; SIGKILL
    between two renames left the new store.pt beside the old splits.json, read as one set."""
    out = tmp_path / "f"
    old = esol(tmp_path / "old.csv", slice(0, 20), "not-a-smiles,1.0\n")
    new = esol(tmp_path / "new.csv", slice(20, 60), "C1CC,2.0\n")
    assert runner.invoke(app, ["featurize", str(old), "--out", str(out),
                               "--workers", "1"]).exit_code == 0
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_FEATURIZE, str(out), str(new), when],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr  # killed where intended
    # Committed before the kill: the readers finish the renames and see the new set whole;
    # killed before the commit: the old set is untouched.
    # (Names only: a store from the cache keeps the path it was first featurized from.)
    assert Path(whole_set(out)).name == ("new.csv" if when == "after" else "old.csv")
    # The next featurize, a process started after the kill, removes what the kill left.
    monkeypatch.setattr("molsam.outputs.STARTED", time.time(), raising=False)
    result = runner.invoke(app, ["featurize", str(new), "--out", str(out), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert Path(whole_set(out)).name == "new.csv"
    assert sorted(p.name for p in out.iterdir()) == ["invalid_rows.csv", "splits.json",
                                                     "store.pt"]


# ------------------------------------------------------------------------------ 6. smaller faults
def test_temp_file_of_a_killed_predict_is_removed_by_the_next(tmp_path, monkeypatch):
    """A predict killed outright (SIGKILL) leaves .p.csv.XXXXXXXX.tmp; before, it stayed for
    good. Now the next write into the folder removes it, but neither a temp file a live process
    holds locked nor a file that is not molsam's."""
    import fcntl

    from molsam import outputs

    run, _ = make_run(tmp_path / "run", steps=1)
    big = write_csv(tmp_path / "big.csv", "smiles\n" + "c1ccc2ccccc2c1CCO\n" * 6000)
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "molsam", "predict", str(run), str(big), "-o", str(out / "p.csv"),
         "--workers", "1"], env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(out.glob(".p.csv.*.tmp")) and time.monotonic() < deadline:
        assert process.poll() is None, "predict ended before writing its temp file"
        time.sleep(0.02)
    process.kill()
    process.wait(timeout=60)
    stale = list(out.glob(".p.csv.*.tmp"))
    assert len(stale) == 1 and not (out / "p.csv").exists()  # the fault is real

    live = out / ".q.csv.abcd1234.tmp"
    live.write_text("written by a live predict")
    mine = write_csv(out / ".notes.tmp", "not molsam's\n")
    old = time.time() - 60
    for path in (live, mine):
        os.utime(path, (old, old))
    with open(live) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # The next predict, a process started after the kill (STARTED: when molsam started).
        monkeypatch.setattr(outputs, "STARTED", time.time(), raising=False)
        result = runner.invoke(app, ["predict", str(run), str(run / "data.csv"), "-o",
                                     str(out / "p.csv"), "--workers", "1"])
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [".notes.tmp", live.name, "p.csv"]


def test_sigterm_to_train_stops_like_ctrl_c(tmp_path):
    """Before: SIGTERM ended `molsam train` at once (exit -15), without the --resume hint."""
    r = recipe(tmp_path, epochs=500)
    log = tmp_path / "train.log"
    with open(log, "w") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "molsam", "train", str(r), "--out", str(tmp_path / "run")],
            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=handle, stderr=handle,
            start_new_session=True)
    deadline = time.monotonic() + 120
    while "epoch 1/500" not in log.read_text() and time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 130, log.read_text()
    text = log.read_text()
    assert "interrupted: every replicate's last.pt holds its last finished epoch; continue with " \
           f"`molsam train --resume {tmp_path / 'run'}`" in " ".join(text.split()), text
    assert "Traceback" not in text


def test_truncated_last_pt_says_how_to_restart_the_seed_and_that_works(tmp_path):
    """Before: the truncated last.pt was refused, and that seed could then never be resumed or
    trained again (`molsam train --out RUN` refuses a folder that holds a run)."""
    run = tmp_path / "run"
    assert runner.invoke(app, ["train", str(recipe(tmp_path)), "--out", str(run)]).exit_code == 0
    last = run / "seed_0" / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    line = one_line_error(runner.invoke(app, ["train", "--resume", str(run)]))
    assert line == (f"error: {last}: checkpoint is corrupt or truncated (incomplete zip archive); "
                    f"to train seed 0 again from its first epoch, remove {run / 'seed_0'} and run "
                    f"`molsam train --resume {run}` again")
    shutil.rmtree(run / "seed_0")
    result = runner.invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    assert "test rmse:" in result.output and (run / "seed_0" / "best.pt").is_file()
