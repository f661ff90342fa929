"""Refit the calibration of checkpoints on labelled molecules (`molsam calibrate`).

`molsam train` stores calibration fitted on the run's validation split in every best.pt
(molsam.train.calibration). This refits it on other labelled data: a part of the run's saved
split (`split`, val by default) or every valid molecule of a file or dataset (`data`), and
rewrites each checkpoint atomically (molsam.train.checkpoint.save_checkpoint; every other key
is kept). Each checkpoint gets its own calibration; two or more also get the calibration of
their ensemble (averaged predictions, the ensemble's sigma), stored in each of them with the
members it belongs to. A single checkpoint keeps the ensemble calibration it held.

The molecules must be held out from training: conformal intervals are only valid on data the
model never fitted (Lei et al., JASA 2018), and a model is overconfident on its training set.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from molsam.data.read_options import DEFAULT, ReadOptions
from molsam.errors import ConfigError, InputError
from molsam.evaluate import SPLITS, checkpoint_info, labeled_molecules
from molsam.predict import load_ensemble
from molsam.train.calibration import (
    DEFAULT_ALPHA,
    calibration_record,
    describe_entry,
    ensemble_outputs,
    fit_entry,
    outputs_from_raw,
)
from molsam.train.checkpoint import load_checkpoint, save_checkpoint


@dataclass
class CalibrationResult:
    """What was fitted: per checkpoint its model ENTRY; the ensemble ENTRY (None for one
    checkpoint); on n molecules of `data` (`split`)."""

    data: str
    split: str
    n: int
    checkpoints: list[tuple[Path, dict]]
    ensemble: dict | None

    def lines(self) -> list[str]:
        out = [f"{path}: {describe_entry(entry)}" for path, entry in self.checkpoints]
        if self.ensemble is not None:
            out.append(f"ensemble of {len(self.checkpoints)}: {describe_entry(self.ensemble)}")
        return out


def calibrate(
    models: Sequence[str | Path],
    data: str | None = None,
    *,
    split: str | None = None,
    alpha: float = DEFAULT_ALPHA,
    smiles_column: str | None = None,
    device: str | torch.device = "auto",
    batch_size: int | None = None,
    workers: int | None = None,
    read: ReadOptions = DEFAULT,
    targets: Mapping[str, str] | None = None,
) -> CalibrationResult:
    """Fit calibration on labelled molecules and store it in the checkpoints.

    Args:
        models: checkpoints or run directories (every replicate's best.pt).
        data: file or dataset name whose valid molecules are all used; None: the run's saved
            `split` (default val).
        alpha: conformal miscoverage of the regression intervals (0.1: 90% intervals).
        targets: {model task: column of `data`} for label columns named otherwise.

    Raises:
        ConfigError, InputError, CheckpointError: one-line messages; a run directory that a
        `molsam train` is writing into is refused.
    """
    if split is not None and split not in SPLITS:
        raise ConfigError(f"--split: {split!r} is not one of {', '.join(SPLITS)}")
    if isinstance(alpha, bool) or not 0.0 < float(alpha) < 1.0:
        raise ConfigError(f"--alpha: expected a miscoverage in (0, 1), e.g. 0.1 for 90% "
                          f"intervals, got {alpha!r}")
    ensemble = load_ensemble(models, device)
    labeled = labeled_molecules(ensemble, data, split=split, default_split="val",
                                smiles_column=smiles_column, workers=workers, read=read,
                                targets=targets)
    y = labeled.labels
    if not np.any(~np.isnan(y)):
        raise InputError(f"{labeled.source_name}: no labels to calibrate on "
                         f"({len(labeled.indices)} molecules)")
    source = labeled.store.batch_source(ensemble.device)
    infos = [checkpoint_info(path) for path in ensemble.paths]
    outputs = [
        outputs_from_raw(raw, ensemble.task, scaler, ensemble.num_classes, info["loss"])
        for raw, scaler, info in zip(
            ensemble.raw_outputs(source, labeled.indices, batch_size), ensemble.scalers, infos)
    ]
    where = {"data": str(labeled.store.source or data or labeled.source_name),
             "split": labeled.split}
    entries = [fit_entry(o, y, ensemble.task, ensemble.num_classes, alpha=alpha, **where)
               for o in outputs]
    joint = None
    if len(ensemble) > 1:
        joint = fit_entry(ensemble_outputs(outputs, ensemble.task, ensemble.num_classes), y,
                          ensemble.task, ensemble.num_classes, alpha=alpha,
                          members=[info["member"] for info in infos], **where)
    with run_locks(ensemble.paths):
        for path, entry, info in zip(ensemble.paths, entries, infos):
            ckpt = load_checkpoint(path)
            kept = joint if joint is not None else _ensemble_entry(info["calibration"])
            ckpt["calibration"] = calibration_record(entry, kept)
            save_checkpoint(path, ckpt)
    return CalibrationResult(labeled.source_name, labeled.split, int(len(labeled.indices)),
                             list(zip(ensemble.paths, entries)), joint)


def _ensemble_entry(record: dict | None) -> dict | None:
    """The ensemble ENTRY a checkpoint already holds (kept when it is calibrated alone)."""
    return record.get("ensemble") if isinstance(record, dict) else None


@contextmanager
def run_locks(paths: Sequence[Path]) -> Iterator[None]:
    """Hold the lock of every run directory the checkpoints belong to (RUN/seed_<s>/best.pt
    with RUN/recipe.yaml), so a calibration never rewrites a best.pt that a running
    `molsam train` is writing."""
    from filelock import FileLock, Timeout

    from molsam.train.run import LOCK_FILE

    runs = sorted({Path(p).resolve().parent.parent for p in paths
                   if (Path(p).resolve().parent.parent / "recipe.yaml").is_file()})
    with ExitStack() as stack:
        for run in runs:
            lock = FileLock(run / LOCK_FILE)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                raise ConfigError(
                    f"{run}: a `molsam train` is writing into this run directory (it holds "
                    f"{run / LOCK_FILE}); calibrate it when the training has finished"
                ) from None
            stack.callback(lock.release)
        yield
