"""molsam.outputs and molsam.fileset: the one message for an operating-system error on a path,
what `naming` converts and what it leaves alone, and a reader that cannot finish an interrupted
replacement of featurize's files."""

from __future__ import annotations

import errno
import json

import pytest

from molsam.errors import InputError, OutputError
from molsam.fileset import COMMIT, settle, write_together
from molsam.outputs import environment_error, naming, path_error


def test_path_error_names_the_path_and_what_to_do():
    full = OSError(errno.ENOSPC, "No space left on device")
    assert str(path_error(full, "/o/p.csv", "--out")) == (
        "--out /o/p.csv: cannot write /o/p.csv (No space left on device); free space on that "
        "disk or choose another --out")
    denied = PermissionError(errno.EACCES, "Permission denied", "/o/x")
    assert str(path_error(denied)) == (
        "/o/x: Permission denied; fix its permissions or choose another place")
    arrow = OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left "
                                  "on device")
    assert "(No space left on device)" in str(path_error(arrow, "/o/p.parquet", "--out"))


def test_environment_error_takes_the_machines_errors_only():
    torch_save = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64")
    torch_save.__context__ = OSError(errno.ENOSPC, "No space left on device")
    assert isinstance(environment_error(torch_save), OutputError)
    assert environment_error(RuntimeError("a bug")) is None
    assert environment_error(OSError(errno.EPIPE, "Broken pipe")) is None
    assert environment_error(ValueError("x")) is None


def test_naming_names_only_errors_of_its_own_file(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(OSError) as error, naming(target):
        raise OSError(errno.ENOSPC, "No space left on device")  # file.write: no name
    assert error.value.filename == str(target)
    with pytest.raises(OSError) as error, naming(target):
        raise OSError(errno.ENOSPC, "No space", str(tmp_path / ".out.csv.ab12cd34.tmp"))
    assert error.value.filename == str(target)  # its temp file: the user's name instead
    with pytest.raises(OutputError), naming(target, option="--out"):
        raise OSError(errno.EROFS, "Read-only file system")
    other = FileNotFoundError(errno.ENOENT, "No such file or directory", "/input.csv")
    with pytest.raises(FileNotFoundError) as error, naming(target):
        raise other  # an input read in the block: unchanged
    assert error.value is other


def test_a_reader_that_cannot_finish_a_replacement_refuses_the_mix(tmp_path, monkeypatch):
    folder = tmp_path / "f"
    folder.mkdir()
    write_together(folder, {"a.txt": lambda p: p.write_text("old a"),
                            "b.txt": lambda p: p.write_text("old b")})
    stage = folder / ".molsam-set-killed"
    stage.mkdir()
    (stage / "b.txt").write_text("new b")
    (folder / "a.txt").write_text("new a")  # renamed before the kill; b.txt was not
    (folder / COMMIT).write_text(json.dumps({"stage": stage.name, "files": ["a.txt", "b.txt"]}))

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(folder / "b.txt"))

    monkeypatch.setattr("molsam.fileset.os.replace", read_only)
    with pytest.raises(InputError, match="were being replaced when a `molsam featurize` was "
                                         "stopped, and the replacement cannot be finished here"):
        settle(folder, reading=True)
    monkeypatch.undo()
    settle(folder, reading=True)
    assert (folder / "b.txt").read_text() == "new b"
    assert sorted(p.name for p in folder.iterdir()) == ["a.txt", "b.txt"]
