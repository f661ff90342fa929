"""Prediction from checkpoints: one model or an ensemble, streamed over files of any size
(CSV/TSV, SD, SMILES, Excel, Parquet; molsam.data.formats), written as CSV (TSV for a .tsv
output, Parquet for a .parquet output, which keeps a Parquet input's column types:
molsam.predict_writers).

The checkpoint alone drives everything: featurization (its featurizer spec, RWSE steps
included), target names, task and target scaler. Nothing but SMILES is needed at predict time.

Inference preserves rows (DESIGN.md): one output row per input row, in input order, every input
column kept as read, then one column per task (probabilities for classification, original units
for regression), `<task>_std` (population standard deviation, ddof=0, across ensemble members)
when there are several members, and `molsam_error`. A multiclass task writes one probability
column per class, `<task>_<class>`, then `<task>`, the predicted class (highest mean
probability); an ensemble averages the members' probabilities and adds `<task>_<class>_std` (empty, or RDKit's reason for an invalid
SMILES, whose prediction cells stay empty).

By default, when the checkpoints hold their training molecules' fingerprints (molsam train
stores them), two applicability-domain columns follow, before molsam_error:
`molsam_train_similarity` (Tanimoto to the nearest training molecule) and
`molsam_train_neighbors` (training molecules above 0.4); PredictOptions (--uncertainty,
--interval, --no-calibration, --no-domain) add or remove columns as molsam.predict_uncertainty
describes. A checkpoint without fingerprints gives no domain columns (a note says why).

Streaming: rows are read, featurized (worker processes), predicted and written block by block,
so memory stays flat whatever the file size. The workers featurize the next block while the
model scores the current one. Output goes to a temporary file in the destination folder that is
renamed over the destination only when complete, so an interrupted run leaves no partial file.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile  # noqa: F401  (tests patch molsam.predict.tempfile.mkstemp)
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np
import torch

from molsam.chem.spec import spec_extras
from molsam.data.batching import BatchSource
from molsam.data.formats import file_format, reading_line
from molsam.data.read_options import DEFAULT, ReadOptions
from molsam.data.store import GraphStore
from molsam.data.table import TableHeader, iter_blocks, iter_table
from molsam.devices import cpu_threads, resolve_device
from molsam.errors import CheckpointError, ConfigError, InputError
from molsam.outputs import naming, output_file, temp_beside, writes_to
from molsam.predict_uncertainty import (
    DEFAULT_OPTIONS,
    NEIGHBORS_COLUMN,
    SIMILARITY_COLUMN,
    Plan,
    PredictOptions,
    block_extras,
    plan_for,
)
from molsam.predict_writers import INPUT, NUMBER, TEXT, CsvRows, output_format, parquet_output
from molsam.train.checkpoint import checkpoint_loss, load_checkpoint, model_from_checkpoint
from molsam.train.inference import predict_raw, to_output_units

if TYPE_CHECKING:  # featurizing SMILES needs RDKit; scoring a store or loading models must not
    from molsam.chem.parallel import FeaturizedArrays

#: Rows per streamed block: large enough to keep the workers and the model busy, small enough
#: that a block's graphs (~1 KB per molecule) and output rows stay a few MB.
BLOCK_ROWS = 8192  # molsam.predict_ray.BLOCK_ROWS too
CPU_BATCH_SIZE = 256
CUDA_BATCH_SIZE = 1024
#: Padded atom slots per molecule a batch may use (drug-like molecules have ~25-35 heavy atoms).
SLOTS_PER_MOLECULE = 48
ERROR_COLUMN = "molsam_error"
CHECKPOINT_NAME = "best.pt"


# --------------------------------------------------------------------------- devices, models


def default_batch_size(device: torch.device) -> int:
    return CUDA_BATCH_SIZE if device.type == "cuda" else CPU_BATCH_SIZE


def resolve_model_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Checkpoint files from MODEL arguments: a file is itself, a run directory gives every
    replicate's `seed_*/best.pt` (sorted by seed); a folder holding best.pt gives that file."""
    if not paths:
        raise CheckpointError("no checkpoint given (a .pt file or a run directory)")
    found: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            replicas = sorted(
                path.glob(f"seed_*/{CHECKPOINT_NAME}"), key=lambda p: _seed_key(p.parent.name)
            )
            if not replicas and (path / CHECKPOINT_NAME).is_file():
                replicas = [path / CHECKPOINT_NAME]
            if not replicas:
                raise CheckpointError(
                    f"{path}: a folder without seed_*/{CHECKPOINT_NAME} (not a molsam run directory)"
                )
            found.extend(replicas)
        else:
            found.append(path)  # load_checkpoint names a missing file
    return found


