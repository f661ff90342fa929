"""Where commands write: checks that turn a bad output path into one line, before any work.

A path given as an output folder that is an existing file, a folder the user may not write into,
or an output file name that is a folder would otherwise surface as an OSError traceback from deep
inside a save, often after minutes of featurizing or training. These checks run first; `writes_to`
also converts an OSError raised while writing (a disk that filled up, permissions changed
meanwhile) into the same kind of message.

The one place an operating-system error on a path becomes a message is `path_error` (the path,
the system's reason, and what to do about it). `naming` gives such an error its path where the
write lost it (file.write, torch.save), and the CLI's error boundary (molsam.cli.main) turns any
that still escapes a command into one line with `environment_error`.

Temporary files are written beside their target as `.NAME.XXXXXXXX.tmp` (tempfile's 8 random
characters) and renamed over it when complete; `temp_beside` creates one, locked while its
writer lives, after `sweep_stale_temps` has removed those a killed run left in that folder.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from molsam.errors import InputError, OutputError

try:  # POSIX: a writer's lock on its temp file tells a sweeper the file is in use
    import fcntl
except ImportError:  # pragma: no cover - Windows: stale temp files are never swept
    fcntl = None

#: What to do about an operating-system error on a path, by errno ({other}: e.g. "another --out").
ADVICE = {
    errno.ENOSPC: "free space on that disk or choose {other}",
    getattr(errno, "EDQUOT", -1): "free space within your quota or choose {other}",
    errno.EFBIG: "choose {other} on a file system that holds larger files",
    errno.EROFS: "choose {other} on a writable file system",
    errno.EACCES: "fix its permissions or choose {other}",
    errno.EPERM: "fix its permissions or choose {other}",
    errno.ENOENT: "create the missing folder or choose {other}",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose {other}",
    errno.EISDIR: "give a file name, not a folder",
    errno.EIO: "check that disk or choose {other}",
    errno.EMFILE: "raise the open-file limit (ulimit -n)",
    errno.ENFILE: "close other programs or raise the system's open-file limit",
}
#: A temporary file of molsam's writers: tempfile.mkstemp(prefix=".NAME.", suffix=".tmp").
TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
#: When this process started (near enough: this module is imported before any write). A temp
#: file written since is never swept: it may belong to this very process.
STARTED = time.time()
#: The process's umask (read once, at import, while single-threaded): files written through a
#: temp file get the mode a plain open() would give them, not mkstemp's 0600.
UMASK = os.umask(0)
os.umask(UMASK)


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
        raise path_error(exc, path, option) from None
    except RuntimeError as exc:
        cause = torch_write_cause(exc)
        if cause is None:
            raise
        raise path_error(cause, path, option) from None


def path_error(exc: OSError, path: str | Path | None = None,
               option: str | None = None) -> OutputError:
    """One line for an OSError on a path: the path, the system's reason and what to do.

    With `option` (how the user named `path`, e.g. "--out"): "--out P: cannot write F (reason);
    advice"; without: "F: reason; advice". F is the file the error names, else `path`."""
    where = exc.filename or path
    other = f"another {option}" if option else "another place"
    advice = ADVICE.get(exc.errno or 0)
    tail = f"; {advice.format(other=other)}" if advice else ""
    if option:
        return OutputError(f"{option} {path}: cannot write {where} ({_reason(exc)}){tail}")
    return OutputError(f"{where}: {_reason(exc)}{tail}")


def environment_error(exc: BaseException) -> OutputError | None:
    """The one-line error for an OSError of the machine (no space, permission, read-only file
    system, missing folder: an errno in ADVICE) or torch.save's RuntimeError over one; None for
    anything else (a bug keeps its traceback)."""
    if isinstance(exc, RuntimeError):
        exc = torch_write_cause(exc)
    if isinstance(exc, OSError) and exc.errno in ADVICE:
        return path_error(exc)
    return None


def torch_write_cause(exc: RuntimeError) -> OSError | None:
    """The OSError behind torch.save's "[enforce fail at inline_container.cc:...]
    PytorchStreamWriter failed writing file" (it is the RuntimeError's context when torch wrote
    through a Python file object; when torch opened the file itself the errno is lost, and a
    failed write there is, in practice, a full disk)."""
    text = str(exc)
    if "inline_container" not in text and "PytorchStreamWriter" not in text:
        return None
    seen = exc.__cause__ or exc.__context__
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return OSError(errno.ENOSPC, f"torch.save could not write the file ({text.splitlines()[0]})")


