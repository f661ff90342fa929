"""SD records parsed in worker processes: this process only splits the file into records.

Parsing an SD record (RDKit's mol block parser, sanitization, canonical SMILES) costs ~1-2 ms,
so reading an SD file in one process ran at ~570 records/s, slower than featurizing what it read.
Here the reading process cuts the text into records (each through its `$$$$` line, as RDKit
separates them), sends batches of records to a pool, and yields the parsed rows in file order,
with at most a few batches per worker in flight (a streaming reader of a large file holds only
those).

Each record is read as if on its own (`parse_records`): the rows, SMILES and RDKit's messages
(their line numbers shifted to count from the top of the file) are those of one supplier over
the whole file, except after a record whose mol block runs past its own `$$$$` line (an atom
count larger than its atom lines): one supplier then also skips the record after it, and every
later record number is one off; here that next record is read and numbered as it is in the file.
"""

from __future__ import annotations

import io
import re
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import BinaryIO

#: Records per worker job, and jobs in flight per worker.
BATCH_RECORDS = 64
IN_FLIGHT_PER_WORKER = 4

#: A parsed record: (cells in header order, "") or (None, RDKit's reason it is unreadable).
Parsed = tuple[list[str] | None, str]


def split_records(handle: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """The records of an SD file: (lines before it in the file, its bytes through its `$$$$`
    line, a line starting with `$$$$` as RDKit separates records); text after the last
    separator is a record unless it is blank."""
    lines: list[bytes] = []
    before = 0
    for line in handle:
        lines.append(line)
        if line[:4] == b"$$$$":
            yield before, b"".join(lines)
            before += len(lines)
            lines = []
    rest = b"".join(lines)
    if rest.strip():
        yield before, rest


def parse_records(job: tuple[Sequence[tuple[int, bytes]], dict[str, int], int]) -> list[Parsed]:
    """Worker: parse each record (sanitized, explicit hydrogens removed) into its cells:
    canonical SMILES, the title line, then the SD properties at the columns `at` gives (of
    `width`); an unreadable record gets RDKit's reason instead, its line numbers counted from
    the top of the file (`split_records` says how many lines precede each record).

    One supplier reads the whole batch (a supplier per record costs ~25% more: its set-up on
    the first read); should it return fewer results than records, a record ran past its `$$$$`
    and took the next one with it, and the batch is read again one supplier per record.
    """
    records, at, width = job
    parsed = _parse_together(records, at, width)
    if len(parsed) != len(records):
        parsed = [
            (_parse_together([record], at, width) or [(None, rdkit_reason(""))])[0]
            for record in records
        ]
    return parsed


def _parse_together(records: Sequence[tuple[int, bytes]], at: dict[str, int], width: int) -> list:
    """What one ForwardSDMolSupplier over the records' text yields, as Parsed items."""
    from rdkit import Chem, rdBase  # RDKit only where records are parsed

    before = records[0][0]
    text = b"".join(record for _, record in records)
    supplier = Chem.ForwardSDMolSupplier(io.BytesIO(text), sanitize=True, removeHs=True)
    parsed: list[Parsed] = []
    while True:
        # Scoped capture: RDKit's message for a bad record becomes its invalid-row reason
        # instead of a log line on stderr (never silenced process-wide).
        with rdBase.CaptureErrorLog() as capture:
            try:
                mol = next(supplier)
            except StopIteration:
                break
        if mol is None:
            parsed.append((None, _file_lines(rdkit_reason(capture.messages), before)))
            continue
        cells = [""] * width
        cells[0] = Chem.MolToSmiles(mol)
        cells[1] = mol.GetProp("_Name").strip() if mol.HasProp("_Name") else ""
        for name in mol.GetPropNames():
            if name in at:
                cells[at[name]] = mol.GetProp(name).strip()
        parsed.append((cells, ""))
    return parsed


def parsed_records(
    records: Iterable[tuple[int, bytes]], at: dict[str, int], width: int, workers: int
) -> Iterator[Parsed]:
    """`parse_records` of every record, in order; with workers > 1 in a pool of that many
    processes (started on the first record, stopped when the iterator ends or is closed)."""
    batches = _batches(records, BATCH_RECORDS)
    if workers <= 1:
        for batch in batches:
            yield from parse_records((batch, at, width))
        return
    from molsam.chem.parallel import start_pool

    pool = start_pool(workers)
    try:
        pending: deque = deque()
        for batch in batches:
            pending.append(pool.apply_async(parse_records, ((batch, at, width),)))
            if len(pending) >= workers * IN_FLIGHT_PER_WORKER:
                yield from pending.popleft().get()
        while pending:
            yield from pending.popleft().get()
    finally:
        pool.terminate()  # done, or the reader was closed early: stop at once
        pool.join()


def _batches(records: Iterable, size: int) -> Iterator[list]:
    batch: list = []
    for record in records:
        batch.append(record)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def rdkit_reason(messages: str) -> str:
    """RDKit's log lines for one record as one line: timestamps, 'ERROR:' and its 'moving to the
    next molecule' notice dropped, repeats removed."""
    seen: dict[str, None] = {}
    for line in messages.splitlines():
        text = re.sub(r"^\[[0-9:]+\]\s*", "", line.strip())
        text = text.removeprefix("ERROR: ").strip()
        if text and not text.startswith("moving to the beginning of the next molecule"):
            seen.setdefault(text, None)
    return "; ".join(seen) or "RDKit could not read this record"


_LINE = re.compile(r"\bline (\d+)")


def _file_lines(reason: str, before: int) -> str:
    """RDKit numbers lines from the start of what its supplier read, here one record: shift
    every "line N" by the `before` lines that precede the record in the file."""
    if not before:
        return reason
    return _LINE.sub(lambda found: f"line {int(found.group(1)) + before}", reason)
