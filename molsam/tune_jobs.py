"""`molsam tune --jobs N`: N worker processes on one study, sharing one trial budget.

This is Optuna's multi-process optimization ("Easy Parallelization" in Optuna's tutorial): every
worker opens the same study through the same storage and runs `study.optimize`; the storage hands
out trial numbers and each worker's TPE sampler (its own seed, derived from --seed, and the
constant liar) reads every worker's finished trials. molsam adds what a command line needs:

- one budget: --trials counts the trials started by all workers together (finished, pruned or
  failed). A worker claims a trial from a shared counter before starting it, so the workers never
  run more than the budget. (optuna.study.MaxTrialsCallback checks only after a trial ends, so N
  workers could overshoot by N - 1 trials.)
- progress in one place: workers send each finished trial and epoch to the parent, which calls
  tune_recipe's callbacks; the parent alone writes the outputs, once, when the workers are done.
- a consistent study when stopped: Ctrl-C reaches every process of the terminal's process group;
  SIGTERM to the parent is passed on at once as SIGTERM to the workers, which treat it like
  Ctrl-C. A worker stops cooperatively (`_StopRequest`): a signal interrupts training at once,
  but never Optuna's own bookkeeping (asking for a trial, writing its state), which would leave a
  trial RUNNING; there the worker stops at the next trial's start instead. A stopping worker
  marks its trial in progress failed, quietly (Optuna's warning with the KeyboardInterrupt's
  traceback is not the user's concern). A worker that dies without doing so (killed,
  out of memory) is noticed by the parent, which marks its RUNNING trials failed (workers tag their
  trials with `machine:pid`, so trials of other machines on a shared storage are left alone) and
  stops the others: a crash ends the search with an error naming the worker, never a hang.

Workers are not forked from the parent (a forked child of a process that has used torch's and
OpenMP's thread pools can deadlock): they are forked from multiprocessing's fork server, a clean
process that imports torch, Optuna and molsam's trainer once (PRELOAD), so N workers do not each
spend seconds importing them; "spawn" where there is no fork server (macOS, Windows). Each worker
featurizes through molsam's disk cache (the parent filled it) and trains with one torch thread
(train.threads, DEFAULT_CPU_THREADS), so N workers use N cores.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue as queue_module
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from molsam.config import Recipe
from molsam.errors import ConfigError, Terminated
from molsam.tune import fail_running_trials, worker_tag

if TYPE_CHECKING:  # pragma: no cover
    import optuna

    from molsam.tune import Search

log = logging.getLogger("molsam")

#: Seconds between the parent's checks that its workers are alive.
POLL_S = 0.5
#: Seconds a worker gets to mark its trial failed and exit after SIGTERM before it is killed.
STOP_GRACE_S = 30.0
#: Seconds a worker gets to exit after its last word.
EXIT_GRACE_S = 5.0
#: Seconds the parent waits, after its own Ctrl-C, for workers that got the same Ctrl-C to stop
#: by themselves before it sends SIGTERM (a second signal could cut their clean-up short).
INTERRUPT_GRACE_S = 5.0


#: Modules the fork server imports once for every worker it forks.
PRELOAD = ["molsam.tune", "molsam.tune_jobs", "molsam.train.loop", "molsam.train.run", "optuna"]


def process_context() -> Any:
    """The fork server's multiprocessing context (spawn where the platform has none)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    return multiprocessing.get_context("spawn")


class WorkerFailed(Exception):
    """A worker raised an error or died; the message says which and what became of its trial."""


@dataclass(frozen=True)
class WorkerSpec:
    """What one worker process needs (pickled to it)."""

    index: int
    jobs: int
    recipe: Recipe
    out: Path
    storage: str
    study_name: str
    prune: bool
    sampler_seed: int
    trials: int | None
    deadline: float | None  # time.time() after which no trial starts


