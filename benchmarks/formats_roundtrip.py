"""Reading and predicting the same molecules as CSV, `;`-CSV with decimal commas, xlsx and Parquet.

    python benchmarks/formats_roundtrip.py [--rows 100000] [--model RUN_OR_CHECKPOINT]
        [--workers N] [--repeats 3] [--keep FOLDER]

Input: the SMILES of the shared MoleculeNet CSVs (../shared/data/moleculenet/*.csv; RDKit's
Data/NCI/first_5K.smi when they are absent), cycled to --rows, each row with an integer id, a
label with three decimals and a text note. The same rows are written four ways: CSV, a
`;`-separated CSV with decimal commas (as a spreadsheet in a European locale saves it), an xlsx
workbook (openpyxl, write-only mode) and Parquet (pyarrow, row groups of 8,192 rows).

Reading, best of --repeats, in this process, two ways: the reader alone (`iter_table`: header
and every row's cells, what predict streams) and the whole table read of featurize, train and
evaluate (`read_table`: the reader, then target inference and label parsing). Target: xlsx read
time <= 3x CSV read time (issue 25), printed for both.

Predicting: one model (--model, else `molsam train recipes/quickstart.yaml --set
train.epochs=1` trained here) predicts every file with `predict_csv` (CSV -> CSV, `;`-CSV ->
CSV, xlsx -> CSV, Parquet -> Parquet), in this process, with --workers featurization processes;
the CSV and Parquet runs alternate, best of --repeats. Target: Parquet -> Parquet molecules/s
>= CSV -> CSV molecules/s. Every output must hold the same rows in the same order with the same
predictions (each Parquet value the float of the CSV's cell); the script fails otherwise.
All ratios come from one run on one machine; run it at low priority on a shared machine:

    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/formats_roundtrip.py --rows 20000 --workers 1
"""

from __future__ import annotations

import argparse
import csv
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared" / "data" / "moleculenet"
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"
COLUMNS = ["id", "smiles", "label", "note"]


def molecules() -> tuple[list[str], str]:
    """SMILES to cycle through, and where they came from."""
    smiles: list[str] = []
    for path in sorted(SHARED.glob("*.csv")):
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            column = next(c for c in reader.fieldnames if c.lower() == "smiles")
            smiles.extend(row[column] for row in reader if row[column].strip())
    origin = f"{SHARED}/*.csv"
    if not smiles:
        import rdkit

        path = Path(rdkit.__file__).parent / "Data" / "NCI" / "first_5K.smi"
        smiles = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
        origin = str(path)
    random.Random(0).shuffle(smiles)  # every dataset in the first rows too
    return smiles, origin


def table_rows(smiles: list[str], rows: int) -> list[list]:
    rng = random.Random(1)
    return [[i, smiles[i % len(smiles)], round(rng.uniform(-12, 4), 3), f"plate {i % 96}, row"]
            for i in range(rows)]


