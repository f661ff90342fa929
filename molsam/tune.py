"""Hyper-parameter search over a recipe with Optuna (`molsam tune`).

The search space is the recipe's `tune:` section (or DEFAULT_SPACE); each trial trains the recipe
with one point of it on the recipe's split, once per seed in train.seeds, and scores it by the mean
best-epoch validation metric (higher or lower is better as the metric says). The test part of the
split is removed before training, so a search never reads a test label; `molsam train best.yaml`
scores the winner on test afterwards.

Optuna pieces (Akiba et al., "Optuna: A Next-generation Hyperparameter Optimization Framework",
KDD 2019): the TPE sampler (Bergstra et al., NeurIPS 2011), seeded; a pruner fed with every
epoch's best-so-far validation score (`tune.pruner`, see build_pruner); and a study kept in Optuna
storage, so a second call continues the search and several processes or machines share it.

Storage. The default is a journal file, DIR/study.journal (Optuna's JournalStorage with a
JournalFileBackend), because `--jobs N` runs N processes on one study: the RDBStorage docstring
says "We would never recommend SQLite3 for parallel optimization", while Optuna's tutorial
("Easy Parallelization") names JournalStorage or RDBStorage for several processes on one
machine; the journal needs no database server (an append-only log guarded by a lock file, which
Optuna also documents for NFS). A study.db that an older molsam left in DIR is still used, so
such a search continues. `--storage` takes a database URL (postgresql://, mysql://, or
sqlite:/// for one process) for machines that share a server, or a journal file path.

A search that was killed outright (SIGKILL, a lost session, the machine rebooted) cannot mark its
trials in progress failed, and neither Optuna's journal storage (no heartbeat there) nor a
database without `heartbeat_interval` ever does: they would stay RUNNING, counted as bad points
by the constant liar forever. Every trial is tagged with the machine and pid that run it, and a
search that opens the study marks failed the RUNNING trials of this machine whose process no
longer exists (fail_abandoned_trials); trials of other machines on a shared storage are left
alone.

Optuna is an optional extra (`pip install molsam[tune]`) and is imported only in this module
(and molsam.tune_jobs, its worker processes), and only when a search runs.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import socket
import tempfile
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ContextManager

import numpy as np

from molsam.config import (
    PrunerConfig,
    Recipe,
    SearchChoices,
    SearchRange,
    recipe_from_dict,
    recipe_to_dict,
    save_recipe,
    tune_to_dict,
)
from molsam.errors import ConfigError, MolsamError
from molsam.outputs import naming, output_folder, save_figure

if TYPE_CHECKING:  # pragma: no cover
    import optuna

log = logging.getLogger("molsam")

#: Searched when a recipe has no `tune:` section. rho spans the range where GraphSAM helps on
#: MoleculeNet (docs/GRAPHSAM.md: too large a rho costs more than it gains); lr is the Noam peak.
DEFAULT_SPACE: dict[str, Any] = {
    "optim.rho": {"low": 0.005, "high": 0.2, "log": True},
    "optim.lr": {"low": 1e-4, "high": 3e-3, "log": True},
    "model.hidden": [64, 128, 256],
    "model.layers": {"low": 2, "high": 6},
    "model.dropout": {"low": 0.0, "high": 0.3},
}

INSTALL_HINT = "molsam tune needs Optuna: pip install molsam[tune]"


def import_optuna():
    """Optuna, or a one-line MolsamError saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise MolsamError(INSTALL_HINT) from None
    return optuna


def search_space(recipe: Recipe) -> dict[str, SearchRange | SearchChoices]:
    """The recipe's `tune:` section, or DEFAULT_SPACE (without optim.rho when the optimizer has
    no rho, e.g. adam)."""
    if recipe.tune is not None and recipe.tune.as_dict():  # (a tune: with only pruner: is not)
        return recipe.tune.as_dict()
    from molsam.optim import valid_keywords

    default = {k: v for k, v in DEFAULT_SPACE.items()
               if k != "optim.rho" or "rho" in valid_keywords(recipe.optim.name)}
    base = recipe_to_dict(recipe)
    return recipe_from_dict({**base, "tune": default}).tune.as_dict()  # validated like a written one


