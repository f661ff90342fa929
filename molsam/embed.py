"""Molecular representations from a trained model (`molsam embed`).

For every input row, the vector the model's prediction head reads: GPS `readout(embed(...))`
(Rampasek et al., NeurIPS 2022), CoMPT `pool(embed(...))` (Chen et al., IJCAI 2021), with the
model's scaled molecule-level features appended when it has them (model.mol_features;
molsam.models.features.joined_features): D = hidden (+ F) numbers, float32, in eval mode
(dropout off). It is taken as the input of `model.head` (a forward pre-hook), so by
construction `model.head(embedding)` gives the model's outputs.

Rows are kept as in predict: one output row per input row, in input order (molsam.predict's
readers, SMILES column rules and streaming blocks). Output by the file's name:

- `.npy`: float32 [N, D], row i for input row i; an invalid SMILES is a row of NaN, and a
  sidecar `<name>.errors.csv` (columns row, smiles, molsam_error; row counts input rows from 0)
  lists every invalid row with RDKit's reason (header only when every row is valid). The
  array is streamed to a temporary file and renamed into place when complete, so memory stays
  flat whatever the row count.
- `.csv` / `.tsv` / `.parquet`: every input column (molsam_error of an earlier molsam output
  excepted), then emb_0 .. emb_{D-1} (9 significant digits, exact for float32; empty for an
  invalid SMILES), then molsam_error (molsam.predict_writers: Parquet types the embedding
  columns float64 and keeps a Parquet input's column types).

A run directory with several replicates embeds with its first (lowest seed) best.pt: each
replicate learned its own coordinates, so their vectors cannot be averaged; pass a
checkpoint to choose another.
"""

from __future__ import annotations

import csv
import os
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from molsam.data.read_options import DEFAULT, ReadOptions
from molsam.errors import ConfigError

EMBED_SUFFIXES = (".npy", ".csv", ".tsv", ".tab", ".parquet", ".pq")
ERRORS_SUFFIX = ".errors.csv"


@dataclass(frozen=True)
class EmbedSummary:
    """rows, valid, invalid input rows; width: D; checkpoint: the model used; files written."""

    rows: int
    valid: int
    invalid: int
    width: int
    seconds: float
    checkpoint: str
    files: tuple[str, ...]
    read: str = ""


def embedding_width(model: torch.nn.Module) -> int:
    """D: the width of the vector the head reads (hidden + molecule features)."""
    return int(model.hidden) + int(getattr(model, "mol_features", 0) or 0)


@torch.no_grad()
def representations(model: torch.nn.Module, batch) -> torch.Tensor:
    """The head's input for a batch of B molecules: float32 [B, D] (module docstring)."""
    captured: list[torch.Tensor] = []
    handle = model.head.register_forward_pre_hook(
        lambda module, args: captured.append(args[0].detach()))
    try:
        model(batch)
    finally:
        handle.remove()
    return captured[0].float()


def embed_arrays(
    model: torch.nn.Module, arrays, n: int, device: torch.device, batch_size: int | None = None
) -> np.ndarray:
    """Embeddings of n featurized input rows (molsam.chem.parallel.FeaturizedArrays): float32
    [n, D], NaN rows for the invalid ones. Batched by molecule size like predict."""
    from molsam.predict import arrays_source, default_batch_size, padded_batches

    out = np.full((n, embedding_width(model)), np.nan, dtype=np.float32)
    if not len(arrays.valid):
        return out
    source = arrays_source(arrays, n, device)
    counts = source.atom_counts_host
    order = np.argsort(counts, kind="stable")
    batch_size = batch_size or default_batch_size(device)
    was_training = model.training
    model.eval()
    try:
        rows = np.empty((len(order), out.shape[1]), dtype=np.float32)
        with torch.inference_mode():
            for lo, hi in padded_batches(counts[order], batch_size):
                batch = source.gather(order[lo:hi])
                rows[lo:hi] = representations(model, batch).cpu().numpy()
    finally:
        model.train(was_training)
    out[arrays.valid[order]] = rows
    return out


