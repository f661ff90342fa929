"""`molsam predict --engine ray`: many input files scored on a Ray cluster with Ray Data.

Pipeline (Ray Data, streaming, so memory stays flat whatever the files' sizes):

    input files ──read (one task per file, blocks of BLOCK_ROWS rows)──▶ blocks
      ──actor pool (each actor loads the checkpoint once; featurizes and scores a block with
        molsam.predict.score_block, the same code as single-machine predict)──▶ CSV text per block
      ──driver: one output file per input file, blocks written in order──▶ OUT_DIR/<name>

Parquet: a `.parquet` input is read with pyarrow row group by row group inside its read task
(molsam.data.parquet) and its output is a `.parquet` file that keeps every input column's type
(molsam.predict_writers.ParquetRows, fed by the driver). Ray Data's own read_parquet and
write_parquet are not used: they split and name files their own way, while predict keeps one
output per input with every row in input order. Excel, SD and SMILES inputs give `.csv` outputs.

Every input row gives one output row, in input order, with the columns of single-machine predict
(`molsam.predict.output_columns`, molsam_error included). Each output file is written to a
temporary file in OUT_DIR and renamed into place when complete. The driver only writes text; the
actors do all chemistry and model work (one GPU per actor where the cluster has GPUs, else one
CPU per actor with one torch thread).

Ray is an optional extra (`pip install molsam[ray]`), imported only here.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from molsam.errors import ConfigError, InputError, MolsamError
from molsam.outputs import naming, output_folder, temp_beside

#: molsam.predict.BLOCK_ROWS (not imported here: this module must stay light for Ray's readers).
BLOCK_ROWS = 8192

INSTALL_HINT = "--engine ray needs Ray Data, which is not installed: pip install molsam[ray]"
#: Input files a folder argument expands to (what molsam's readers take).
TABLE_SUFFIXES = (".csv", ".tsv", ".tab", ".txt")
CSV_OUTPUT_SUFFIXES = (".smi", ".smiles", ".sdf", ".sd", ".xlsx", ".xlsm", ".xls")
PARQUET_SUFFIXES = (".parquet", ".pq")
INPUT_SUFFIXES = TABLE_SUFFIXES + CSV_OUTPUT_SUFFIXES + PARQUET_SUFFIXES


def import_ray():
    """The ray module, or a one-line error that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return ray


