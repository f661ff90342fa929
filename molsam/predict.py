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

Streaming: rows are read, featurized (worker processes), predicted and written block by block,
so memory stays flat whatever the file size. The workers featurize the next block while the
model scores the current one. Output goes to a temporary file in the destination folder that is
renamed over the destination only when complete, so an interrupted run leaves no partial file.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
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
from molsam.outputs import output_file, writes_to
from molsam.predict_writers import INPUT, NUMBER, TEXT, CsvRows, output_format, parquet_output
from molsam.train.checkpoint import load_checkpoint, model_from_checkpoint
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

    def __len__(self) -> int:
        return len(self.models)

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
        indices = np.asarray(indices, dtype=np.int64)
        batch_size = batch_size or default_batch_size(self.device)
        order = np.argsort(source.atom_counts_host[indices], kind="stable")
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        batches = padded_batches(source.atom_counts_host[indices[order]], batch_size)
        out = np.empty((len(self.models), len(indices), self.num_outputs))
        with torch.inference_mode():
            for m, (model, scaler) in enumerate(zip(self.models, self.scalers)):
                raw = torch.cat([
                    predict_raw(model, source, indices[order[lo:hi]], hi - lo)
                    for lo, hi in batches
                ]) if batches else torch.zeros((0, self.num_outputs))
                out[m] = to_output_units(
                    raw.cpu().numpy(), self.task, scaler, self.num_classes
                )[inverse]
        return out


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
    models, scalers, first, first_path = [], [], None, None
    for path in files:
        ckpt = load_checkpoint(path)
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
    )


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
    target's class probabilities); std: [N, O] population std over members (zeros for a single
    model); members: [M, N, O]; errors: [N] "" or the reason; labels: multiclass only, [N][T]
    predicted class names (highest mean probability; "" for an invalid SMILES).
    """

    target_names: list[str]
    mean: np.ndarray
    std: np.ndarray
    members: np.ndarray
    errors: list[str]
    labels: list[list[str]] | None = None


def predict_smiles(
    ensemble: Ensemble,
    smiles: Sequence[str],
    *,
    batch_size: int | None = None,
    workers: int | None = 1,
) -> Predictions:
    """Predict a list of SMILES held in memory (for notebooks; files go through predict_csv)."""
    from molsam.chem.parallel import featurize_many

    arrays = featurize_many(list(smiles), ensemble.rwse_steps, workers=workers,
                            extras=ensemble.extras)
    return _block_predictions(ensemble, arrays, len(smiles), batch_size)


def _block_predictions(
    ensemble: Ensemble, arrays: FeaturizedArrays, n: int, batch_size: int | None
) -> Predictions:
    members = np.full((len(ensemble), n, ensemble.num_outputs), np.nan)
    if len(arrays.valid):
        source = arrays_source(arrays, n, ensemble.device)
        members[:, arrays.valid] = ensemble.predict_source(
            source, np.arange(len(arrays.valid)), batch_size
        )
    errors = [""] * n
    for position, reason in arrays.invalid:
        errors[position] = reason or "invalid SMILES"
    mean, std = summarize(members)
    labels = None
    if ensemble.classes is not None:
        labels = [[""] * len(ensemble.classes) for _ in range(n)]
        start = 0
        for t, names in enumerate(ensemble.classes):
            block = mean[arrays.valid, start : start + len(names)]
            for row, best in zip(arrays.valid.tolist(), block.argmax(axis=1).tolist()):
                labels[row][t] = names[best]
            start += len(names)
    return Predictions(list(ensemble.target_names), mean, std, members, errors, labels)


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


def output_columns(header: TableHeader, ensemble: Ensemble) -> list[str]:
    """Kept input columns (kept_input_columns), then one per task (`<task>_pred` if the input
    already has `<task>`, `<task>_pred2`, ... if it has that too, as a file molsam predicted
    before does), then `<task>_std` for an ensemble, then molsam_error. Multiclass: per task
    `<task>_<class>` for each class, then `<task>` (the predicted class); an ensemble adds
    `<task>_<class>_std`."""
    return [name for name, _ in _output_layout(header, ensemble)]


def output_kinds(header: TableHeader, ensemble: Ensemble) -> list[str]:
    """The kind of each output column (molsam.predict_writers: INPUT, NUMBER or TEXT), in the
    order of output_columns."""
    return [kind for _, kind in _output_layout(header, ensemble)]


def _output_layout(header: TableHeader, ensemble: Ensemble) -> list[tuple[str, str]]:
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
        std = []
        for target, classes in zip(ensemble.target_names, ensemble.classes):
            probabilities = [free(f"{target}_{c}") for c in classes]
            layout += [(n, NUMBER) for n in probabilities] + [(free(target), TEXT)]
            std += [f"{n}_std" for n in probabilities]
    if len(ensemble) > 1:
        layout += [(free(n), NUMBER) for n in std]
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
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
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

    Raises:
        InputError: unreadable input, missing SMILES column, a malformed line (naming file and
            line); on error no output file is left behind.
    """
    from molsam.chem.parallel import default_workers, start_pool

    start = time.perf_counter()
    kind = output_format(output)  # an Excel output name: refused before any reading
    # SD records: parsed by workers
    header, rows = iter_table(input_path, workers=workers, read=read)
    at = smiles_column_index(header, ensemble, smiles_column)
    columns = output_columns(header, ensemble)
    kept = kept_input_columns(header)
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
            sink = parquet_output(output, columns, output_kinds(header, ensemble), typed)
        else:
            sink = _csv_output(output, columns, delimiter)
        with sink as writer, cpu_threads(ensemble.device, threads):
            # One block in flight: the workers featurize block k+1 while the model scores block k.
            pending: deque[tuple[list[list[str]], list[str], Callable[[], FeaturizedArrays]]]
            pending = deque()
            for block, reasons in iter_blocks(rows, block_rows, header.problems):
                pending.append((block, reasons, _submit(pool, block, at, ensemble.rwse_steps,
                                                              ensemble.extras)))
                # Drain to one block in flight (all of them at the end of the file).
                while len(pending) > 1:
                    done, why, result = pending.popleft()
                    valid += _write_block(writer, ensemble, done, result, batch_size, why, kept)
                    total += len(done)
                    if on_progress:
                        on_progress(total)
            while pending:
                done, why, result = pending.popleft()
                valid += _write_block(writer, ensemble, done, result, batch_size, why, kept)
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
) -> int:
    """Predict one block and write its rows; returns the number of valid molecules. `reasons`:
    the reader's reason per row (an unreadable SD record), which replaces the featurizer's;
    `kept`: the input cells to copy (kept_input_columns), None for all."""
    rows, valid = score_block(ensemble, block, result(), batch_size, reasons, kept)
    writer.writerows(rows)
    return valid