def build_pruner(config: PrunerConfig | None, prune: bool = True) -> "optuna.pruners.BasePruner":
    """The Optuna pruner of `tune.pruner` (default: PrunerConfig(), median), or none.

    Steps are epochs (seed position * epochs + epoch), and values are the trial's best
    validation score so far, i.e. what the objective would be if the trial stopped there.

    Why these and not Hyperband: a search here is ~20 trials. HyperbandPruner runs
    floor(log_r(max_resource / min_resource)) + 1 brackets (4 for 30 epochs from epoch 1 at
    r = 3) and TPE samples each bracket from that bracket's trials only; Optuna's docs say each
    bracket then needs more than TPE's 10 start-up trials, so 20 trials would stay random search.
    SuccessiveHalvingPruner (ASHA; Li et al., MLSys 2020) is one such bracket: with warm-up 5 and
    r = 3, a trial goes on past epoch 6 only if it is in the best third of the trials that got
    there (from the second trial on: no start-up trials), and again past epoch 16.

    Why median stays the default: replayed on 35 measured bbbp validation curves (random
    20-trial searches, `benchmarks/pruner_replay.py`), median pruning trained 50% of the epochs
    of no pruning and kept the eventual winner in 36% of searches; median with 2 start-up
    trials 42% and 18%, successive halving 44% and 18%. The more aggressive rules save a few
    more epochs but lose the winner twice as often, because bbbp's 6-epoch validation ranking
    is noisy. They are there for searches whose early epochs rank trials well.
    """
    optuna = import_optuna()
    config = config or PrunerConfig()
    if not prune or config.name == "none":
        return optuna.pruners.NopPruner()
    if config.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=config.startup_trials,
                                           n_warmup_steps=config.warmup_epochs)
    # min_resource is the first rung: the first step at which a trial can be stopped (step
    # warmup_epochs is the epoch after the warm-up, as for the median pruner's n_warmup_steps).
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=max(1, config.warmup_epochs), reduction_factor=config.reduction_factor,
        min_early_stopping_rate=0)


def pruner_config(recipe: Recipe) -> PrunerConfig:
    """The recipe's tune.pruner, or the default one."""
    return (recipe.tune.pruner if recipe.tune is not None and recipe.tune.pruner is not None
            else PrunerConfig())


def suggest(trial: "optuna.Trial", key: str, spec: SearchRange | SearchChoices) -> Any:
    """One value for `key` from the trial (Optuna records it under the dotted key)."""
    if isinstance(spec, SearchChoices):
        return trial.suggest_categorical(key, list(spec.choices))
    if spec.integer:
        return trial.suggest_int(key, int(spec.low), int(spec.high),
                                 step=int(spec.step or 1), log=spec.log)
    return trial.suggest_float(key, spec.low, spec.high, step=spec.step, log=spec.log)