def resolve_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Input files from INPUT arguments: a file is itself, a folder gives its table files
    (INPUT_SUFFIXES, .gz too; sorted), a glob pattern its matches (sorted)."""
    found: list[Path] = []
    for raw in inputs:
        path = Path(raw).expanduser()
        if path.is_dir():
            files = sorted(
                p for p in path.iterdir()
                if p.is_file() and p.name.removesuffix(".gz").endswith(INPUT_SUFFIXES)
            )
            if not files:
                raise InputError(f"{path}: a folder without input files ({', '.join(INPUT_SUFFIXES)})")
            found += files
        elif path.exists():
            found.append(path)
        elif glob.has_magic(str(raw)):
            matches = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
            if not matches:
                raise InputError(f"{raw}: no file matches this pattern")
            found += matches
        else:
            raise InputError(f"{path}: no such file or folder")
    if not found:
        raise InputError("no input file given")
    return found


def output_name(path: Path) -> str:
    """An input's output file name: the same name without .gz; SD, SMILES and Excel files give
    .csv (Parquet files .parquet)."""
    name = path.name.removesuffix(".gz")
    if name.lower().endswith(CSV_OUTPUT_SUFFIXES):
        name = name.rsplit(".", 1)[0] + ".csv"
    return name


@dataclass(frozen=True)
class _FilePlan:
    path: str
    out: str
    smiles_at: int
    delimiter: str
    columns: list[str]
    kept: list[int] | None  # input cells copied to the output (kept_input_columns), None: all
    kinds: list[str] | None = None  # output column kinds for a Parquet output, else None
    typed: list[int] | None = None  # a Parquet input's kept columns, re-read with their types


def _plan(ensemble, inputs: list[Path], out_dir: Path, smiles_column: str | None,
          read=None, options=None) -> list[_FilePlan]:
    """Per input: where its output goes, its SMILES column and output columns (checked here, in
    the driver, so a missing column is one line before any work starts)."""
    if ensemble.feature_columns:  # before Ray starts: the local engine reads them
        raise ConfigError(
            "--engine ray does not read a model's input feature columns "
            f"({', '.join(ensemble.feature_columns)}) yet; predict with the local engine")
    from molsam.data.read_options import DEFAULT
    from molsam.data.table import iter_table
    from molsam.predict import (
        kept_input_columns,
        output_columns,
        output_kinds,
        smiles_column_index,
    )

    plans, taken = [], {}
    for path in inputs:
        header, _ = iter_table(path, read=read or DEFAULT)
        name = output_name(path)
        if name in taken:
            raise InputError(
                f"{path} and {taken[name]} would both write {out_dir / name}; "
                "predict them into different --out folders"
            )
        taken[name] = path
        delimiter = "\t" if name.endswith((".tsv", ".tab")) else ","
        kept = kept_input_columns(header)
        parquet = name.lower().endswith(PARQUET_SUFFIXES)
        plans.append(_FilePlan(
            str(path), str(out_dir / name), smiles_column_index(header, ensemble, smiles_column),
            delimiter, output_columns(header, ensemble, options),
            None if len(kept) == len(header.columns) else kept,
            output_kinds(header, ensemble, options) if parquet else None,
            kept if parquet else None,
        ))
    return plans


def _read_blocks(batch: dict, block_rows: int, read=None):
    """Ray Data UDF: the blocks of each input file, as rows of (file, seq, payload, last).

    payload: JSON of [rows, reasons] for BLOCK_ROWS input rows; each file ends with a marker row
    (last=True, no rows) so the driver knows when a file is complete. Imports no torch or RDKit:
    reader processes stay light."""
    from molsam.data.read_options import DEFAULT
    from molsam.data.table import iter_blocks, iter_table

    for file, path in zip(batch["file"].tolist(), batch["path"].tolist()):
        header, rows = iter_table(path, read=read or DEFAULT)
        seq = 0
        for block, reasons in iter_blocks(rows, block_rows, header.problems):
            yield _row(file, seq, json.dumps([block, reasons]), False)
            seq += 1
        yield _row(file, seq, "[[], []]", True)


def _row(file: int, seq: int, payload: str, last: bool) -> dict:
    return {
        "file": np.array([file]), "seq": np.array([seq]), "payload": np.array([payload]),
        "last": np.array([last]),
    }


class _Scorer:
    """Ray Data actor: loads the checkpoint(s) once, then featurizes and scores blocks."""

    def __init__(self, model_paths: list[str], device: str, batch_size: int | None,
                 plans: list[_FilePlan], options=None):
        import torch

        from molsam.predict import load_ensemble

        if device in ("cpu", "auto") and not torch.cuda.is_available():
            torch.set_num_threads(1)  # one CPU per actor; more threads only fight the others
        self.ensemble = load_ensemble(model_paths, device)
        self.batch_size = batch_size
        self.plans = plans
        self.options = options  # molsam.predict_uncertainty.PredictOptions, or None

    def __call__(self, batch: dict) -> dict:
        from molsam.chem.parallel import featurize_many
        from molsam.predict import featurize_extras, score_block

        extras = featurize_extras(self.ensemble, self.options)
        texts, counts, valids = [], [], []
        for file, seq, payload in zip(batch["file"].tolist(), batch["seq"].tolist(),
                                      batch["payload"].tolist()):
            block, reasons = json.loads(payload)
            plan = self.plans[file]
            if not block:
                texts.append("")
                counts.append(0)
                valids.append(0)
                continue
            smiles = [cells[plan.smiles_at] for cells in block]
            arrays = featurize_many(smiles, self.ensemble.rwse_steps, workers=1, extras=extras)
            rows, valid = score_block(
                self.ensemble, block, arrays, self.batch_size, reasons, plan.kept, self.options,
                seq,  # the block's number in its file, as single-machine predict counts them
            )
            buffer = io.StringIO()
            csv.writer(buffer, delimiter=plan.delimiter, lineterminator="\n").writerows(rows)
            texts.append(buffer.getvalue())
            counts.append(len(block))
            valids.append(valid)
        return {
            "file": batch["file"], "seq": batch["seq"], "last": batch["last"],
            "text": np.array(texts, dtype=object), "rows": np.array(counts),
            "valid": np.array(valids),
        }


class _ParquetHandle:
    """A Parquet output fed with the actors' CSV text: rows parsed back (exactly: CSV quotes
    every cell that needs it) and written with the input's own column types
    (molsam.predict_writers.ParquetRows, molsam.data.parquet.TypedColumns)."""

    def __init__(self, plan: _FilePlan, temp: Path):
        from molsam.data.parquet import TypedColumns
        from molsam.predict_writers import ParquetRows

        self.typed = TypedColumns(Path(plan.path), plan.typed)
        self.rows = ParquetRows(temp, plan.columns, plan.kinds, self.typed)
        self.lock = None  # the temp file's locked fd (molsam.outputs.temp_beside)

    def write(self, text: str, delimiter: str) -> None:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
        if rows:
            self.rows.writerows(rows)

    def close(self) -> None:
        try:
            self.rows.close()
        finally:
            self.typed.close()
            if self.lock is not None:
                self.lock.close()


class _Outputs:
    """The driver's side: one temporary file per input, blocks written in `seq` order, renamed
    into place when the file's end marker has been written."""

    def __init__(self, plans: list[_FilePlan]):
        self.plans = plans
        self.next_seq = [0] * len(plans)
        self.pending: list[dict[int, tuple[str, bool]]] = [{} for _ in plans]
        self.handles: dict[int, tuple[io.TextIOBase, str]] = {}
        self.done = [False] * len(plans)

    def add(self, file: int, seq: int, text: str, last: bool) -> None:
        self.pending[file][seq] = (text, last)
        # A full disk, a folder made read-only meanwhile: one line naming the output file.
        with naming(self.plans[file].out, None, "--out"):
            self._drain(file)

    def _drain(self, file: int) -> None:
        while self.next_seq[file] in self.pending[file]:
            text, last = self.pending[file].pop(self.next_seq[file])
            handle = self._handle(file)
            if isinstance(handle, _ParquetHandle):
                handle.write(text, self.plans[file].delimiter)
            else:
                handle.write(text)
            self.next_seq[file] += 1
            if last:
                self._finish(file)

    def _handle(self, file: int):
        if file not in self.handles:
            plan = self.plans[file]
            out = Path(plan.out)
            fd, temp = temp_beside(out)  # after sweeping what a killed predict left there
            if plan.kinds is not None:
                handle = _ParquetHandle(plan, Path(temp))
                handle.lock = os.fdopen(fd, "rb")  # open (so locked) until the file is done
            else:
                handle = os.fdopen(fd, "w", encoding="utf-8", newline="")
                csv.writer(handle, delimiter=plan.delimiter,
                           lineterminator="\n").writerow(plan.columns)
            self.handles[file] = (handle, temp)
        return self.handles[file][0]

    def _finish(self, file: int) -> None:
        handle, temp = self.handles.pop(file)
        handle.close()
        os.replace(temp, self.plans[file].out)
        self.done[file] = True

    def abort(self) -> None:
        for handle, temp in self.handles.values():
            try:
                handle.close()
            except OSError:
                pass  # a full disk fails the close too; the temp file goes all the same
            if os.path.exists(temp):
                os.unlink(temp)
        self.handles.clear()


