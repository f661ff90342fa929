"""`molsam train`: a recipe -> a run directory (data, split, replicates, summary, plots).

Run directory:
    recipe.yaml      the fully resolved recipe (re-runnable as is)
    splits.json      indices, rows and SMILES per part, with split statistics
    summary.json     per replicate and mean +- std over replicates, per metric and per task
    curves.png       learning curves of every replicate
    seed_<s>/        best.pt, last.pt, metrics.csv for the replicate with seed s
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock, Timeout

from molsam.config import Recipe, load_recipe, recipe_to_dict, save_recipe
from molsam.data.pipeline import DataSpec, load_store, split_store
from molsam.data.read_options import ReadOptions
from molsam.data.split_stats import saved_split_indices, split_statistics, write_splits_json
from molsam.data.splits import file_split
from molsam.data.targets import targets_line
from molsam.data.store import GraphStore
from molsam.data.table import non_binary_labels
from molsam.errors import CheckpointError, ConfigError, InputError
from molsam.jsonio import write_json_atomic
from molsam.outputs import output_folder
from molsam.devices import (
    DEFAULT_CPU_THREADS,
    cpu_threads,
    deterministic_algorithms,
    resolve_device,
)
from molsam.train.distributed import Distributed
from molsam.train.domain import training_domain
from molsam.train.loop import ReplicateResult, ReplicateTrainer, warmup_epochs
from molsam.train.metrics import mean_std, metric_names
from molsam.train.plots import plot_learning_curves

log = logging.getLogger("molsam")

#: Held (an OS file lock) while a train writes into a run directory.
LOCK_FILE = ".molsam.lock"


def recipe_featurizer(recipe: Recipe) -> tuple[int, tuple[str, ...]]:
    """(RWSE steps, featurizer extras) the recipe's model reads: GPS its model.pe_steps; CoMPT
    no RWSE and the "compt" extra (molsam.chem.compt_inputs); both, the molecule-level
    features of model.mol_features (molsam.chem.descriptors)."""
    features = tuple(recipe.model.mol_features)
    if recipe.model.name == "compt":
        return 0, ("compt", *features)
    return recipe.model.pe_steps, features


def load_recipe_data(
    recipe: Recipe, on_progress: Callable[[int, int], None] | None = None
) -> GraphStore:
    """Featurize (through the cache) the molecules a recipe names."""
    rwse_steps, extras = recipe_featurizer(recipe)
    store = load_store(
        DataSpec.from_config(recipe.data),  # data.delimiter, data.decimal, data.sheet included
        rwse_steps=rwse_steps,
        extras=extras,
        workers=recipe.train.workers or None,
        on_progress=on_progress,
    )
    if store.num_tasks == 0:
        raise InputError(
            f"{store.source}: no target columns to train on "
            f"({targets_line([], None, store.ignored)}); set data.target_columns"
        )
    return store


def check_task_labels(store: GraphStore, task: str) -> None:
    """Refuse labels the task cannot train on (classification needs 0/1)."""
    if task == "classification":
        bad = non_binary_labels(store.y)
        if bad.any():
            at, column = np.argwhere(bad)[0]
            raise InputError(
                f"{store.source}: data.task is classification but the labels are not all 0/1: "
                f"column {store.target_names[column]!r}, data row {int(store.rows[at]) + 1} "
                f"has {float(store.y[at, column]):g}"
            )


def train_recipe(
    recipe: Recipe,
    out_dir: str | Path,
    *,
    resume: bool = False,
    on_progress: Callable[[dict], None] | None = None,
    on_featurize: Callable[[int, int], None] | None = None,
    log_warning: Callable[[str], None] = log.warning,
    log_info: Callable[[str], None] = log.info,
) -> dict:
    """Train every replicate of `recipe` into `out_dir`; returns the summary (also saved).

    With `resume`, replicates whose last.pt says finished are kept, an unfinished one continues
    from its last.pt, and the split is read back from splits.json (never recomputed).

    Under torchrun (several processes), every process calls this: each trains on its part of
    every batch, rank 0 alone writes the run directory (molsam.train.distributed).
    """
    out = Path(out_dir)
    recipe_dict = recipe_to_dict(recipe)
    dist = Distributed.from_environment()
    device = dist.device(resolve_device(recipe.train.device, key="train.device"))
    dist.join(device)
    out = Path(dist.agree(str(out)))  # rank 0's run directory (default names hold a time)
    if not dist.is_main:
        log_warning = log_info = _ignore  # rank 0 reports them once
    with dist.main_first():  # rank 0 featurizes into the cache, the others read it
        store = load_recipe_data(recipe, on_featurize)
    log_info(targets_line(store.target_names, store.task, store.ignored, store.classes))
    task = recipe.data.task or store.task
    check_task_labels(store, task)
    if recipe.train.loss == "mve" and task != "regression":
        raise ConfigError(
            f"train.loss: mve predicts a mean and a variance of regression targets, but "
            f"{', '.join(store.target_names)} are {task} targets; use mse"
        )
    metric = recipe.train.metric
    if metric is not None and metric not in metric_names(task):
        raise ConfigError(
            f"train.metric: {metric!r} does not apply to {task} targets "
            f"({', '.join(store.target_names)}); valid: {', '.join(metric_names(task))}"
        )
    if not resume and dist.is_main:
        output_folder(out, "--out")
    # Rank 0 holds the lock for the whole run: the other ranks write nothing.
    with run_lock(out) if dist.is_main else nullcontext():
        return _train_locked(recipe, recipe_dict, store, task, out, resume=resume,
                             on_progress=on_progress, log_warning=log_warning, device=device,
                             dist=dist)


@contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold the run directory's lock file for the block; a second train into it fails at once.

    filelock's FileLock is an OS lock (fcntl/msvcrt) on `out/.molsam.lock`: the OS drops it when
    the process dies, so a killed run never leaves a stale lock behind.
    """
    lock = FileLock(out / LOCK_FILE)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError(
            f"{out}: another `molsam train` is writing into this run directory (it holds "
            f"{out / LOCK_FILE}); wait for it to finish or choose another --out"
        ) from None
    try:
        yield
    finally:
        lock.release()


