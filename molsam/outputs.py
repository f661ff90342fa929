"""Where commands write: checks that turn a bad output path into one line, before any work.

A path given as an output folder that is an existing file, a folder the user may not write into,
or an output file name that is a folder would otherwise surface as an OSError traceback from deep
inside a save, often after minutes of featurizing or training. These checks run first; `writes_to`
also converts an OSError raised while writing (a disk that filled up, permissions changed
meanwhile) into the same kind of message.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from molsam.errors import InputError


def output_folder(path: str | Path, option: str, *, create: bool = True) -> Path:
    """Create `path` (and its parents) as a folder to write into and return it.

    Args:
        option: how the user named it (e.g. "--out"), for the message.
        create: False only checks (a missing folder: its nearest existing parent must be a
            writable folder), so a command can refuse early without leaving an empty folder.

    Raises:
        InputError: `path` is an existing file, cannot be created, or is not writable.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {path}: is an existing file, expected a folder")
    if not create:
        existing = next(p for p in (path, *path.absolute().parents) if p.exists())
        if not existing.is_dir():
            raise InputError(f"{option} {path}: {existing} is an existing file, not a folder")
        if not _writable(existing):
            raise InputError(f"{option} {path}: folder {existing} is not writable")
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{option} {path}: cannot create the folder ({_reason(exc)})") from None
    if not _writable(path):
        raise InputError(f"{option} {path}: the folder is not writable")
    return path


def output_file(path: str | Path, option: str) -> Path:
    """Check that a file can be written at `path` (its folder exists and is writable).

    Raises:
        InputError: `path` is a folder, its folder is missing or not writable.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{option} {path}: is a folder, expected a file name")
    folder = path.parent
    if not folder.is_dir():
        raise InputError(f"{option} {path}: folder {folder} does not exist")
    if not _writable(folder):
        raise InputError(f"{option} {path}: folder {folder} is not writable")
    return path


@contextmanager
def writes_to(path: str | Path, option: str) -> Iterator[None]:
    """Turn an OSError raised by the writes inside the block into a one-line InputError."""
    try:
        yield
    except OSError as exc:
        where = exc.filename or path
        raise InputError(f"{option} {path}: cannot write {where} ({_reason(exc)})") from None


def _writable(folder: Path) -> bool:
    """May this process create files in `folder`? (The OS's answer: root may write anywhere.)"""
    return os.access(folder, os.W_OK | os.X_OK)


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