def apply_params(recipe_dict: dict, params: dict[str, Any]) -> dict:
    """A copy of a recipe mapping with {dotted key: value} set (keys are section.key)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in recipe_dict.items()}
    for key, value in params.items():
        section, name = key.split(".", 1)
        out[section] = {**(out.get(section) or {}), name: value}
    return out


def base_recipe_dict(recipe: Recipe) -> dict:
    """The recipe a search starts from, without its `tune:` section (trials and best.yaml are
    plain training recipes)."""
    d = recipe_to_dict(recipe)
    d.pop("tune", None)
    return d


# ------------------------------------------------------------------------------------- data
@dataclass
class _Prepared:
    """Featurized molecules on the training device, the task, and the split without test."""

    source: Any
    split: Any
    task: str
    target_names: list[str]
    device: Any
    classes: list[list[str]] | None = None  # multiclass class names per target


class _DataCache:
    """Featurizes once per distinct featurizer (model.pe_steps and, through model.name, the
    featurizer extras: the only searchable keys that change the store) and splits once; the
    split's test part is dropped here, before any training."""

    def __init__(self, base: Recipe) -> None:
        self.base = base
        self.cache: dict[tuple, _Prepared] = {}
        self.test_size = 0

    def get(self, recipe: Recipe) -> _Prepared:
        from molsam.train.run import recipe_featurizer

        key = recipe_featurizer(recipe)
        if key not in self.cache:
            self.cache[key] = self._prepare(recipe)
        return self.cache[key]

    def _prepare(self, recipe: Recipe) -> _Prepared:
        from molsam.data.pipeline import split_store
        from molsam.data.read_options import ReadOptions
        from molsam.data.splits import SplitIndices
        from molsam.devices import resolve_device
        from molsam.train.run import check_task_labels, load_recipe_data

        store = load_recipe_data(recipe)
        task = recipe.data.task or store.task
        check_task_labels(store, task)
        s = recipe.split
        split = split_store(store, s.method, s.sizes, s.seed, column=s.column, split_file=s.file,
                            read=ReadOptions.from_recipe(recipe.data))
        if len(split.train) == 0:
            raise ConfigError("split: the training part is empty (check split.sizes)")
        if len(split.val) == 0:
            raise ConfigError("split.sizes: a search needs a validation part (its score is the "
                              "objective)")
        self.test_size = len(split.test)
        no_test = SplitIndices(split.train, split.val, np.empty(0, dtype=split.test.dtype))
        device = resolve_device(recipe.train.device, key="train.device")
        return _Prepared(store.batch_source(device), no_test, task, store.target_names, device,
                         store.classes)