def embed_smiles(
    checkpoint: str | Path, smiles: Sequence[str], *, device: str = "auto",
    batch_size: int | None = None, workers: int | None = 1,
) -> np.ndarray:
    """Embeddings of SMILES held in memory: float32 [len(smiles), D], NaN rows for invalid
    SMILES (for notebooks; files go through embed_file)."""
    from molsam.chem.parallel import featurize_many

    ensemble, _ = _model(checkpoint, device)
    arrays = featurize_many(list(smiles), ensemble.rwse_steps, workers=workers,
                            extras=ensemble.extras)
    return embed_arrays(ensemble.models[0], arrays, len(smiles), ensemble.device, batch_size)


def _model(checkpoint, device):
    """The one model to embed with (module docstring) and a note when a run had several."""
    from molsam.predict import load_ensemble, resolve_model_paths

    paths = resolve_model_paths([checkpoint])
    note = ""
    if len(paths) > 1:
        note = (f"embedding with {paths[0]} (the first of {len(paths)} replicates; pass a "
                "checkpoint to choose another)")
    return load_ensemble([paths[0]], device), note


def output_kind(path: str | Path) -> str:
    """'npy', 'csv', 'tsv' or 'parquet' from the output's name.

    Raises:
        ConfigError: another suffix.
    """
    name = str(path).lower()
    if name.endswith(".npy"):
        return "npy"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".tsv", ".tab")):
        return "tsv"
    if name.endswith(".csv"):
        return "csv"
    raise ConfigError(f"--out {path}: embed writes .npy, .csv, .tsv or .parquet files")


def embed_file(
    checkpoint: str | Path,
    input_path: str | Path,
    output: str | Path,
    *,
    smiles_column: str | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    workers: int | None = None,
    block_rows: int | None = None,
    read: ReadOptions = DEFAULT,
    on_note: Callable[[str], None] | None = None,
) -> EmbedSummary:
    """Embed every row of `input_path` (any file predict reads) into `output` (module
    docstring), streamed block by block and written atomically.

    Raises:
        ConfigError, InputError, CheckpointError: one-line messages (an output suffix embed
            does not write, a missing SMILES column, a bad checkpoint).
    """
    from molsam.chem.parallel import default_workers, start_pool
    from molsam.data.formats import file_format, reading_line
    from molsam.data.table import iter_blocks, iter_table
    from molsam.devices import cpu_threads
    from molsam.predict import (
        BLOCK_ROWS,
        ERROR_COLUMN,
        _format,
        _submit,
        kept_input_columns,
        smiles_column_index,
    )

    start = time.perf_counter()
    kind = output_kind(output)
    ensemble, note = _model(checkpoint, device)
    if note and on_note is not None:
        on_note(note)
    model = ensemble.models[0]
    width = embedding_width(model)
    header, rows = iter_table(input_path, workers=workers, read=read)
    at = smiles_column_index(header, ensemble, smiles_column)
    kept = kept_input_columns(header)
    names = [f"emb_{i}" for i in range(width)]
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ConfigError(f"--workers: expected an int >= 1, got {workers}")
    total = valid = 0
    pool = start_pool(workers) if workers > 1 else None
    files: tuple[str, ...]
    try:
        threads = min(torch.get_num_threads(), default_workers() - workers)
        if kind == "npy":
            sink = _NpyOutput(Path(output), width)
            files = (str(output), str(sink.errors_path))
        else:
            from molsam.predict import _csv_output
            from molsam.predict_writers import INPUT, NUMBER, TEXT, parquet_output

            columns = [header.columns[i] for i in kept] + names + [ERROR_COLUMN]
            if kind == "parquet":
                from molsam.data.parquet import TypedColumns

                typed = (TypedColumns(header.path, kept)
                         if file_format(header.path) == "parquet" else None)
                kinds = [INPUT] * len(kept) + [NUMBER] * width + [TEXT]
                sink = parquet_output(output, columns, kinds, typed)
            else:
                sink = _csv_output(output, columns, "\t" if kind == "tsv" else ",")
            files = (str(output),)
        with sink as writer, cpu_threads(ensemble.device, threads):
            pending: deque = deque()

            def drain(limit: int) -> None:
                nonlocal total, valid
                while len(pending) > limit:
                    block, reasons, result = pending.popleft()
                    arrays = result()
                    vectors = embed_arrays(model, arrays, len(block), ensemble.device,
                                           batch_size)
                    errors = [""] * len(block)
                    for position, reason in arrays.invalid:
                        errors[position] = reason or "invalid SMILES"
                    if reasons:
                        errors = [why or error for why, error in zip(reasons, errors)]
                        vectors[[i for i, e in enumerate(errors) if e]] = np.nan
                    if kind == "npy":
                        writer.write(vectors, [c[at] for c in block], errors, total)
                    else:
                        cells = [[_format(v) for v in row] for row in vectors.tolist()]
                        writer.writerows([[cells_in[i] for i in kept] + row + [error]
                                          for cells_in, row, error in zip(block, cells, errors)])
                    total += len(block)
                    valid += sum(1 for e in errors if not e)

            for block, reasons in iter_blocks(rows, block_rows or BLOCK_ROWS, header.problems):
                pending.append((block, reasons,
                                _submit(pool, block, at, ensemble.rwse_steps, ensemble.extras)))
                drain(1)
            drain(0)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return EmbedSummary(total, valid, total - valid, width, time.perf_counter() - start,
                        str(ensemble.paths[0]), files, reading_line(header))


