"""SIGTERM handled like Ctrl-C, for commands that leave something to resume.

`kill PID`, a batch scheduler's time limit or a container stop send SIGTERM, whose default ends
the process at once: no "continue with --resume" line, and a file being written is left as a
temporary one. Inside `sigterm_as_interrupt` it raises molsam.errors.Terminated (a
KeyboardInterrupt) instead, so the command stops as Ctrl-C stops it (the same clean-up, the same
message, exit code 130). Used by train and tune (where a background worker, which ignores SIGINT,
is stopped by SIGTERM, and a trial must not be left RUNNING in a shared study).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from molsam.errors import Terminated


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises Terminated (a KeyboardInterrupt) in the main thread for the duration of
    the block."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def interrupt(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