def _train_locked(recipe: Recipe, recipe_dict: dict, store: GraphStore, task: str, out: Path, *,
                  resume: bool, on_progress: Callable[[dict], None] | None,
                  log_warning: Callable[[str], None], device: torch.device,
                  dist: Distributed) -> dict:
    if resume:
        split = file_split(out / "splits.json", len(store))
        for part in split.parts():
            # The same indices must still mean the same molecules (a data file edited since).
            saved_split_indices(out / "splits.json", part, store)
    else:
        if any(out.glob("seed_*/last.pt")):
            raise ConfigError(
                f"{out}: already holds a run; resume it with --resume {out} or choose another --out"
            )
        dist.barrier()  # every rank has looked before rank 0 writes anything
        s = recipe.split
        split = split_store(store, s.method, s.sizes, s.seed, column=s.column, split_file=s.file,
                            read=ReadOptions.from_recipe(recipe.data))
        if dist.is_main:
            save_recipe(recipe, out / "recipe.yaml")
            stats, warnings = split_statistics(store, split)
            for warning in warnings:
                log_warning(warning)
            write_splits_json(out / "splits.json", store, split, method=s.method, seed=s.seed,
                              sizes=s.sizes, stats=stats)
    if len(split.train) == 0:
        raise ConfigError("split: the training part is empty (check split.sizes)")

    warning = warmup_epochs(recipe)[1] if recipe.optim.schedule == "noam" else None
    if warning:
        log_warning(warning)
    source = store.batch_source(device)
    # The training molecules' fingerprints, stored in each best.pt (predict's applicability
    # domain); computed once for every replicate, by the rank that writes checkpoints.
    domain = training_domain([store.smiles[i] for i in split.train]) if dist.is_main else None
    results: list[ReplicateResult] = []
    validation: list = []  # each replicate's best.pt outputs on val (ensemble calibration)
    with cpu_threads(device, recipe.train.threads or DEFAULT_CPU_THREADS), \
            deterministic_algorithms(recipe.train.deterministic):
        for seed in recipe.train.seeds:
            trainer = ReplicateTrainer(
                recipe, recipe_dict, source, split, task=task, target_names=store.target_names,
                seed=seed, out_dir=out / f"seed_{seed}", device=device, on_progress=on_progress,
                classes=store.classes,
                dist=dist, domain=domain,
            )
            last = out / f"seed_{seed}" / "last.pt"
            if resume and last.exists():
                try:
                    trainer.resume(last)
                except CheckpointError as error:
                    raise CheckpointError(f"{error}; {restart_hint(out, seed)}") from None
            results.append(trainer.fit())
            validation.append(trainer.val_outputs)

    if dist.is_main and len(results) > 1 and all(v is not None for v in validation):
        calibrate_run_ensemble(out, [r.seed for r in results], validation, task,
                               trainer.num_classes, str(recipe.data.path))
    summary = summarize(results, task, store.target_names, trainer.metric)
    summary.update({"run_dir": str(out), "device": str(device), "processes": dist.world_size,
                    "task": task,
                    "target_names": store.target_names, "molecules": len(store),
                    "split": {p: int(len(i)) for p, i in split.parts().items()}})
    if dist.is_main:
        write_json_atomic(out / "summary.json", summary)
        plot_learning_curves(out, [r.seed for r in results], trainer.metric, out / "curves.png")
    return summary