class _NpyOutput:
    """A .npy file of float32 [N, D] rows written block by block: the rows go to a temporary
    file beside it, the header (whose shape needs N) and the rows to a second one, renamed over
    the destination when complete; the errors sidecar likewise."""

    def __init__(self, path: Path, width: int):
        from molsam.outputs import output_file

        self.path = output_file(path, "--out")
        self.errors_path = self.path.with_name(self.path.name.removesuffix(".npy")
                                               + ERRORS_SUFFIX)
        self.width = width
        self.rows = 0

    def __enter__(self):
        from molsam.outputs import writes_to

        with writes_to(self.path, "--out"):
            fd, self.raw = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".rows",
                                            dir=self.path.parent)
        self.raw_handle = os.fdopen(fd, "wb")
        fd, self.errors_temp = tempfile.mkstemp(prefix=f".{self.errors_path.name}.",
                                                suffix=".tmp", dir=self.path.parent)
        self.errors_handle = os.fdopen(fd, "w", encoding="utf-8", newline="")
        self.errors = csv.writer(self.errors_handle, lineterminator="\n")
        self.errors.writerow(["row", "smiles", "molsam_error"])
        return self

    def write(self, vectors: np.ndarray, smiles: list[str], errors: list[str],
              offset: int) -> None:
        self.raw_handle.write(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
        self.rows += len(vectors)
        self.errors.writerows([offset + i, s, e] for i, (s, e) in enumerate(zip(smiles, errors))
                              if e)

    def __exit__(self, kind, value, traceback) -> None:
        temp = None
        try:
            self.raw_handle.close()
            self.errors_handle.close()
            if kind is not None:
                return
            fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp",
                                        dir=self.path.parent)
            with os.fdopen(fd, "wb") as out, open(self.raw, "rb") as rows:
                np.lib.format.write_array_header_1_0(out, {
                    "descr": "<f4", "fortran_order": False, "shape": (self.rows, self.width)})
                while chunk := rows.read(1 << 22):
                    out.write(chunk)
            os.replace(temp, self.path)
            os.replace(self.errors_temp, self.errors_path)
        finally:
            for leftover in (self.raw, self.errors_temp, temp):
                if leftover is not None and os.path.exists(leftover):
                    os.unlink(leftover)