# ------------------------------------------------------------------------------------ objective
class Objective:
    """Optuna objective: train one point of the space for every seed; mean best validation score.

    Pruning: after each epoch the trial reports its best validation score so far (of this seed)
    at step `seed_position * epochs + epoch` (the same step means the same seed and epoch in
    every trial, since seeds and epochs are fixed during a search), and stops with
    optuna.TrialPruned when the pruner says so. The best so far, not the epoch's own score, is
    what the objective would be if the trial stopped now, so pruners compare like with like and
    one noisy epoch does not stop a trial. Checkpoints go to a temporary folder removed after
    the trial. Each trial records the `machine:pid` that runs it (`worker`, default this
    process's worker_tag) as user attribute `worker`, so the process that started worker
    processes can tell their trials apart, and a later search can tell a killed one's.
    """

    def __init__(
        self,
        base: Recipe,
        space: dict[str, SearchRange | SearchChoices],
        work_dir: Path,
        on_epoch: Callable[[dict], None] | None = None,
        worker: str | None = None,
    ) -> None:
        self.base, self.space, self.work_dir = base, space, Path(work_dir)
        self.worker = worker
        self.base_dict = base_recipe_dict(base)
        self.data = _DataCache(base)
        self.on_epoch = on_epoch or (lambda info: None)
        self.running: list[int] = []  # trial ids this process is training (for Ctrl-C clean-up)
        #: Context a trial trains in; a `--jobs` worker's lets a stop request interrupt only
        #: there (molsam.tune_jobs), never Optuna's bookkeeping around it.
        self.guard: Callable[[], ContextManager[None]] = contextlib.nullcontext

    def metric_and_task(self) -> tuple[str, str]:
        """The objective's metric and the task (featurizes the base recipe's data)."""
        from molsam.train.metrics import default_metric

        prepared = self.data.get(self.base)
        return self.base.train.metric or default_metric(prepared.task), prepared.task

    def __call__(self, trial: "optuna.Trial") -> float:
        optuna = import_optuna()
        from molsam.devices import DEFAULT_CPU_THREADS, cpu_threads
        from molsam.train.loop import ReplicateTrainer
        from molsam.train.metrics import LOWER_IS_BETTER

        trial.set_user_attr("worker", self.worker or worker_tag(os.getpid()))
        metric, _task = self.metric_and_task()
        better = min if metric in LOWER_IS_BETTER else max
        params = {key: suggest(trial, key, spec) for key, spec in self.space.items()}
        try:
            recipe = recipe_from_dict(apply_params(self.base_dict, params), "trial")
        except ConfigError as error:  # e.g. a sampled hidden that heads does not divide
            trial.set_user_attr("error", str(error))
            raise
        recipe_dict = recipe_to_dict(recipe)
        data = self.data.get(recipe)
        epochs = recipe.train.epochs
        scores: list[float] = []
        self.running.append(trial._trial_id)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            with self.guard(), \
                    tempfile.TemporaryDirectory(prefix=f".trial-{trial.number}-",
                                                dir=self.work_dir) as tmp, \
                    cpu_threads(data.device, recipe.train.threads or DEFAULT_CPU_THREADS):
                for position, seed in enumerate(recipe.train.seeds):
                    best: list[float] = []  # this seed's best validation score so far

                    def report(info: dict, position: int = position,
                               best: list[float] = best) -> None:
                        if not info.get("done_epoch"):
                            return
                        self.on_epoch({**info, "trial": trial.number})
                        if info["val"] is None or not math.isfinite(info["val"]):
                            return
                        best[:] = [better(best[0], info["val"]) if best else info["val"]]
                        trial.report(best[0], step=position * epochs + info["epoch"])
                        if trial.should_prune():
                            raise optuna.TrialPruned(
                                f"val {info['metric']} {info['val']:.4f} at epoch "
                                f"{info['epoch'] + 1} of seed {info['seed']}")

                    trainer = ReplicateTrainer(
                        recipe, recipe_dict, data.source, data.split, task=data.task,
                        target_names=data.target_names, seed=seed,
                        out_dir=Path(tmp) / f"seed_{seed}", device=data.device,
                        on_progress=report, classes=data.classes,
                    )
                    result = trainer.fit()
                    if result.best_val is None or not math.isfinite(result.best_val):
                        raise ConfigError(
                            f"split: the validation {trainer.metric} is undefined for seed {seed} "
                            "(a single class in the validation part?)")
                    scores.append(result.best_val)
                    trial.set_user_attr(f"val_seed_{seed}", result.best_val)
                    trial.set_user_attr(f"epochs_seed_{seed}", result.epochs_run)
        finally:
            self.running.remove(trial._trial_id)
        return float(np.mean(scores))