def write_all(folder: Path, rows: list[list]) -> dict[str, Path]:
    paths = {"csv": folder / "mols.csv", "eu": folder / "mols_eu.csv",
             "xlsx": folder / "mols.xlsx", "parquet": folder / "mols.parquet"}
    with open(paths["csv"], "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([COLUMNS, *rows])
    with open(paths["eu"], "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=";")
        writer.writerow(COLUMNS)
        writer.writerows([i, s, repr(y).replace(".", ","), n] for i, s, y, n in rows)
    import openpyxl

    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("molecules")
    sheet.append(COLUMNS)
    for row in rows:
        sheet.append(row)
    book.save(paths["xlsx"])
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids, smiles, labels, notes = zip(*rows)
    table = pa.table({"id": pa.array(ids, pa.int64()), "smiles": smiles,
                      "label": pa.array(labels, pa.float64()), "note": notes})
    pq.write_table(table, paths["parquet"], row_group_size=8192)
    return paths


def read_seconds(path: Path, repeats: int) -> tuple[float, float, int]:
    """Best times of reading every row of `path` through molsam's reader (iter_table) and as a
    labeled table (read_table), and the row count."""
    from molsam.data.table import iter_table, read_table

    rows_best = table_best = float("inf")
    count = 0
    for _ in range(repeats):
        start = time.perf_counter()
        header, rows = iter_table(path)
        count = sum(1 for _ in rows)
        rows_best = min(rows_best, time.perf_counter() - start)
        start = time.perf_counter()
        table = read_table(path)
        table_best = min(table_best, time.perf_counter() - start)
        assert table.target_names == ["label"] and len(table) == count, (path, table.target_names)
    return rows_best, table_best, count


def trained_model(folder: Path) -> Path:
    """A run directory: the quickstart recipe trained for one epoch (molsam train)."""
    run = folder / "run"
    command = [sys.executable, "-m", "molsam", "train", str(QUICKSTART), "--out", str(run),
               "--set", "train.epochs=1", "--set", "train.seeds=[0]"]
    print(f"training: {' '.join(command[2:])}", flush=True)
    subprocess.run(command, check=True, cwd=ROOT, capture_output=True)
    return run


def output_table(path: Path) -> tuple[list[str], list[list]]:
    """(columns, rows) of a predict output; Parquet cells as Python values."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return table.schema.names, [list(r) for r in zip(*table.to_pydict().values())]
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


def check_identical(outputs: dict[str, Path], input_columns: list[str]) -> int:
    """Every output has the same ids in the same order, the same molsam_error and the same
    predictions (a Parquet value equals the float of the CSV's cell). Returns the row count."""
    columns, reference = output_table(outputs["csv"])
    predicted = [c for c in columns if c not in input_columns]
    at = {c: columns.index(c) for c in columns}
    for name, path in outputs.items():
        got_columns, rows = output_table(path)
        assert got_columns == columns, (name, got_columns)
        assert len(rows) == len(reference), (name, len(rows))
        for row, want in zip(rows, reference):
            assert str(row[at["id"]]) == want[at["id"]], (name, row[at["id"]])
            for column in predicted:
                got, expected = row[at[column]], want[at[column]]
                if column == "molsam_error" or not isinstance(got, float):
                    assert ("" if got is None else got) == expected, (name, column, got)
                else:
                    assert got == (float(expected) if expected else None), (name, column)
    return len(reference)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--model", type=Path, default=None, help="run directory or checkpoint")
    parser.add_argument("--workers", type=int, default=None, help="featurization processes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None, help="write the files here")
    args = parser.parse_args()

    smiles, origin = molecules()
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        paths = write_all(folder, table_rows(smiles, args.rows))
        print(f"input: {args.rows} rows of {len(smiles)} SMILES from {origin}; written in "
              f"{time.perf_counter() - start:.1f} s")
        for name, path in paths.items():
            print(f"  {name:>8}: {path.stat().st_size / 2**20:7.1f} MiB  {path.name}")

        print(f"\nreading every row (best of {args.repeats}): the reader alone (iter_table), "
              "and the labeled table featurize reads (read_table)")
        reads, tables = {}, {}
        for name, path in paths.items():
            seconds, table_seconds, count = read_seconds(path, args.repeats)
            assert count == args.rows, (name, count)
            reads[name], tables[name] = seconds, table_seconds
            print(f"  {name:>8}: reader {seconds:7.3f} s {count / seconds:>9.0f} rows/s "
                  f"{seconds / reads['csv']:5.2f}x CSV | read_table {table_seconds:7.3f} s "
                  f"{table_seconds / tables['csv']:5.2f}x CSV")
        for what, times in (("reader alone", reads), ("read_table", tables)):
            ratio = times["xlsx"] / times["csv"]
            print(f"xlsx read / CSV read, {what}: {ratio:.2f}x (target <= 3x: "
                  f"{'met' if ratio <= 3 else 'NOT met'})")

        from molsam.predict import load_ensemble, predict_csv

        model = args.model or trained_model(folder)
        ensemble = load_ensemble([model], "cpu")
        print(f"\npredicting with {model} ({len(ensemble)} model(s), cpu, workers "
              f"{args.workers or 'all cores'}; best of {args.repeats} for csv and parquet):")
        runs = {"csv": (paths["csv"], folder / "out.csv"),
                "parquet": (paths["parquet"], folder / "out.parquet"),
                "eu": (paths["eu"], folder / "out_eu.csv"),
                "xlsx": (paths["xlsx"], folder / "out_xlsx.csv")}
        measured: dict[str, list[float]] = {}
        order = ["csv", "parquet"] * args.repeats + ["eu", "xlsx"]  # alternating: same load
        for name in order:
            source, out = runs[name]
            summary = predict_csv(ensemble, source, out, workers=args.workers)
            assert summary.rows == args.rows, (name, summary.rows)
            measured.setdefault(name, []).append(summary.per_second)
        rates = {name: max(values) for name, values in measured.items()}
        for name in ("csv", "parquet", "eu", "xlsx"):
            values = measured[name]
            spread = (max(values) - min(values)) / max(values)
            print(f"  {name:>8} -> {runs[name][1].suffix[1:]:<8}: {rates[name]:8.0f} "
                  f"molecules/s  {rates[name] / rates['csv']:5.2f}x CSV -> CSV  (runs: "
                  f"{', '.join(f'{v:.0f}' for v in values)}; spread {spread:.1%})")
        ratio = rates["parquet"] / rates["csv"]
        print(f"Parquet -> Parquet / CSV -> CSV rate: {ratio:.3f}x (target >= 1: "
              f"{'met' if ratio >= 1 else 'NOT met'})")
        rows = check_identical({name: out for name, (_, out) in runs.items()}, COLUMNS)
        print(f"predictions identical across the 4 outputs: {rows} rows, same order, same "
              "values, same molsam_error")


if __name__ == "__main__":
    main()
