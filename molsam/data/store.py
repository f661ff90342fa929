"""GraphStore: every molecule of a dataset in a few concatenated arrays with CSR offsets.

Not a list of per-molecule objects: atoms of all molecules are rows of one uint8 code matrix, bonds
of all molecules rows of another, and per-molecule atom/bond counts give the offsets. That keeps
the store ~1 KB per molecule, makes it load in milliseconds, and lets batches be gathered with a
few vectorized index operations on the CPU or, after one copy, entirely on the GPU.

The file is a plain dict of tensors and builtins (`torch.load(weights_only=True)` reads it: nothing
is unpickled unsafely), written atomically.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from molsam.chem.spec import featurizer_spec
from molsam.data.splits import scaffold_ids as scaffold_table
from molsam.data.batching import BatchSource
from molsam.data.table import MolTable
from molsam.errors import InputError

if TYPE_CHECKING:  # featurization needs RDKit; loading and batching a store must not
    from molsam.chem.parallel import FeaturizedArrays

STORE_FORMAT = "molsam-graphstore"
#: 2: scaffold ids and table; RWSE rows deduplicated on disk (a table of distinct rows + an index).
STORE_FORMAT_VERSION = 2


@dataclass(frozen=True)
class InvalidRow:
    """A row whose SMILES RDKit rejects: its 0-based data row, file line, SMILES and reason."""

    row: int
    line: int
    smiles: str
    reason: str


@dataclass
class GraphStore:
    """G molecules, A atoms, M bonds (each bond once), T tasks, K RWSE steps.

    atom_counts: int32 [G]; bond_counts: int32 [G] (CSR offsets are their cumulative sums)
    atom_codes:  uint8 [A, F_atom]; rwse: float16 [A, K]
    bond_atoms:  uint8 or int16 [M, 2] atom indices local to each molecule (uint8 when every
                 molecule has at most 256 atoms: the bulk of a store's bytes are atoms and bonds)
    bond_codes:  uint8 [M, F_bond]
    y:           float32 [G, T], NaN for a missing label (class indices for multiclass)
    smiles:      [G] SMILES as read (stripped); rows: int32 [G] 0-based data row in the source
    ids:         [G] values of the ID column, or None
    scaffold_ids: int32 [G] Bemis-Murcko scaffold of each molecule, numbered in order of first
                 appearance, as index into `scaffolds` [S] (scaffold SMILES, "" for acyclic);
                 None for a store built without scaffolds (predict's batches)
    classes:     [T] class names per target (multiclass), else None
    ignored:     columns that target inference left out -> why
    atom_scalars: float32 [A, 8] and distances: uint8 [sum of squared atom counts], CoMPT's
                 inputs (molsam.chem.compt_inputs) in a store featurized with the "compt"
                 extra (spec["extras"]), else None
    mol_features: float32 [G, F] molecule-level features (rdkit2d, morgan_count extras; NaN
                 where a descriptor failed), else None
    """

    atom_counts: np.ndarray
    bond_counts: np.ndarray
    atom_codes: np.ndarray
    rwse: np.ndarray
    bond_atoms: np.ndarray
    bond_codes: np.ndarray
    y: np.ndarray
    smiles: list[str]
    rows: np.ndarray
    target_names: list[str]
    task: str | None
    spec: dict
    ids: list[str] | None = None
    source: str = ""
    source_hash: str = ""
    invalid: list[InvalidRow] = field(default_factory=list)
    scaffold_ids: np.ndarray | None = None
    scaffolds: list[str] | None = None
    classes: list[list[str]] | None = None
    ignored: dict[str, str] = field(default_factory=dict)
    atom_scalars: np.ndarray | None = None
    distances: np.ndarray | None = None
    mol_features: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.smiles)

    @property
    def num_tasks(self) -> int:
        return self.y.shape[1]

    @property
    def atom_ptr(self) -> np.ndarray:
        """int64 [G+1] offsets of each molecule's atoms."""
        return np.concatenate([[0], np.cumsum(self.atom_counts, dtype=np.int64)])

    @property
    def bond_ptr(self) -> np.ndarray:
        """int64 [G+1] offsets of each molecule's bonds."""
        return np.concatenate([[0], np.cumsum(self.bond_counts, dtype=np.int64)])

    # ----------------------------------------------------------------------------------- build
    @classmethod
    def from_smiles(
        cls,
        smiles: Sequence[str],
        targets: np.ndarray | None = None,
        *,
        target_names: Sequence[str] = (),
        ids: Sequence[str] | None = None,
        lines: np.ndarray | None = None,
        task: str | None = None,
        rwse_steps: int = 16,
        workers: int | None = None,
        on_progress: Callable[[int], None] | None = None,
        extras: tuple[str, ...] = (),
    ) -> "GraphStore":
        """Featurize SMILES (in parallel); invalid ones are left out and listed in `.invalid`.
        The workers also compute each molecule's scaffold (`.scaffold_ids`, `.scaffolds`)."""
        from molsam.chem.parallel import featurize_many  # RDKit: only when featurizing

        arrays = featurize_many(
            smiles, rwse_steps, workers=workers, on_progress=on_progress, scaffolds=True,
            extras=extras,
        )
        return cls.from_arrays(
            arrays, smiles, targets, target_names=target_names, ids=ids, lines=lines,
            task=task, rwse_steps=rwse_steps, extras=extras,
        )

    @classmethod
    def from_arrays(
        cls,
        arrays: FeaturizedArrays,
        smiles: Sequence[str],
        targets: np.ndarray | None = None,
        *,
        target_names: Sequence[str] = (),
        ids: Sequence[str] | None = None,
        lines: np.ndarray | None = None,
        task: str | None = None,
        rwse_steps: int = 16,
        extras: tuple[str, ...] = (),
    ) -> "GraphStore":
        """A store of the valid molecules of featurized input `smiles` (same order as `arrays`);
        `targets` [len(smiles), T] and `ids` are per input row and get subset to the valid ones."""
        keep = arrays.valid
        if targets is None:
            targets = np.zeros((len(smiles), 0), dtype=np.float32)
        lines = np.arange(len(smiles)) + 2 if lines is None else lines
        big = len(arrays.atom_counts) and arrays.atom_counts.max() > 256
        scaffold_ids, scaffolds = (None, None)
        if arrays.scaffolds is not None:
            scaffold_ids, scaffolds = scaffold_table(arrays.scaffolds)
        return cls(
            atom_counts=arrays.atom_counts.astype(np.int32),
            bond_counts=arrays.bond_counts.astype(np.int32),
            atom_codes=arrays.atom_codes,
            rwse=arrays.rwse,
            bond_atoms=arrays.bond_atoms.astype(np.int16 if big else np.uint8),
            bond_codes=arrays.bond_codes,
            y=np.ascontiguousarray(targets[keep], dtype=np.float32),
            smiles=[smiles[i] for i in keep],
            rows=keep.astype(np.int32),
            target_names=list(target_names),
            task=task,
            spec=featurizer_spec(rwse_steps, extras),
            ids=None if ids is None else [ids[i] for i in keep],
            invalid=[InvalidRow(i, int(lines[i]), smiles[i], why) for i, why in arrays.invalid],
            scaffold_ids=scaffold_ids,
            scaffolds=scaffolds,
            atom_scalars=arrays.atom_scalars,
            distances=arrays.distances,
            mol_features=arrays.mol_features,
        )

    @classmethod
    def from_table(
        cls,
        table: MolTable,
        *,
        task: str | None = None,
        rwse_steps: int = 16,
        workers: int | None = None,
        on_progress: Callable[[int], None] | None = None,
        extras: tuple[str, ...] = (),
    ) -> "GraphStore":
        """Featurize a table's SMILES (in parallel, scaffolds included) into a store."""
        from molsam.chem.parallel import featurize_many  # RDKit: only when featurizing

        arrays = featurize_many(
            table.smiles, rwse_steps, workers=workers, on_progress=on_progress, scaffolds=True,
            extras=extras,
        )
        return cls.from_table_arrays(
            table, arrays, task=task, rwse_steps=rwse_steps, extras=extras)

    @classmethod
    def from_table_arrays(
        cls,
        table: MolTable,
        arrays: FeaturizedArrays,
        *,
        task: str | None = None,
        rwse_steps: int = 16,
        extras: tuple[str, ...] = (),
    ) -> "GraphStore":
        """A store of a table whose SMILES `featurize_many(..., scaffolds=True)` featurized."""
        store = cls.from_arrays(
            arrays,
            table.smiles,
            table.targets,
            target_names=table.target_names,
            ids=table.ids,
            lines=table.lines,
            task=task,
            rwse_steps=rwse_steps,
            extras=extras,
        )
        if table.features is not None:  # the file's feature columns, after the computed ones
            columns = table.features[arrays.valid].astype(np.float32)
            store.mol_features = columns if store.mol_features is None else np.concatenate(
                [store.mol_features, columns], axis=1)
        store.source = str(table.source)
        store.classes = table.classes
        store.ignored = dict(table.ignored)
        if table.problems:  # the reader's reason (e.g. an unreadable SD record) beats "empty SMILES"
            store.invalid = [
                InvalidRow(r.row, r.line, r.smiles, table.problems.get(r.row, r.reason))
                for r in store.invalid
            ]
        return store

    # ----------------------------------------------------------------------------------- batch
    def batch_source(self, device: torch.device | str = "cpu") -> BatchSource:
        """The arrays as tensors on `device` (one copy of the whole store), ready to gather."""
        device = torch.device(device)

        def put(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(array)).to(device)

        return BatchSource(
            atom_ptr=put(self.atom_ptr),
            bond_ptr=put(self.bond_ptr),
            atom_codes=put(self.atom_codes),
            rwse=put(self.rwse),
            bond_atoms=put(self.bond_atoms),
            bond_codes=put(self.bond_codes),
            y=put(self.y),
            atom_counts_host=self.atom_counts.astype(np.int64),
            bond_counts_host=self.bond_counts.astype(np.int64),
            atom_scalars=None if self.atom_scalars is None else put(self.atom_scalars),
            distances=None if self.distances is None else put(self.distances),
            mol_features=None if self.mol_features is None else put(self.mol_features),
        )

    # ------------------------------------------------------------------------- torch-geometric
    def to_pyg(self) -> list:
        """Every molecule as a `torch_geometric.data.Data` (layout: molsam.data.pyg)."""
        from molsam.data.pyg import to_pyg_data_list

        return to_pyg_data_list(self)

    def to_pyg_dataset(self):
        """The store as a torch-geometric `InMemoryDataset`, ready for PyG's DataLoader."""
        from molsam.data.pyg import to_pyg_dataset

        return to_pyg_dataset(self)

    @classmethod
    def from_pyg(cls, molecules, **kwargs) -> "GraphStore":
        """The store back from `to_pyg()` / `to_pyg_dataset()` (molsam.data.pyg.store_from_pyg)."""
        from molsam.data.pyg import store_from_pyg

        return store_from_pyg(molecules, **kwargs)

    # ------------------------------------------------------------------------------------ disk
    def write_invalid_rows(self, path: str | Path) -> Path:
        """invalid_rows.csv: row (0-based data row), line (in the source file; `record` for an
        SD file), smiles, reason."""
        from molsam.data.formats import position_unit

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["row", position_unit(self.source), "smiles", "reason"])
            writer.writerows([r.row, r.line, r.smiles, r.reason] for r in self.invalid)
        return path

    def to_dict(self) -> dict:
        """Plain tensors and builtins only, so `torch.load(weights_only=True)` can read it.

        RWSE rows are written once each (`rwse_table`) with an index per atom: symmetric atoms
        and common substructures repeat them (on drug-like sets ~3 of 4 rows are repeats), and
        they are most of a store's bytes (32 of ~45 per atom).
        """
        tensor = torch.from_numpy
        rwse_table, rwse_index = distinct_rows(self.rwse)
        return {
            "format": STORE_FORMAT,
            "format_version": STORE_FORMAT_VERSION,
            "atom_counts": tensor(self.atom_counts),
            "bond_counts": tensor(self.bond_counts),
            "atom_codes": tensor(self.atom_codes),
            "rwse_table": tensor(rwse_table),
            "rwse_index": tensor(rwse_index),
            "bond_atoms": tensor(self.bond_atoms),
            "bond_codes": tensor(self.bond_codes),
            "y": tensor(self.y),
            "smiles": list(self.smiles),
            "rows": tensor(self.rows),
            "target_names": list(self.target_names),
            "task": self.task,
            "spec": self.spec,
            "ids": self.ids,
            "source": self.source,
            "source_hash": self.source_hash,
            "invalid": [[r.row, r.line, r.smiles, r.reason] for r in self.invalid],
            "scaffold_ids": None if self.scaffold_ids is None else tensor(self.scaffold_ids),
            "scaffolds": None if self.scaffolds is None else list(self.scaffolds),
            "classes": self.classes,
            "ignored": dict(self.ignored),
            # CoMPT's inputs; absent (None) in stores featurized without the "compt" extra.
            "atom_scalars": None if self.atom_scalars is None else tensor(self.atom_scalars),
            "distances": None if self.distances is None else tensor(self.distances),
            "mol_features": None if self.mol_features is None else tensor(self.mol_features),
        }

    def save(self, path: str | Path) -> Path:
        """Write atomically: a temporary file in the same folder, then rename over `path`.

        torch.save writes through a Python file so that a full disk surfaces as an OSError (with
        its errno, naming `path`: molsam.outputs.naming), not as a bare RuntimeError."""
        from molsam.outputs import naming

        path = Path(path)
        with naming(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                            suffix=".tmp")
        try:
            with naming(path, temp), os.fdopen(handle, "wb") as file:
                torch.save(self.to_dict(), file)
            with naming(path, temp):
                os.replace(temp, path)
        finally:
            if os.path.exists(temp):
                os.unlink(temp)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "GraphStore":
        from molsam.fileset import settle

        path = Path(path)
        settle(path.parent, reading=True)  # a featurize killed mid-replace: finish it first
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise InputError(f"{path}: no such store file") from None
        except Exception as exc:
            raise InputError(f"{path}: not a readable molsam store ({type(exc).__name__})") from None
        if not isinstance(data, dict) or data.get("format") != STORE_FORMAT:
            raise InputError(f"{path}: not a molsam store")
        if data.get("format_version") != STORE_FORMAT_VERSION:
            raise InputError(
                f"{path}: store format version {data.get('format_version')} is not supported "
                f"(supports {STORE_FORMAT_VERSION}); featurize again"
            )
        arrays = {k: data[k].numpy() for k in _ARRAY_FIELDS}
        scaffold_ids = data["scaffold_ids"]
        return cls(
            **arrays,
            rwse=data["rwse_table"].numpy()[data["rwse_index"].numpy()],
            scaffold_ids=None if scaffold_ids is None else scaffold_ids.numpy(),
            scaffolds=data["scaffolds"],
            smiles=data["smiles"],
            target_names=data["target_names"],
            task=data["task"],
            spec=data["spec"],
            ids=data["ids"],
            source=data["source"],
            source_hash=data["source_hash"],
            invalid=[InvalidRow(*item) for item in data["invalid"]],
            classes=data.get("classes"),  # absent in stores written before multiclass
            ignored=data.get("ignored") or {},
            atom_scalars=_optional_array(data.get("atom_scalars")),
            distances=_optional_array(data.get("distances")),
            mol_features=_optional_array(data.get("mol_features")),
        )


def _optional_array(value: torch.Tensor | None) -> np.ndarray | None:
    return None if value is None else value.numpy()


_ARRAY_FIELDS = (
    "atom_counts",
    "bond_counts",
    "atom_codes",
    "bond_atoms",
    "bond_codes",
    "y",
    "rows",
)


def distinct_rows(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(table [U, K], index int32 [N]) with table[index] == values bit for bit.

    Rows are grouped by a 64-bit hash of their bytes (one integer sort, ~4x faster than
    np.unique over rows); the result is checked exactly and, should two distinct rows ever share
    a hash, recomputed with np.unique over the raw bytes. Table rows come in order of their hash,
    each the row's first occurrence (np.unique's order, computed without its stable sort: the
    first occurrence of a hash is the smallest position among its equals, whatever the sort).
    """
    values = np.ascontiguousarray(values)
    if len(values) == 0:
        return values, np.zeros(0, dtype=np.int32)
    if values[0].nbytes == 0:  # rows of no columns (a store without RWSE): one empty row
        return values[:1], np.zeros(len(values), dtype=np.int32)
    raw = values.view(np.uint8).reshape(len(values), -1)
    digest = _row_digest(raw)
    order = np.argsort(digest)
    ordered = digest[order]
    new_group = np.empty(len(order), dtype=bool)
    new_group[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new_group[1:])
    first = np.minimum.reduceat(order, np.flatnonzero(new_group))
    index = np.empty(len(order), dtype=np.int64)
    index[order] = np.cumsum(new_group) - 1
    # rows as single byte strings: gathering those copies each row at once
    rows = raw.view(np.dtype((np.void, raw.shape[1]))).ravel()
    if not np.array_equal(rows[first[index]].view(np.uint8), raw.ravel()):
        _, first, index = np.unique(rows, return_index=True, return_inverse=True)
    return values[first], index.astype(np.int32).ravel()


def _row_digest(raw: np.ndarray) -> np.ndarray:
    """uint64 [N]: a multiply-xor hash of each row of bytes [N, B], word by word."""
    words = np.zeros((len(raw), -(-raw.shape[1] // 8) * 8), dtype=np.uint8)
    words[:, : raw.shape[1]] = raw
    words = words.view(np.uint64)
    digest = np.zeros(len(raw), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in range(words.shape[1]):
            digest = (digest ^ words[:, column]) * np.uint64(0x9E3779B97F4A7C15)
            digest ^= digest >> np.uint64(29)
    return digest