def calibrate_run_ensemble(out: Path, seeds: list[int], validation: list, task: str,
                           num_classes: list[int] | None, data: str) -> None:
    """Fit the calibration of the ensemble of a run's replicates on the validation split
    (their averaged predictions; an ensemble sigma for regression) and store it in every
    seed_<s>/best.pt beside each one's own (molsam.train.calibration)."""
    from molsam.train.calibration import calibration_record, ensemble_outputs, fit_entry, member_id
    from molsam.train.checkpoint import load_checkpoint, save_checkpoint

    paths = [out / f"seed_{seed}" / "best.pt" for seed in seeds]
    checkpoints = [load_checkpoint(path) for path in paths]
    labels = validation[0][1]
    entry = fit_entry(ensemble_outputs([v[0] for v in validation], task, num_classes), labels,
                      task, num_classes, data=data, split="val",
                      members=[member_id(ckpt) for ckpt in checkpoints])
    for path, ckpt in zip(paths, checkpoints):
        record = ckpt.get("calibration") or {}
        ckpt["calibration"] = calibration_record(record.get("model"), entry)
        save_checkpoint(path, ckpt)


def restart_hint(out: Path, seed: int) -> str:
    """How to train a replicate whose last.pt cannot be resumed again from its first epoch: a
    resumed run trains a seed without a seed_<s> folder from scratch (the other seeds keep
    theirs)."""
    return (f"to train seed {seed} again from its first epoch, remove {out / f'seed_{seed}'} "
            f"and run `molsam train --resume {out}` again")


def _ignore(message: str) -> None:
    """log_warning of ranks other than 0."""


def resume_run(run_dir: str | Path, **kwargs) -> dict:
    """Continue an interrupted run from its own resolved recipe."""
    run_dir = Path(run_dir)
    recipe_path = run_dir / "recipe.yaml"
    if not recipe_path.is_file():
        raise InputError(f"{run_dir}: not a run directory (no recipe.yaml)")
    return train_recipe(load_recipe(recipe_path), run_dir, resume=True, **kwargs)


def summarize(results: list[ReplicateResult], task: str, target_names: list[str],
              metric: str) -> dict:
    """Mean +- std (population, ddof=0) over replicates of every test/val metric, overall and
    per task."""
    replicates = [asdict(r) for r in results]

    def aggregate(part: str) -> dict:
        if not results or not getattr(results[0], part):
            return {}
        means = {}
        for name in results[0].__dict__[part]["mean"]:
            values = [r.__dict__[part]["mean"][name] for r in results]
            means[name] = _mean_std(values)
        tasks = {}
        for target in target_names:
            tasks[target] = {
                name: _mean_std([r.__dict__[part]["tasks"][target][name] for r in results])
                for name in results[0].__dict__[part]["tasks"][target]
            }
        return {"mean": means, "tasks": tasks}

    return {
        "metric": metric,
        "replicates": replicates,
        "test": aggregate("test"),
        "val": aggregate("val"),
        "train_seconds": _mean_std([r.train_seconds for r in results]),
        "graphs_per_s": _mean_std([r.graphs_per_s for r in results]),
    }


def _mean_std(values: list[float | None]) -> dict:
    mean, std, n = mean_std(values)
    return {"mean": mean, "std": std, "n": n}
