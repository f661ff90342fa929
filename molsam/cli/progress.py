"""Progress reporting: a rich bar on a terminal, plain log lines otherwise (CI, pipes, files)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

log = logging.getLogger("molsam")


def is_terminal() -> bool:
    return sys.stderr.isatty()


@contextmanager
def progress_callback(description: str) -> Iterator[Callable[[int, int], None]]:
    """Yields update(done, total). On a terminal, a live bar; otherwise a line every ~10%."""
    if is_terminal():
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        ) as bar:
            task = bar.add_task(description, total=None)

            def update(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            yield update
        return
    state = {"next": 0.0, "start": time.perf_counter()}

    def update(done: int, total: int) -> None:
        if total and (done / total >= state["next"] or done == total):
            rate = done / max(time.perf_counter() - state["start"], 1e-9)
            log.info("%s: %d/%d (%.0f/s)", description, done, total, rate)
            state["next"] = done / total + 0.1

    yield update