# ------------------------------------------------------------------------------------ study
@dataclass
class TuneResult:
    """What a `tune` call leaves behind (paths are None when there was nothing to write)."""

    study_name: str
    storage: str
    metric: str
    direction: str
    trials_run: int
    best_value: float | None
    best_params: dict
    best_recipe: Path | None
    files: dict[str, Path | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False


def this_machine() -> str:
    """The host name and the MAC-derived node id (uuid.getnode): containers and cloned virtual
    machines that share a storage often share a host name too ("localhost", "vm")."""
    return f"{socket.gethostname()}-{uuid.getnode():012x}"


def worker_tag(pid: int) -> str:
    """The `worker` user attribute of the trials a process runs: `machine:pid`."""
    return f"{this_machine()}:{pid}"


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: an existence check, nothing is sent
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def fail_running_trials(study: "optuna.Study", why: Callable[[str], str | None]) -> list[int]:
    """Mark failed the RUNNING trials for whose `worker` tag `why` gives a reason (recorded as
    the trial's `error`); their numbers. A trial that another process finished meanwhile is
    left as that process left it."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    numbers = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = why(str(trial.user_attrs.get("worker", "")))
        if reason is None:
            continue
        try:
            study._storage.set_trial_user_attr(trial._trial_id, "error", reason)
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue
        numbers.append(trial.number)
    return numbers


def fail_abandoned_trials(study: "optuna.Study") -> list[int]:
    """Mark failed the RUNNING trials that a process of this machine left behind when it was
    killed (its pid no longer exists); their numbers. A reused pid keeps a trial RUNNING (the
    rare miss is harmless: the trial stays as it was), never fails a live one."""
    machine = this_machine()

    def abandoned(tag: str) -> str | None:
        owner, _, pid = tag.rpartition(":")
        if owner != machine or not pid.isdigit() or _process_exists(int(pid)):
            return None
        return f"abandoned: process {tag} ended (killed) during it"

    return fail_running_trials(study, abandoned)


def default_storage(out_dir: str | Path) -> str:
    """The journal file DIR/study.journal, or the SQLite URL of DIR/study.db when an older
    molsam started the study there (and no journal exists), so that search continues."""
    out = Path(out_dir).resolve()
    if (out / "study.db").is_file() and not (out / JOURNAL_NAME).exists():
        return f"sqlite:///{out / 'study.db'}"
    return str(out / JOURNAL_NAME)


JOURNAL_NAME = "study.journal"


def is_url(storage: str) -> bool:
    """A database URL (scheme://...), as opposed to a journal file path."""
    return "://" in storage


def open_storage(storage: str) -> "str | optuna.storages.BaseStorage":
    """What optuna.create_study / load_study take for a --storage value: a database URL as is
    (Optuna builds an RDBStorage), or a JournalStorage on the journal file at that path."""
    optuna = import_optuna()
    if is_url(storage):
        _check_sqlite_folder(storage)
        return storage
    path = Path(storage)
    if not path.parent.is_dir():
        raise ConfigError(f"--storage {storage}: folder {path.parent} does not exist")
    if path.is_dir():
        raise ConfigError(f"--storage {storage}: is a folder; give a journal file path (e.g. "
                          f"{path / JOURNAL_NAME}) or a database URL")
    from optuna.storages.journal import JournalFileBackend

    class NamedJournal(JournalFileBackend):
        """Optuna's journal file, whose write errors (a full disk) name the file."""

        def append_logs(self, logs):
            with naming(path):
                super().append_logs(logs)

    return optuna.storages.JournalStorage(NamedJournal(str(path)))


#: What to do, after "--storage URL: ...", when the storage cannot be opened.
STORAGE_HINT = ("a journal file path or another database URL (e.g. sqlite:///DIR/study.db, "
                "postgresql://user@host/db)")


def _check_sqlite_folder(storage: str) -> None:
    """A sqlite:///FILE URL whose folder is missing: one line now, not SQLAlchemy's "unable to
    open database file" traceback."""
    if not storage.startswith("sqlite:///"):
        return
    file = storage[len("sqlite:///"):].split("?")[0]
    if not file or file == ":memory:":
        return
    folder = Path(file).parent
    if not folder.is_dir():
        raise ConfigError(f"--storage {storage}: folder {folder} does not exist; create it, or "
                          f"give {STORAGE_HINT}")


def storage_error(storage: str, error: Exception) -> ConfigError | None:
    """One line for a database URL that SQLAlchemy cannot open (an unknown kind of database, a
    malformed URL, a server or file it cannot reach); None for an error of another library."""
    if not type(error).__module__.startswith("sqlalchemy"):
        return None
    kind = type(error).__name__
    if kind == "NoSuchModuleError":
        scheme = storage.split("://", 1)[0]
        return ConfigError(f"--storage {storage}: {scheme!r} is not a kind of database SQLAlchemy "
                           f"knows (or its driver is not installed); give {STORAGE_HINT}")
    if kind == "ArgumentError":
        return ConfigError(f"--storage {storage}: not a database URL; give {STORAGE_HINT}")
    orig = getattr(error, "orig", None) or error
    reason = " ".join(str(orig).split()) or kind
    return ConfigError(f"--storage {storage}: cannot open the database ({reason}); check the URL "
                       f"and that the database (server or file) can be reached, or "
                       f"give {STORAGE_HINT}")


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for key, value in d.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def open_study(
    storage: str,
    study_name: str,
    *,
    direction: str,
    fingerprint: dict,
    seed: int,
    pruner: "optuna.pruners.BasePruner",
    sampler_seed: int | None = None,
) -> "optuna.Study":
    """Create the study, or load it if it exists; a study started from another recipe or space
    is refused (its trials would not compare), naming the first key that differs.

    The TPE sampler is seeded with `seed` + the number of trials already in the study (or with
    `sampler_seed` as given: worker processes derive their own), and uses the constant liar
    (running trials count as bad ones), so workers sharing the study do not all sample the same
    promising point (Optuna's advice for parallel TPE)."""
    optuna = import_optuna()
    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        try:
            study = optuna.create_study(storage=open_storage(storage), study_name=study_name,
                                        direction=direction, load_if_exists=True, pruner=pruner)
        except (ImportError, ValueError) as error:  # bad URL, missing database driver
            raise ConfigError(f"--storage {storage}: {' '.join(str(error).split())}") from None
        except Exception as error:  # SQLAlchemy's: an unknown database, one it cannot open
            refused = storage_error(storage, error)
            if refused is None:
                raise
            raise refused from None
        # The sampler's seed moves with the trials already in the study, so a continued search
        # does not replay the random start-up points of the first call.
        study.sampler = optuna.samplers.TPESampler(
            seed=seed + len(study.trials) if sampler_seed is None else sampler_seed,
            constant_liar=True)
    if study.direction.name.lower() != direction:
        raise ConfigError(f"study {study_name!r} in {storage} maximizes/minimizes the other way "
                          f"({study.direction.name.lower()}); use another --study-name or --out")
    saved = study.user_attrs.get("molsam")
    if saved is None:
        study.set_user_attr("molsam", fingerprint)
    elif saved != json.loads(json.dumps(fingerprint)):
        old, new = _flat(saved), _flat(json.loads(json.dumps(fingerprint)))
        differing = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        raise ConfigError(
            f"study {study_name!r} in {storage} was started with another recipe or search space "
            f"({differing[0]}: {old.get(differing[0])!r} there, {new.get(differing[0])!r} here); "
            "use another --study-name or --out")
    return study


@dataclass
class Search:
    """One process's handle on a search: its objective, the study, and how it is scored."""

    objective: Objective
    study: "optuna.Study"
    metric: str
    direction: str
    storage: str


def open_search(
    recipe: Recipe,
    out: Path,
    storage: str,
    *,
    study_name: str = "molsam",
    seed: int = 0,
    prune: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
    worker: str | None = None,
    sampler_seed: int | None = None,
) -> Search:
    """The objective and the study for `recipe` (featurizes its data: the disk cache makes this
    cheap for the second process that asks). Used by tune_recipe and by each worker process."""
    from molsam.train.metrics import LOWER_IS_BETTER

    space = search_space(recipe)
    objective = Objective(recipe, space, out, on_epoch, worker=worker)
    metric, _task = objective.metric_and_task()
    direction = "minimize" if metric in LOWER_IS_BETTER else "maximize"
    fingerprint = {"recipe": objective.base_dict, "space": tune_to_dict(space), "metric": metric}
    study = open_study(storage, study_name, direction=direction, fingerprint=fingerprint,
                       seed=seed, pruner=build_pruner(pruner_config(recipe), prune),
                       sampler_seed=sampler_seed)
    return Search(objective, study, metric, direction, storage)


def tune_recipe(
    recipe: Recipe,
    out_dir: str | Path,
    *,
    trials: int | None = 20,
    timeout: float | None = None,
    storage: str | None = None,
    study_name: str = "molsam",
    seed: int = 0,
    prune: bool = True,
    jobs: int = 1,
    on_epoch: Callable[[dict], None] | None = None,
    on_trial: Callable[["optuna.Study", "optuna.trial.FrozenTrial"], None] | None = None,
) -> TuneResult:
    """Run (or continue) a search and write its outputs into `out_dir`.

    Args:
        recipe: the base recipe; its `tune:` section (or DEFAULT_SPACE) is the search space.
        trials / timeout: stop this call after this many trials / seconds (None: no limit);
            with jobs > 1 the trial budget is shared by all workers.
        storage: a database URL or a journal file path (default: default_storage(out_dir)).
        study_name: the study inside the storage; a second call with the same name continues it.
        seed: seeds the TPE sampler (give each process sharing a storage its own; workers
            derive theirs from it).
        prune: pruning on per-epoch validation scores (the recipe's tune.pruner, default
            median); False: none.
        jobs: trial processes on this machine (molsam.tune_jobs), one torch thread each; the
            outputs are written once, by this process, when they are done.
        on_epoch / on_trial: progress callbacks (an epoch of a trial; a finished trial), called
            in this process also for trials that workers run.

    Returns:
        TuneResult. On KeyboardInterrupt (or SIGTERM, through the CLI) the trials in progress are
        recorded as failed, the outputs are written for the finished trials, and the
        KeyboardInterrupt propagates with the TuneResult attached as its `tune_result`
        attribute. A worker that fails or dies stops the search the same way, and then a
        MolsamError says which worker and why.
    """
    import_optuna()
    if jobs < 1:
        raise ConfigError(f"--jobs: expected an integer >= 1, got {jobs}")
    out = output_folder(out_dir, "--out")  # a read-only or unmakeable folder: one line
    storage = storage or default_storage(out)
    if jobs > 1 and is_url(storage) and storage.startswith("sqlite"):
        raise ConfigError(
            f"--jobs {jobs}: {storage} is SQLite, which Optuna advises against for several "
            "processes; use a journal file (the default for a new --out) or a database server URL")
    search = open_search(recipe, out, storage, study_name=study_name, seed=seed, prune=prune,
                         on_epoch=on_epoch)
    study, objective = search.study, search.objective
    abandoned = fail_abandoned_trials(study)
    notes = [f"trial(s) {', '.join(map(str, abandoned))} had been left RUNNING by a killed "
             "search on this machine: marked failed"] if abandoned else []
    for note in notes:
        log.warning(note)
    before = len(study.trials)
    failure: MolsamError | None = None
    try:
        if jobs > 1:
            from molsam.tune_jobs import WorkerFailed, optimize_in_workers

            try:
                optimize_in_workers(
                    search, recipe, out, jobs=jobs, trials=trials, timeout=timeout,
                    study_name=study_name, seed=seed + before, prune=prune,
                    on_epoch=on_epoch, on_trial=on_trial)
            except WorkerFailed as error:
                failure = MolsamError(str(error))
        else:
            study.optimize(objective, n_trials=trials, timeout=timeout, catch=(ConfigError,),
                           callbacks=[on_trial] if on_trial else [])
    except KeyboardInterrupt as interrupt:
        _fail_running(study, objective.running)
        result = write_outputs(study, objective, out, search.metric, search.direction, storage,
                               trials_run=len(study.trials) - before)
        result.interrupted = True
        result.notes[:0] = notes
        interrupt.tune_result = result  # type: ignore[attr-defined]
        raise
    result = write_outputs(study, objective, out, search.metric, search.direction, storage,
                           trials_run=len(study.trials) - before)
    result.notes[:0] = notes
    if failure is not None:
        raise failure
    return result


def _fail_running(study: "optuna.Study", trial_ids: list[int]) -> None:
    """Mark trials this process left RUNNING as FAIL. Optuna does this itself when the interrupt
    lands inside the objective; this covers one that lands in Optuna's own bookkeeping."""
    from optuna.trial import TrialState

    for trial_id in list(trial_ids):
        if study._storage.get_trial(trial_id).state == TrialState.RUNNING:
            study._storage.set_trial_state_values(trial_id, TrialState.FAIL)


# ------------------------------------------------------------------------------------ outputs
def write_outputs(
    study: "optuna.Study",
    objective: Objective,
    out: Path,
    metric: str,
    direction: str,
    storage: str,
    *,
    trials_run: int,
) -> TuneResult:
    """best.yaml, trials.csv, history.png and importance.png (when they can be drawn)."""
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    result = TuneResult(study.study_name, storage, metric, direction, trials_run,
                        None, {}, None)
    result.files["trials.csv"] = write_trials_csv(study, out / "trials.csv")
    if complete:
        best = study.best_trial
        result.best_value, result.best_params = best.value, dict(best.params)
        best_recipe = recipe_from_dict(apply_params(objective.base_dict, best.params), "best")
        result.best_recipe = out / "best.yaml"
        save_recipe(best_recipe, result.best_recipe)
    else:
        result.notes.append("no trial has completed yet: no best.yaml")
    result.files["history.png"], note = plot_history(study, out / "history.png")
    if note:
        result.notes.append(note)
    result.files["importance.png"], note = plot_importance(study, out / "importance.png")
    if note:
        result.notes.append(note)
    return result


def write_trials_csv(study: "optuna.Study", path: Path) -> Path:
    """One row per trial: number, state, value, each parameter, timing, last reported epoch."""
    trials = study.get_trials(deepcopy=False)
    names = sorted({name for t in trials for name in t.params})
    columns = ["number", "state", "value", *names, "duration_s", "last_step", "error"]
    tmp = path.with_name(f".{path.name}.tmp")
    with naming(path, tmp), open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for t in trials:
            duration = t.duration.total_seconds() if t.duration is not None else None
            writer.writerow({
                "number": t.number, "state": t.state.name,
                "value": "" if t.value is None else f"{t.value:.6g}",
                **{name: t.params.get(name, "") for name in names},
                "duration_s": "" if duration is None else f"{duration:.1f}",
                "last_step": "" if t.last_step is None else t.last_step,
                "error": t.user_attrs.get("error", ""),
            })
    with naming(path, tmp):
        tmp.replace(path)
    return path


def _save_axes(axes: Any, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
    figure.set_size_inches(8, 5)
    figure.tight_layout()
    try:
        save_figure(figure, path, dpi=120)  # atomic; a full disk: an OSError naming the PNG
    finally:
        plt.close(figure)
    return path


def plot_history(study: "optuna.Study", path: Path) -> tuple[Path | None, str | None]:
    """Optuna's optimization-history plot (needs one completed trial)."""
    from optuna.exceptions import ExperimentalWarning
    from optuna.trial import TrialState
    from optuna.visualization.matplotlib import plot_optimization_history

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None, "no completed trial: no history.png"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return _save_axes(plot_optimization_history(study), path), None


def plot_importance(study: "optuna.Study", path: Path) -> tuple[Path | None, str | None]:
    """Optuna's parameter-importance plot (fANOVA). It needs two completed trials and a
    parameter that took different values in them; otherwise a note says why it is missing."""
    from optuna.exceptions import ExperimentalWarning
    from optuna.trial import TrialState
    from optuna.visualization.matplotlib import plot_param_importances

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return None, f"{len(complete)} completed trial(s): no importance.png (needs 2)"
    varying = [name for name in complete[0].params
               if len({json.dumps(t.params.get(name)) for t in complete}) > 1]
    if not varying:
        return None, "no parameter varied across the completed trials: no importance.png"
    from optuna.importance import FanovaImportanceEvaluator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        # fANOVA fits a random forest: seeded, so the same study draws the same plot.
        axes = plot_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0))
        return _save_axes(axes, path), None


def best_trials(study: "optuna.Study", n: int = 5) -> list["optuna.trial.FrozenTrial"]:
    """The n best completed trials, best first."""
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    reverse = study.direction.name == "MAXIMIZE"
    return sorted(complete, key=lambda t: t.value, reverse=reverse)[:n]


def load_study(storage: str, study_name: str = "molsam") -> "optuna.Study":
    """An existing study (to inspect it, or in tests); `storage` as for tune_recipe."""
    optuna = import_optuna()
    return optuna.load_study(study_name=study_name, storage=open_storage(storage))