def _seed_key(name: str) -> tuple[int, str]:
    suffix = name.removeprefix("seed_")
    return (int(suffix), name) if suffix.isdigit() else (sys.maxsize, name)


@dataclass
class Ensemble:
    """One or more checkpoints that agree on target names, task, classes and featurizer.

    models: M models (GPS or CoMPT) in eval mode on `device`; scalers: M regression scalers (or None);
    classes: [T] class names per target for multiclass (target t owns len(classes[t]) outputs),
    else None.
    """

    paths: list[Path]
    models: list[torch.nn.Module]
    scalers: list[dict | None]
    target_names: list[str]
    task: str
    featurizer: dict
    recipe: dict
    device: torch.device
    classes: list[list[str]] | None = None
    #: Per member: the loss it was trained with ("mse", or "mve": an MVE head), its stored
    #: calibration (ckpt["calibration"], None if none) and its ensemble member id
    #: [seed, created] (molsam.train.calibration.member_id). Empty: unknown (all "mse").
    losses: list[str] = field(default_factory=list)
    calibrations: list[dict | None] = field(default_factory=list)
    member_ids: list[list] = field(default_factory=list)
    #: The training molecules' fingerprints (molsam.uncertainty.domain.Fingerprints: the
    #: members', which share a split, or their union when they differ), or None, with
    #: domain_note saying why.
    domain: object | None = None
    domain_note: str = ""
    _plans: dict = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.models)

    def plan(self, options: PredictOptions | None = None) -> Plan:
        """`options` resolved against these checkpoints (molsam.predict_uncertainty.plan_for),
        once per options."""
        options = options or DEFAULT_OPTIONS
        if options not in self._plans:
            self._plans[options] = plan_for(self, options)
        return self._plans[options]

    @property
    def num_classes(self) -> list[int] | None:
        return None if self.classes is None else [len(c) for c in self.classes]

    @property
    def num_outputs(self) -> int:
        """O: model outputs, one per target (sum of class counts for multiclass)."""
        return len(self.target_names) if self.classes is None else sum(self.num_classes)

    @property
    def rwse_steps(self) -> int:
        return int(self.featurizer["rwse_steps"])

    @property
    def extras(self) -> tuple[str, ...]:
        """Featurizer extras the models read (("compt",) for CoMPT), in the featurizer spec."""
        return spec_extras(self.featurizer)

    @property
    def feature_columns(self) -> tuple[str, ...]:
        """Input columns the models read as molecule-level features (data.feature_columns of
        the checkpoint's recipe; none for most models)."""
        data = self.recipe.get("data") if isinstance(self.recipe, dict) else None
        return tuple((data or {}).get("feature_columns") or ())

    @property
    def smiles_column(self) -> str | None:
        """The SMILES column of the training data, from the checkpoint's recipe."""
        data = self.recipe.get("data") if isinstance(self.recipe, dict) else None
        return data.get("smiles_column") if isinstance(data, dict) else None

    def predict_source(
        self, source: BatchSource, indices: np.ndarray, batch_size: int | None = None
    ) -> np.ndarray:
        """Per-member predictions in output units: float64 [M, len(indices), O] (O: num_outputs;
        multiclass: each target's block of class probabilities).

        Batches follow molecule size within `indices` (less attention padding); rows come back
        in the order of `indices`.
        """
        raw = self.raw_outputs(source, indices, batch_size)
        out = np.empty((len(self.models), len(raw[0]) if raw else 0, self.num_outputs))
        for m, (outputs, scaler) in enumerate(zip(raw, self.scalers)):
            out[m] = to_output_units(outputs, self.task, scaler, self.num_classes)
        return out

    def raw_outputs(
        self, source: BatchSource, indices: np.ndarray, batch_size: int | None = None
    ) -> list[np.ndarray]:
        """Each member's raw outputs (logits, standardized values, an MVE head's 2T columns):
        M arrays float32 [len(indices), O_raw], rows in the order of `indices`; batched by
        molecule size as predict_source says."""
        indices = np.asarray(indices, dtype=np.int64)
        order, inverse, batches = size_sorted_batches(
            source, indices, batch_size or default_batch_size(self.device))
        out = []
        with torch.inference_mode():
            for model in self.models:
                raw = torch.cat([
                    predict_raw(model, source, indices[order[lo:hi]], hi - lo)
                    for lo, hi in batches
                ]) if batches else torch.zeros((0, model.num_tasks))
                out.append(raw.cpu().numpy()[inverse])
        return out