def predict_files_ray(
    models: Sequence[str | Path],
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    address: str | None = None,
    smiles_column: str | None = None,
    batch_size: int | None = None,
    actors: int | None = None,
    device: str = "auto",
    block_rows: int = BLOCK_ROWS,
    read=None,
    options=None,
    on_note=None,
) -> PredictSummary:
    """Predict every row of every input file on Ray; one output file per input in `out_dir`.

    Args:
        models: checkpoint files or a run directory (an ensemble, as in single-machine predict).
        inputs: files, folders (their table files) or glob patterns.
        address: None starts a local Ray (all cores of this machine) unless Ray is already
            initialized in this process; "auto" joins the cluster this machine belongs to;
            "ray://host:10001" connects a Ray client.
        actors: scoring actors (default: one per GPU of the cluster, else one per CPU).
        device: "auto" uses a GPU per actor when the cluster has GPUs.
        read: delimiter, decimal mark and sheet of every input (molsam.data.read_options).
        options: what is written beside the predictions, as in single-machine predict
            (molsam.predict_uncertainty.PredictOptions; None: plain, plus the domain columns
            when the checkpoints hold training fingerprints); on_note: called, once the
            files are written, with each line the options' plan has for the user.

    Raises:
        ConfigError: Ray is not installed (one line saying how to install it).
        InputError / CheckpointError: as single-machine predict, naming file and line.
    """
    from molsam.predict import PredictSummary, load_ensemble

    ray = import_ray()
    start = time.perf_counter()
    ensemble = load_ensemble(models, "cpu")  # in the driver: checks and metadata only
    notes = ensemble.plan(options).notes  # options it cannot honour: refused here
    files = resolve_inputs(inputs)
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: is a file; --out must be a folder with --engine ray")
    out = output_folder(out, "--out")  # created and writable before Ray starts, not after
    plans = _plan(ensemble, files, out, smiles_column, read, options)
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 logging_level="warning")
    outputs = _Outputs(plans)
    total = valid = 0
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # blocks arrive in order: small buffers
        context.enable_progress_bars = False
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0)) if device in ("auto", "cuda") else 0
        count = actors or max(1, gpus or int(resources.get("CPU", 1)))
        per_actor = {"num_gpus": 1} if gpus else {"num_cpus": 1}
        listing = ray.data.from_items(
            [{"file": i, "path": plan.path} for i, plan in enumerate(plans)],
            override_num_blocks=len(plans),
        )
        blocks = listing.map_batches(
            _read_blocks, batch_size=1, fn_kwargs={"block_rows": block_rows, "read": read},
            num_cpus=0,  # reading is light; every CPU goes to the scoring actors
        )
        scored = blocks.map_batches(
            _Scorer, batch_size=1, compute=ray.data.ActorPoolStrategy(size=count),
            batch_format="numpy",
            fn_constructor_kwargs={
                "model_paths": [str(p) for p in ensemble.paths],
                "device": "cuda" if gpus else "cpu",
                "batch_size": batch_size, "plans": plans, "options": options,
            },
            **per_actor,
        )
        for batch in scored.iter_batches(batch_size=None, batch_format="numpy"):
            for file, seq, text, last, rows, good in zip(
                batch["file"].tolist(), batch["seq"].tolist(), batch["text"].tolist(),
                batch["last"].tolist(), batch["rows"].tolist(), batch["valid"].tolist(),
            ):
                outputs.add(file, seq, text, last)
                total += rows
                valid += good
    except Exception as exc:
        outputs.abort()
        cause = _molsam_cause(exc)
        if cause is not None:
            raise cause from None
        raise
    finally:
        if started_here:
            ray.shutdown()
    missing = [plans[i].path for i, done in enumerate(outputs.done) if not done]
    if missing:  # cannot happen unless Ray dropped blocks: never report success then
        raise InputError(f"{missing[0]}: Ray returned an incomplete result; nothing written")
    for note in notes if on_note is not None else ():  # after the run: errors stay one line
        on_note(note)
    return PredictSummary(total, valid, total - valid, time.perf_counter() - start)


def _molsam_cause(exc: BaseException) -> MolsamError | None:
    """The molsam error behind a Ray task failure (Ray wraps it with the worker's traceback),
    rebuilt as a plain one-line error of the same type."""
    seen, todo = set(), [exc]
    while todo:
        error = todo.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, MolsamError):
            for cls in type(error).__mro__:
                if cls.__module__ == "molsam.errors":
                    message = (error.args[0] if error.args else str(error)).strip().splitlines()
                    return cls(message[-1] if message else "")
        todo += [getattr(error, "cause", None), error.__cause__, error.__context__]
    return None