def score_block(
    ensemble: Ensemble,
    block: list[list[str]],
    arrays: FeaturizedArrays,
    batch_size: int | None = None,
    reasons: list[str] | None = None,
    kept: list[int] | None = None,
) -> tuple[list[list[str]], int]:
    """Output rows of one block of input rows, in input order, and its number of valid molecules.

    Each output row is the kept input cells as read (`kept`: indices from kept_input_columns,
    None for all), then the prediction cells (empty for an invalid SMILES), then the error cell:
    the columns of `output_columns`. `arrays` are the block's featurized SMILES (positions
    relative to the block); `reasons`, the reader's reason per row, replaces the featurizer's.
    Single-machine predict (`predict_csv`) and the Ray engine (`molsam.predict_ray`) both score
    blocks with this one function.
    """
    found = _block_predictions(ensemble, arrays, len(block), batch_size)
    if reasons:
        found.errors = [why or error for why, error in zip(reasons, found.errors)]
    cells = [[_format(v) for v in row] for row in found.mean.tolist()]
    if found.labels is not None:  # after each multiclass target's probabilities, its label
        ends = np.cumsum(ensemble.num_classes).tolist()
        cells = [
            [c for t, lo in enumerate([0] + ends[:-1]) for c in (*row[lo : ends[t]], labels[t])]
            for row, labels in zip(cells, found.labels)
        ]
    if len(ensemble) > 1:
        cells = [row + [_format(v) for v in std] for row, std in zip(cells, found.std.tolist())]
    if kept is not None:
        block = [[row[i] for i in kept] for row in block]
    rows = [row + predicted + [error] for row, predicted, error in zip(block, cells, found.errors)]
    return rows, len(block) - sum(1 for e in found.errors if e)
