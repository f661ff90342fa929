"""Files that change together: `molsam featurize`'s store.pt, splits.json and invalid_rows.csv.

Replaced one at a time, a kill between two renames left a new store.pt beside the old
splits.json: indices that point at other molecules, silently. So `write_together` writes the new
files into a staging folder inside the output folder, then writes a commit record (atomically,
once every file is complete), then renames the files into place and removes the record. The
record is the point of no return:

- killed before it, the old files are untouched; the next write removes the staging folder;
- killed after it, `settle` (called by the next writer and by the readers: GraphStore.load,
  splits.file_split) finishes the renames, so a reader sees the new set whole. A reader that
  cannot finish them (a read-only folder) refuses the mix in one line.

Either way the folder holds the old set or the new one, never a mix that is read as a set.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from molsam.errors import InputError
from molsam import outputs

#: The commit record: {"stage": staging folder name, "files": [file names, in rename order]}.
COMMIT = ".molsam-commit.json"
#: Staging folders: tempfile.mkdtemp(prefix=STAGE_PREFIX) inside the output folder.
STAGE_PREFIX = ".molsam-set-"


def write_together(folder: str | Path, writers: Mapping[str, Callable[[Path], object]]) -> None:
    """Write every file of `writers` ({name: write(path)}) into `folder` as one change.

    Raises:
        OSError: a write failed (naming the file in `folder`); nothing in `folder` changed.
    """
    folder = Path(folder)
    settle(folder)
    _remove_stale_stages(folder)
    stage = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=folder))
    try:
        for name, write in writers.items():
            try:
                write(stage / name)
            except OSError as exc:  # name the file the user asked for, not the staging copy
                if exc.errno is None:
                    raise
                raise OSError(exc.errno, exc.strerror, str(folder / name)) from None
        _write_commit(folder, stage.name, list(writers))
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    _finish(folder)


def settle(folder: str | Path, *, reading: bool = False) -> None:
    """Finish a replacement that a killed write committed (see the module docstring).

    Args:
        reading: called by a reader: an error finishing it becomes a one-line InputError.
    """
    folder = Path(folder)
    try:
        if not (folder / COMMIT).is_file():
            return
    except OSError:
        return  # a folder that may not be searched: the read itself will say so
    try:
        _finish(folder)
    except OSError as exc:
        if not reading:
            raise
        raise InputError(
            f"{folder}: its files were being replaced when a `molsam featurize` was stopped, and "
            f"the replacement cannot be finished here ({exc.strerror or exc}); make the folder "
            "writable and read it again, or featurize into it again") from None


def _write_commit(folder: Path, stage: str, names: list[str]) -> None:
    """The commit record, written to a temp name, flushed to disk and renamed into place (the
    staged files are flushed first, so a power cut cannot commit an empty file)."""
    for name in names:
        _fsync(folder / stage / name)
    temp = folder / f"{COMMIT}.{os.getpid()}.tmp"
    try:
        with open(temp, "w", encoding="utf-8") as handle:
            json.dump({"stage": stage, "files": names}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, folder / COMMIT)
    finally:
        temp.unlink(missing_ok=True)


def _finish(folder: Path) -> None:
    """Rename the committed files into place (those not renamed yet), then clean up."""
    commit = folder / COMMIT
    try:
        record = json.loads(commit.read_text(encoding="utf-8"))
        stage, names = record["stage"], record["files"]
    except FileNotFoundError:
        return  # another process finished it meanwhile
    except (ValueError, KeyError, TypeError):
        raise InputError(f"{commit}: not a molsam commit record; remove it") from None
    if not _plain_name(stage) or not stage.startswith(STAGE_PREFIX) or not all(
            _plain_name(name) for name in names):
        raise InputError(f"{commit}: not a molsam commit record; remove it")
    for name in names:
        try:
            os.replace(folder / stage / name, folder / name)
        except FileNotFoundError:
            pass  # renamed before the kill (or by another process meanwhile)
    shutil.rmtree(folder / stage, ignore_errors=True)
    commit.unlink(missing_ok=True)


def _remove_stale_stages(folder: Path) -> None:
    """Staging folders (and commit temp files) of writes killed before their commit, older than
    this process."""
    for left in (*folder.glob(f"{STAGE_PREFIX}*"), *folder.glob(f"{COMMIT}.*.tmp")):
        try:
            if left.stat().st_mtime >= outputs.STARTED:
                continue
            if left.is_dir():
                shutil.rmtree(left, ignore_errors=True)
            else:
                left.unlink()
        except OSError:
            continue


def _plain_name(name: object) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and \
        os.sep not in name


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