def worker_seed(seed: int, index: int) -> int:
    """Worker `index`'s TPE seed: a distinct, reproducible stream per worker from one --seed."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def claim_trial(claimed: Any, trials: int | None, deadline: float | None) -> bool:
    """Take one trial from the shared budget; False once it is spent or the time is up."""
    if deadline is not None and time.time() >= deadline:
        return False
    with claimed.get_lock():
        if trials is not None and claimed.value >= trials:
            return False
        claimed.value += 1
        return True


# ------------------------------------------------------------------------------------ worker
class _StopRequest:
    """A worker's stop request (SIGINT or SIGTERM): recorded always, raised as
    KeyboardInterrupt only while the worker is inside `interruptible()` (training a trial)."""

    requested = False
    training = False  # inside interruptible()

    @classmethod
    def on_signal(cls, signum: int, frame: Any) -> None:
        cls.requested = True
        if cls.training:
            cls.training = False  # one interrupt: the clean-up that follows runs to the end
            raise KeyboardInterrupt

    @classmethod
    @contextmanager
    def interruptible(cls) -> Iterator[None]:
        """Training a trial: a stop request (earlier or now) interrupts it."""
        if cls.requested:
            raise KeyboardInterrupt
        cls.training = True
        try:
            yield
        finally:
            cls.training = False




def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if isinstance(error, ConfigError) else f"{type(error).__name__}: {text}"


def worker_main(spec: WorkerSpec, messages: Any, claimed: Any) -> None:
    """A worker process: trials until the budget or the time is spent, or it is stopped.

    Sends (kind, index, payload) to the parent: ("epoch", i, info), ("trial", i, FrozenTrial),
    and exactly one last word: ("done", i, None), ("stopped", i, None) or ("error", i, text).
    """
    from molsam.tune import _fail_running, import_optuna, open_search

    signal.signal(signal.SIGTERM, _StopRequest.on_signal)
    signal.signal(signal.SIGINT, _StopRequest.on_signal)
    search = None
    code = 0
    try:
        optuna = import_optuna()
        # The parent prints one line a trial; Optuna's warnings would add, for a stopped trial,
        # the KeyboardInterrupt's traceback.
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        search = open_search(
            spec.recipe, spec.out, spec.storage, study_name=spec.study_name, prune=spec.prune,
            on_epoch=lambda info: messages.put(("epoch", spec.index, info)),
            worker=worker_tag(os.getpid()), sampler_seed=spec.sampler_seed)
        search.objective.guard = _StopRequest.interruptible
        def sent(study: "optuna.Study", trial: "optuna.trial.FrozenTrial") -> None:
            messages.put(("trial", spec.index, trial))

        while not _StopRequest.requested and claim_trial(claimed, spec.trials, spec.deadline):
            search.study.optimize(search.objective, n_trials=1, catch=(ConfigError,),
                                  callbacks=[sent])
        last = ("stopped" if _StopRequest.requested else "done", spec.index, None)
    except KeyboardInterrupt:
        last = ("stopped", spec.index, None)
    except Exception as error:  # reported to the parent, which stops the search
        last = ("error", spec.index, _one_line(error))
        code = 1
    # A second signal must not cut the clean-up short (it would leave a trial RUNNING).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if search is not None:
        _fail_running(search.study, search.objective.running)
    messages.put(last)
    messages.close()
    messages.join_thread()  # the last word is in the pipe before the process ends
    sys.exit(code)


# ------------------------------------------------------------------------------------ parent
def optimize_in_workers(
    search: "Search",
    recipe: Recipe,
    out: Path,
    *,
    jobs: int,
    trials: int | None,
    timeout: float | None,
    study_name: str,
    seed: int,
    prune: bool,
    on_epoch: Callable[[dict], None] | None = None,
    on_trial: Callable[["optuna.Study", "optuna.trial.FrozenTrial"], None] | None = None,
) -> None:
    """Run the search in `jobs` worker processes (fewer when --trials is smaller) and wait.

    Raises:
        KeyboardInterrupt: this process was interrupted; the workers were stopped and every
            trial they left RUNNING is FAIL.
        WorkerFailed: a worker raised an error or died; the others were stopped likewise.
    """
    ctx = process_context()
    n = jobs if trials is None else max(1, min(jobs, trials))
    messages = ctx.Queue()
    claimed = ctx.Value("i", 0)
    deadline = None if timeout is None else time.time() + timeout
    processes: list[Any] = []
    last_words: dict[int, tuple[str, Any]] = {}
    crashed: dict[int, int] = {}  # index -> exit code of a worker that died without a last word

    def handle(message: tuple) -> None:
        kind, index, payload = message
        if kind == "epoch" and on_epoch is not None:
            on_epoch(payload)
        elif kind == "trial" and on_trial is not None:
            on_trial(search.study, payload)
        elif kind in ("done", "stopped", "error"):
            last_words[index] = (kind, payload)

    def drain(wait: float) -> None:
        try:
            handle(messages.get(timeout=wait))
            while True:
                handle(messages.get_nowait())
        except queue_module.Empty:
            pass

    def settle(wait: float) -> None:
        """Read messages until every worker has ended or `wait` seconds have passed; a worker
        that exited without a last word is recorded as crashed."""
        until = time.monotonic() + wait
        while len(last_words) + len(crashed) < n and time.monotonic() < until:
            drain(POLL_S)
            exited = [i for i, p in enumerate(processes)
                      if p.exitcode is not None and i not in last_words and i not in crashed]
            if exited:
                drain(0.0)  # a worker's messages are in the pipe before it exits
                for i in exited:
                    if i not in last_words:
                        crashed[i] = processes[i].exitcode

    def stop(first_grace: float) -> None:
        settle(first_grace)
        for i, p in enumerate(processes):
            if p.exitcode is None and i not in last_words:
                p.terminate()  # SIGTERM: the worker stops like on Ctrl-C
        settle(STOP_GRACE_S)
        for i, p in enumerate(processes):
            p.join(timeout=EXIT_GRACE_S)  # after its last word a worker only flushes and exits
            if p.exitcode is None:
                p.kill()
                p.join()
                if i not in last_words:
                    crashed[i] = p.exitcode

    interrupted = terminated = False
    try:
        for index in range(n):
            spec = WorkerSpec(index, n, recipe, out, search.storage, study_name, prune,
                              worker_seed(seed, index), trials, deadline)
            process = ctx.Process(target=worker_main, args=(spec, messages, claimed),
                                  name=f"molsam-tune-worker-{index}")
            process.start()
            processes.append(process)
        while len(last_words) + len(crashed) < n:
            settle(POLL_S)
            if crashed or any(kind == "error" for kind, _ in last_words.values()):
                break
    except KeyboardInterrupt as stop_signal:
        interrupted = True
        terminated = isinstance(stop_signal, Terminated)
    finally:
        # Clean-up runs to the end even on a second Ctrl-C or SIGTERM: cut short, it would
        # leave trials RUNNING (the workers ignore further signals while they clean up, too).
        with _signals_ignored():
            try:
                # Ctrl-C reached the workers too: give them a moment to stop by themselves.
                stop(INTERRUPT_GRACE_S if interrupted and not terminated else 0.0)
            finally:
                for p in processes:
                    if p.exitcode is None:
                        p.kill()
                    p.join()
                orphans = _fail_orphans(
                    search.study, processes,
                    "the search was interrupted" if interrupted else "its worker died")
    if interrupted:
        raise KeyboardInterrupt
    problems = [f"worker {i + 1} of {n} (pid {processes[i].pid}) failed: {text}"
                for i, (kind, text) in sorted(last_words.items()) if kind == "error"]
    problems += [f"worker {i + 1} of {n} (pid {processes[i].pid}) died ({_exit_reason(code)})"
                 for i, code in sorted(crashed.items())]
    if problems:
        lost = f"; trial {', '.join(map(str, orphans))} marked failed" if orphans else ""
        raise WorkerFailed(f"{problems[0]}{lost}; the other workers were stopped and the study "
                           "keeps every finished trial")


@contextmanager
def _signals_ignored() -> Iterator[None]:
    """SIGINT and SIGTERM ignored within the block (main thread only: elsewhere Python cannot
    set handlers, and signals go to the main thread anyway)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _fail_orphans(study: "optuna.Study", processes: list[Any], why: str) -> list[int]:
    """Mark FAIL the trials that these (ended) workers left RUNNING; their numbers."""
    tags = {worker_tag(p.pid) for p in processes if p.pid is not None}
    return fail_running_trials(study, lambda tag: why if tag in tags else None)