def size_sorted_batches(
    source: BatchSource, indices: np.ndarray, batch_size: int
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """How inference batches `indices` (int64 [N]): order [N] sorts them by atom count (stable),
    inverse [N] puts results back in the order of `indices`, and batches are [lo, hi) ranges of
    the sorted order (padded_batches)."""
    order = np.argsort(source.atom_counts_host[indices], kind="stable")
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return order, inverse, padded_batches(source.atom_counts_host[indices[order]], batch_size)


def padded_batches(sorted_counts: np.ndarray, batch_size: int) -> list[tuple[int, int]]:
    """[lo, hi) batches over molecules sorted by atom count: at most `batch_size` molecules and
    at most batch_size * SLOTS_PER_MOLECULE padded atom slots (B x largest molecule), so the
    dense attention layout of a batch of large molecules stays as small as one of typical ones
    and peak memory does not depend on which molecules a file holds."""
    budget = batch_size * SLOTS_PER_MOLECULE
    batches, lo, n = [], 0, len(sorted_counts)
    while lo < n:
        hi = min(n, lo + batch_size)
        # Counts ascend, so the batch's largest molecule is its last: shrink until it fits.
        while hi - lo > 1 and (hi - lo) * int(sorted_counts[hi - 1]) > budget:
            hi = lo + max(1, budget // int(sorted_counts[hi - 1]))
        batches.append((lo, hi))
        lo = hi
    return batches


def load_ensemble(paths: Sequence[str | Path], device: str | torch.device = "auto") -> Ensemble:
    """Load checkpoints (files or run directories) onto `device` ("auto": cuda if available).

    Raises:
        CheckpointError: a file is missing, corrupt, foreign or of another format version, or
            the checkpoints disagree on target names, task, classes or featurizer (naming the
            file).
    """
    device = device if isinstance(device, torch.device) else resolve_device(device)
    files = resolve_model_paths(paths)
    from molsam.train.calibration import member_id

    models, scalers, first, first_path = [], [], None, None
    losses, calibrations, member_ids, domains = [], [], [], []
    for path in files:
        ckpt = load_checkpoint(path)
        losses.append(checkpoint_loss(ckpt))
        calibrations.append(ckpt.get("calibration"))
        member_ids.append(member_id(ckpt))
        domains.append(ckpt.get("domain"))
        if first is None:
            first, first_path = ckpt, path
        else:
            for key in ("target_names", "task", "classes", "featurizer"):
                if ckpt.get(key) != first.get(key):
                    raise CheckpointError(
                        f"{path}: {key} {_short(ckpt.get(key))} differs from {first_path}'s "
                        f"{_short(first.get(key))}; an ensemble needs checkpoints of one model family"
                    )
        try:
            models.append(model_from_checkpoint(ckpt, device))
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        scalers.append(ckpt["scaler"])
        del ckpt["model_state"]  # weights now live in the model; keep the rest light
    assert first is not None  # resolve_model_paths refuses an empty list
    domain, domain_note = _training_domain(files, domains)
    return Ensemble(
        paths=files,
        models=models,
        scalers=scalers,
        target_names=list(first["target_names"]),
        task=first["task"],
        classes=first.get("classes"),
        featurizer=dict(first["featurizer"]),
        recipe=first["recipe"] if isinstance(first["recipe"], dict) else {},
        device=device,
        losses=losses,
        calibrations=calibrations,
        member_ids=member_ids,
        domain=domain,
        domain_note=domain_note,
    )


def _training_domain(files: list[Path], records: list) -> tuple[object | None, str]:
    """The members' training fingerprints as one set: the first member's when all hold the
    same (one run: a shared split), else the union of the distinct ones; (None, why) when a
    member holds none."""
    from molsam.uncertainty.domain import Fingerprints

    for path, record in zip(files, records):
        if not isinstance(record, dict):
            return None, (f"{path} holds no training fingerprints (written before molsam "
                          "stored them, or trained without RDKit)")
    try:
        distinct = [records[0]]
        for record in records[1:]:
            if all(record.get("bits") != seen.get("bits") for seen in distinct):
                distinct.append(record)
        sets = [Fingerprints.from_dict(record) for record in distinct]
    except (KeyError, TypeError, ValueError) as exc:
        return None, f"unreadable training fingerprints ({' '.join(str(exc).split())[:120]})"
    if len(sets) == 1:
        return sets[0], ""
    if len({s.n_bits for s in sets}) > 1:
        return None, "the members' training fingerprints have different sizes"
    return Fingerprints(np.concatenate([s.bits for s in sets]),
                        np.concatenate([s.valid for s in sets]), sets[0].radius,
                        sets[0].n_bits), ""


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def summarize(per_member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ensemble mean and population std (ddof=0) over members: [M, N, T] -> ([N, T], [N, T])."""
    return per_member.mean(axis=0), per_member.std(axis=0, ddof=0)


def arrays_source(arrays: FeaturizedArrays, rows: int, device: torch.device) -> BatchSource:
    """A BatchSource over `rows` freshly featurized inputs (no labels), ready to gather on
    `device`. Only sizes matter for batching, so the SMILES themselves are not carried."""
    return GraphStore.from_arrays(arrays, [""] * rows).batch_source(device)


# --------------------------------------------------------------------------- in-memory


@dataclass
class Predictions:
    """Predictions for N input SMILES, in input order.

    mean: float64 [N, O] (NaN for invalid SMILES; O outputs: one per target, or each multiclass
    target's class probabilities, calibrated when the options ask for uncertainty and a
    temperature is stored); std: [N, O] population std over members (zeros for a single
    model); members: [M, N, O]; errors: [N] "" or the reason; labels: multiclass only, [N][T]
    predicted class names (highest mean probability; "" for an invalid SMILES).
    What PredictOptions add (molsam.predict_uncertainty; None when not asked for or not
    available; NaN for an invalid SMILES): sigma, lower, upper, entropy, disagreement:
    float64 [N, T]; similarity (to the nearest training molecule), neighbors (training
    molecules with similarity above 0.4): float64 [N].
    """

    target_names: list[str]
    mean: np.ndarray
    std: np.ndarray
    members: np.ndarray
    errors: list[str]
    labels: list[list[str]] | None = None
    sigma: np.ndarray | None = None
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    entropy: np.ndarray | None = None
    disagreement: np.ndarray | None = None
    similarity: np.ndarray | None = None
    neighbors: np.ndarray | None = None


def predict_smiles(
    ensemble: Ensemble,
    smiles: Sequence[str],
    *,
    batch_size: int | None = None,
    workers: int | None = 1,
    options: PredictOptions | None = None,
) -> Predictions:
    """Predict a list of SMILES held in memory (for notebooks; files go through predict_csv).
    `options`: uncertainty, intervals and domain (molsam.predict_uncertainty; default: plain
    predictions and, when the checkpoints hold training fingerprints, the domain)."""
    from molsam.chem.parallel import featurize_many

    if ensemble.feature_columns:
        raise InputError(
            f"{ensemble.paths[0]}: the model reads the input columns "
            f"{', '.join(map(repr, ensemble.feature_columns))} beside the SMILES; predict a "
            "file that has them")
    arrays = featurize_many(list(smiles), ensemble.rwse_steps, workers=workers,
                            extras=featurize_extras(ensemble, options))
    return _block_predictions(ensemble, arrays, len(smiles), batch_size, options)


def featurize_extras(ensemble: Ensemble, options: PredictOptions | None = None) -> tuple[str, ...]:
    """What the featurization workers make for this ensemble and these options: the models'
    featurizer extras, plus packed Morgan fingerprints when the domain columns are written
    (molsam.chem.parallel.DOMAIN_FINGERPRINTS)."""
    if not ensemble.plan(options).domain:
        return ensemble.extras
    from molsam.chem.parallel import DOMAIN_FINGERPRINTS

    return (*ensemble.extras, DOMAIN_FINGERPRINTS)


def _block_predictions(
    ensemble: Ensemble, arrays: FeaturizedArrays, n: int, batch_size: int | None,
    options: PredictOptions | None = None, block: int = 0,
) -> Predictions:
    plan = ensemble.plan(options)
    members = np.full((len(ensemble), n, ensemble.num_outputs), np.nan)
    extras = None
    if len(arrays.valid):
        source = arrays_source(arrays, n, ensemble.device)
        indices = np.arange(len(arrays.valid))
        raw = ensemble.raw_outputs(source, indices, batch_size)
        values = np.stack([to_output_units(r, ensemble.task, scaler, ensemble.num_classes)
                           for r, scaler in zip(raw, ensemble.scalers)])
        members[:, arrays.valid] = values
        if plan.domain and arrays.fingerprints is None:
            raise ValueError("the domain columns need fingerprints: featurize with "
                             "featurize_extras(ensemble, options)")
        extras = block_extras(ensemble, plan, raw, values, source, indices, arrays.fingerprints,
                              block, batch_size)
    errors = [""] * n
    for position, reason in arrays.invalid:
        errors[position] = reason or "invalid SMILES"
    mean, std = summarize(members)
    if extras is not None and extras.values is not None:  # calibrated probabilities
        mean[arrays.valid] = extras.values
    labels = None
    if ensemble.classes is not None:
        labels = [[""] * len(ensemble.classes) for _ in range(n)]
        start = 0
        for t, names in enumerate(ensemble.classes):
            block = mean[arrays.valid, start : start + len(names)]
            for row, best in zip(arrays.valid.tolist(), block.argmax(axis=1).tolist()):
                labels[row][t] = names[best]
            start += len(names)
    found = Predictions(list(ensemble.target_names), mean, std, members, errors, labels)
    tasks = len(ensemble.target_names)
    for name in ("sigma", "lower", "upper", "entropy", "disagreement", "similarity",
                 "neighbors"):
        value = None if extras is None else getattr(extras, name)
        wanted = {"sigma": plan.std, "lower": plan.interval is not None,
                  "upper": plan.interval is not None, "entropy": plan.entropy,
                  "disagreement": plan.disagreement, "similarity": plan.domain,
                  "neighbors": plan.domain}[name]
        if wanted:  # rows of every input, NaN where the SMILES is invalid
            full = np.full((n,) if name in ("similarity", "neighbors") else (n, tasks), np.nan)
            if value is not None:
                full[arrays.valid] = value
            setattr(found, name, full)
    return found


# --------------------------------------------------------------------------- streaming files


@dataclass(frozen=True)
class PredictSummary:
    rows: int
    valid: int
    invalid: int
    seconds: float
    read: str = ""  # how the input was read (formats.reading_line)

    @property
    def per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def kept_input_columns(header: TableHeader) -> list[int]:
    """Positions of the input columns copied to the output: all of them, except the
    molsam_error of a file molsam wrote earlier, which this run's own molsam_error replaces
    (two columns of one name could not be told apart)."""
    return [i for i, name in enumerate(header.columns) if name != ERROR_COLUMN]


def output_columns(
    header: TableHeader, ensemble: Ensemble, options: PredictOptions | None = None
) -> list[str]:
    """Kept input columns (kept_input_columns), then one per task (`<task>_pred` if the input
    already has `<task>`, `<task>_pred2`, ... if it has that too, as a file molsam predicted
    before does), then `<task>_std` for an ensemble, then molsam_error. Multiclass: per task
    `<task>_<class>` for each class, then `<task>` (the predicted class); an ensemble adds
    `<task>_<class>_std`.

    `options` (molsam.predict_uncertainty) add, before molsam_error and named after each
    task's column: `<task>_std` (regression with --uncertainty, for one model too), then per
    task `<task>_lower`, `<task>_upper` (--interval), `<task>_entropy` and
    `<task>_disagreement` (classification with --uncertainty; multiclass: after the predicted
    class's column), then `molsam_train_similarity`, `molsam_train_neighbors` (by default,
    when the checkpoints hold training fingerprints)."""
    return [name for name, _ in _output_layout(header, ensemble, options)]


def output_kinds(
    header: TableHeader, ensemble: Ensemble, options: PredictOptions | None = None
) -> list[str]:
    """The kind of each output column (molsam.predict_writers: INPUT, NUMBER or TEXT), in the
    order of output_columns."""
    return [kind for _, kind in _output_layout(header, ensemble, options)]


def _output_layout(
    header: TableHeader, ensemble: Ensemble, options: PredictOptions | None = None
) -> list[tuple[str, str]]:
    plan = ensemble.plan(options)
    columns = [header.columns[i] for i in kept_input_columns(header)]
    layout = [(name, INPUT) for name in columns]
    taken = set(columns) | {ERROR_COLUMN}

    def free(name: str) -> str:
        candidate, n = name, 1
        while candidate in taken:
            candidate = f"{name}_pred" if n == 1 else f"{name}_pred{n}"
            n += 1
        taken.add(candidate)
        return candidate

    if ensemble.classes is None:
        names = [free(t) for t in ensemble.target_names]
        layout += [(n, NUMBER) for n in names]
        std = [f"{n}_std" for n in names]
    else:
        std, names = [], []
        for target, classes in zip(ensemble.target_names, ensemble.classes):
            probabilities = [free(f"{target}_{c}") for c in classes]
            names.append(free(target))
            layout += [(n, NUMBER) for n in probabilities] + [(names[-1], TEXT)]
            std += [f"{n}_std" for n in probabilities]
    if len(ensemble) > 1 or plan.std:
        layout += [(free(n), NUMBER) for n in std]
    if plan.interval is not None:
        layout += [(free(f"{n}_{end}"), NUMBER) for n in names for end in ("lower", "upper")]
    if plan.entropy:
        layout += [(free(f"{n}_entropy"), NUMBER) for n in names]
    if plan.disagreement:
        layout += [(free(f"{n}_disagreement"), NUMBER) for n in names]
    if plan.domain:
        layout += [(free(SIMILARITY_COLUMN), NUMBER), (free(NEIGHBORS_COLUMN), NUMBER)]
    return layout + [(ERROR_COLUMN, TEXT)]


def smiles_column_index(header: TableHeader, ensemble: Ensemble, smiles_column: str | None) -> int:
    """--smiles-col if given; else, in an SD file, the structure of each record (its `smiles`
    column, never a text property that happens to share the training column's name); else the
    training recipe's column when the file has it; else `smiles` (case-insensitive)."""
    if smiles_column:
        return header.column_index(smiles_column, "SMILES", "--smiles-col")
    if header.unit == "record":
        return 0
    trained = ensemble.smiles_column
    if trained:
        try:
            return header.column_index(trained, "SMILES", "--smiles-col")
        except InputError:
            pass
    return header.column_index("smiles", "SMILES", "--smiles-col")


def _format(value: float) -> str:
    # 9 significant digits hold every float32 exactly; NaN (invalid row) is an empty cell.
    return "" if value != value else f"{value:.9g}"


@contextmanager
def atomic_output(destination: str | Path | TextIO | None) -> Iterator[TextIO]:
    """A text handle for the output: stdout for None or "-", a given stream as is, or a temp file
    next to `destination` renamed over it on success and removed on any error (Ctrl-C too)."""
    if destination is None or destination == "-" or str(destination) == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    if isinstance(destination, io.TextIOBase) or hasattr(destination, "write"):
        yield destination  # type: ignore[misc]
        return
    path = output_file(destination, "--out")  # a folder, a missing or read-only folder: one line
    with writes_to(path, "--out"):
        fd, temp = temp_beside(path)  # removes the temp files of a killed predict first
    try:
        # A full disk mid-way: one line naming the output (the old one stays as it was).
        with naming(path, temp, "--out"):
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
                yield handle
            os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def predict_csv(
    ensemble: Ensemble,
    input_path: str | Path,
    output: str | Path | TextIO | None = None,
    *,
    smiles_column: str | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    block_rows: int = BLOCK_ROWS,
    on_progress: Callable[[int], None] | None = None,
    read: ReadOptions = DEFAULT,
    options: PredictOptions | None = None,
) -> PredictSummary:
    """Stream `input_path` (CSV/TSV, SD, SMILES, Excel or Parquet file, .gz too for text; an
    SD file's name and every SD property become input columns) through the ensemble into
    `output` (a path written atomically: CSV, TSV for .tsv, Parquet for .parquet; an open text
    stream, or None / "-" for stdout).

    Args:
        workers: featurization processes (default: all cores; 1 featurizes in this process).
        block_rows: rows read, featurized, predicted and written at a time.
        on_progress: called with the number of rows written so far after each block.
        read: delimiter, decimal mark and sheet of the input (ReadOptions; detected where None).
        options: uncertainty, calibration, intervals and domain columns
            (molsam.predict_uncertainty.PredictOptions; None: plain predictions plus the
            domain when the checkpoints hold training fingerprints).

    Raises:
        InputError: unreadable input, missing SMILES column, a malformed line (naming file and
            line); on error no output file is left behind.
        ConfigError: options the checkpoints cannot honour (one line, before any reading).
    """
    from molsam.chem.parallel import default_workers, start_pool

    start = time.perf_counter()
    kind = output_format(output)  # an Excel output name: refused before any reading
    ensemble.plan(options)  # options the checkpoints cannot honour: refused before reading too
    extras = featurize_extras(ensemble, options)
    # SD records: parsed by workers
    header, rows = iter_table(input_path, workers=workers, read=read)
    at = smiles_column_index(header, ensemble, smiles_column)
    columns = output_columns(header, ensemble, options)
    kept = kept_input_columns(header)
    features = None
    if ensemble.feature_columns:
        features = ([header.column_index(c, "feature", "data.feature_columns")
                     for c in ensemble.feature_columns], header.decimal or ".")
    typed_input = kind == "parquet" and file_format(header.path) == "parquet"
    kept_all, kept = kept, (None if len(kept) == len(header.columns) else kept)
    delimiter = "\t" if kind == "tsv" else ","
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ConfigError(f"--workers: expected an int >= 1, got {workers}")
    total = valid = 0
    pool = start_pool(workers) if workers > 1 else None
    try:
        # torch gets only the cores the featurization workers leave: measured on 2 cores, 2
        # intra-op threads competing with 2 worker processes ran the model ~10x slower.
        threads = min(torch.get_num_threads(), default_workers() - workers)
        if kind == "parquet":
            from molsam.data.parquet import TypedColumns

            typed = TypedColumns(header.path, kept_all) if typed_input else None
            sink = parquet_output(output, columns, output_kinds(header, ensemble, options),
                                  typed)
        else:
            sink = _csv_output(output, columns, delimiter)
        with sink as writer, cpu_threads(ensemble.device, threads):
            # One block in flight: the workers featurize block k+1 while the model scores block k.
            pending: deque[tuple[list[list[str]], list[str], Callable[[], FeaturizedArrays]]]
            pending = deque()
            number = 0  # the block's number in the file (seeds MC dropout)
            for block, reasons in iter_blocks(rows, block_rows, header.problems):
                pending.append((block, reasons, _submit(pool, block, at, ensemble.rwse_steps,
                                                              extras)))
                # Drain to one block in flight (all of them at the end of the file).
                while len(pending) > 1:
                    done, why, result = pending.popleft()
                    valid += _write_block(writer, ensemble, done, result, batch_size, why, kept,
                                          options, number, features)
                    number += 1
                    total += len(done)
                    if on_progress:
                        on_progress(total)
            while pending:
                done, why, result = pending.popleft()
                valid += _write_block(writer, ensemble, done, result, batch_size, why, kept,
                                      options, number, features)
                number += 1
                total += len(done)
                if on_progress:
                    on_progress(total)
    finally:
        if pool is not None:
            pool.terminate()  # on success every job is done; on error, stop at once
            pool.join()
    return PredictSummary(total, valid, total - valid, time.perf_counter() - start,
                          reading_line(header))


@contextmanager
def _csv_output(output, columns: list[str], delimiter: str) -> Iterator[CsvRows]:
    with atomic_output(output) as handle:
        yield CsvRows(handle, columns, delimiter)


def _submit(
    pool, block: list[list[str]], at: int, rwse_steps: int, extras: tuple[str, ...] = ()
) -> Callable[[], FeaturizedArrays]:
    from molsam.chem.parallel import featurize_many, submit_many

    smiles = [cells[at] for cells in block]
    if pool is None:
        arrays = featurize_many(smiles, rwse_steps, workers=1, extras=extras)
        return lambda: arrays
    return submit_many(pool, smiles, rwse_steps, extras=extras)


def _write_block(
    writer,
    ensemble: Ensemble,
    block: list[list[str]],
    result: Callable[[], FeaturizedArrays],
    batch_size: int | None,
    reasons: list[str] | None = None,
    kept: list[int] | None = None,
    options: PredictOptions | None = None,
    number: int = 0,
    features: tuple[list[int], str] | None = None,
) -> int:
    """Predict one block and write its rows; returns the number of valid molecules. `reasons`:
    the reader's reason per row (an unreadable SD record), which replaces the featurizer's;
    `kept`: the input cells to copy (kept_input_columns), None for all."""
    rows, valid = score_block(ensemble, block, result(), batch_size, reasons, kept, options,
                              number, features)
    writer.writerows(rows)
    return valid


def feature_values(block: list[list[str]], at: list[int], decimal: str = ".") -> np.ndarray:
    """float32 [rows, len(at)]: the block's feature cells as numbers. An empty cell, or one that
    is not a number, is missing (NaN), which the model fills with its training mean, as it
    does for a descriptor RDKit could not compute."""
    def number(cell: str) -> float:
        text = cell.strip()
        if decimal == ",":
            text = text.replace(",", ".")
        try:
            return float(text) if text else np.nan
        except ValueError:
            return np.nan

    return np.array([[number(cells[i]) for i in at] for cells in block],
                    dtype=np.float32).reshape(len(block), len(at))


def score_block(
    ensemble: Ensemble,
    block: list[list[str]],
    arrays: FeaturizedArrays,
    batch_size: int | None = None,
    reasons: list[str] | None = None,
    kept: list[int] | None = None,
    options: PredictOptions | None = None,
    number: int = 0,
    features: tuple[list[int], str] | None = None,
) -> tuple[list[list[str]], int]:
    """Output rows of one block of input rows, in input order, and its number of valid molecules.

    Each output row is the kept input cells as read (`kept`: indices from kept_input_columns,
    None for all), then the prediction cells (empty for an invalid SMILES), then the error cell:
    the columns of `output_columns`. `arrays` are the block's featurized SMILES (positions
    relative to the block); `reasons`, the reader's reason per row, replaces the featurizer's.
    Single-machine predict (`predict_csv`) and the Ray engine (`molsam.predict_ray`) both score
    blocks with this one function. `options`: what is written beside the predictions
    (output_columns); `arrays` must then be featurized with featurize_extras(ensemble,
    options); `number`: the block's number in its file (MC dropout's seed); `features`:
    (indices of the input's feature columns, its decimal mark) for a model that reads some.
    """
    plan = ensemble.plan(options)
    if features is not None:  # the input's feature columns, after the computed features
        at, decimal = features
        values = feature_values(block, at, decimal)[arrays.valid]
        arrays.mol_features = values if arrays.mol_features is None else np.concatenate(
            [arrays.mol_features, values], axis=1)
    found = _block_predictions(ensemble, arrays, len(block), batch_size, options, number)
    if reasons:
        found.errors = [why or error for why, error in zip(reasons, found.errors)]
    cells = [[_format(v) for v in row] for row in found.mean.tolist()]
    if found.labels is not None:  # after each multiclass target's probabilities, its label
        ends = np.cumsum(ensemble.num_classes).tolist()
        cells = [
            [c for t, lo in enumerate([0] + ends[:-1]) for c in (*row[lo : ends[t]], labels[t])]
            for row, labels in zip(cells, found.labels)
        ]
    extra = []  # numeric columns after the predictions, in output_columns' order
    if plan.std:  # --uncertainty's sigma, in the ensemble's _std columns or new ones
        extra.append(found.sigma)
    elif len(ensemble) > 1:
        extra.append(found.std)
    if plan.interval is not None:  # per task: lower, upper
        extra.append(np.stack([found.lower, found.upper], axis=2).reshape(len(block), -1))
    if plan.entropy:
        extra.append(found.entropy)
    if plan.disagreement:
        extra.append(found.disagreement)
    if plan.domain:
        extra.append(np.stack([found.similarity, found.neighbors], axis=1))
    if extra:
        values = np.concatenate(extra, axis=1).tolist()
        cells = [row + [_format(v) for v in more] for row, more in zip(cells, values)]
    if kept is not None:
        block = [[row[i] for i in kept] for row in block]
    rows = [row + predicted + [error] for row, predicted, error in zip(block, cells, found.errors)]
    return rows, len(block) - sum(1 for e in found.errors if e)