@contextmanager
def naming(path: str | Path, temp: str | Path | None = None,
           option: str | None = None) -> Iterator[None]:
    """Give an OSError raised while writing `path` (through its temp file `temp`) the path.

    file.write and torch.save raise OSErrors without a file name (torch.save even a
    RuntimeError), and a temp name means nothing to the user: the error is raised again as an
    OSError of the same errno naming `path`, for path_error or the CLI to report (with `option`,
    e.g. "--out", as path_error's OutputError at once). OSErrors that name another file (an
    input read in the block), or carry no errno, pass unchanged."""
    mine = {None, str(path), None if temp is None else str(temp)}
    try:
        yield
    except OSError as exc:
        if exc.errno not in ADVICE or (exc.filename not in mine
                                       and not _temp_of(exc.filename, path)):
            raise
        named = OSError(exc.errno, exc.strerror, str(path))
    except RuntimeError as exc:
        cause = torch_write_cause(exc)
        if cause is None:
            raise
        named = OSError(cause.errno, cause.strerror, str(path))
    else:
        return
    if option is not None:
        raise path_error(named, path, option) from None
    raise named from None


def _temp_of(name: object, path: str | Path) -> bool:
    """Is `name` a temp file of `path` (tempfile.mkstemp(prefix=".NAME.") beside it)?"""
    if not isinstance(name, (str, os.PathLike)):
        return False
    name, path = Path(name), Path(path)
    return name.parent == path.parent and name.name.startswith(f".{path.name}.")


def temp_beside(path: str | Path) -> tuple[int, str]:
    """(fd, name) of a new temporary file beside `path`, to be renamed over it when complete.

    Temp files a killed run left in that folder are removed first (sweep_stale_temps); this one
    is locked (flock) until its fd is closed, so another process's sweep leaves it alone."""
    path = Path(path)
    sweep_stale_temps(path.parent)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pass  # a file system without locks: the age rule alone protects it
    return fd, temp


def sweep_stale_temps(folder: str | Path) -> list[Path]:
    """Remove the temp files (TEMP_NAME) that a killed molsam left in `folder`; returns them.

    A file goes only if it is older than this process (STARTED) and no process holds its lock
    (a live writer of temp_beside does): a run killed outright (SIGKILL, the machine lost) never
    got to remove its temp file, and nothing else ever would. Errors are ignored: sweeping is
    housekeeping, never a reason to fail a write."""
    if fcntl is None:
        return []
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        if not TEMP_NAME.match(entry.name):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            if entry.stat(follow_symlinks=False).st_mtime >= STARTED:
                continue
            if _in_use(entry.path):
                continue
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


def _in_use(path: str) -> bool:
    """Does a live process hold the lock of this temp file?"""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases the lock taken here
    return False


def _writable(folder: Path) -> bool:
    """May this process create files in `folder`? (The OS's answer: root may write anywhere.)"""
    return os.access(folder, os.W_OK | os.X_OK)


def _reason(exc: OSError) -> str:
    reason = exc.strerror or type(exc).__name__
    known = os.strerror(exc.errno) if exc.errno in ADVICE else None
    # pyarrow: "Error writing bytes to file. Detail: [errno 28] No space left on device"
    return known if known and known in reason else reason


def plain_mode(fd: int) -> None:
    """Give a temp file (mkstemp: 0600) the mode open() would have given the file."""
    os.fchmod(fd, 0o666 & ~UMASK)


def save_figure(figure, path: str | Path, **options) -> Path:
    """figure.savefig atomically (a temp file beside `path`, renamed over it): a full disk
    leaves an earlier plot whole, and raises an OSError naming `path`."""
    path = Path(path)
    fd, temp = temp_beside(path)
    try:
        plain_mode(fd)
        with naming(path, temp):
            with os.fdopen(fd, "wb") as handle:
                figure.savefig(handle, format=path.suffix.lstrip(".") or None, **options)
            os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    return path
