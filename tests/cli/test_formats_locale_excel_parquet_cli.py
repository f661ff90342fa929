"""Issue 25 through the CLI: the `;`/decimal-comma file featurizes and says how it was read,
ambiguity is one line naming the flag, Excel rows keep their sheet row numbers, and predict gives
the same rows from CSV, Excel and Parquet inputs, with a Parquet output keeping column types."""

from __future__ import annotations

import csv
import datetime
import io
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from molsam.cli.main import app
from molsam.predict import load_ensemble, predict_csv
from tests.conftest import write_csv
from tests.spreadsheets import write_parquet, write_xlsx
from tests.unit.test_predict import SMILES, make_run

runner = CliRunner()
#: The issue's file, with enough molecules to split.
EU = "smiles;freesolv\nCN(C)C(=O)c1ccc(cc1)OC;-11,01\n" + "".join(
    f"{s};{-i / 4:.2f}\n".replace(".", ",") for i, s in enumerate(SMILES[:11]))


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_featurize_the_issue_file_and_say_how_it_was_read(tmp_path):
    path = write_csv(tmp_path / "eu.csv", EU)
    out = tmp_path / "f"
    result = runner.invoke(app, ["featurize", str(path), "--split", "random", "-o", str(out),
                                 "-j", "1"])
    assert result.exit_code == 0, result.output
    assert f"read {path} as ';'-separated with decimal commas" in result.output
    assert "12 rows, 12 valid, 0 invalid" in result.output
    assert "targets: 'freesolv' (regression)" in " ".join(result.output.split())
    stats = json.loads((out / "splits.json").read_text())["stats"]
    sizes = [stats[p]["size"] for p in ("train", "val", "test")]
    mean = sum(stats[p]["tasks"]["freesolv"]["mean"] * n
               for p, n in zip(("train", "val", "test"), sizes)) / sum(sizes)
    assert mean == pytest.approx((-11.01 + sum(-i / 4 for i in range(11))) / 12, abs=1e-4)


def test_an_ambiguous_file_is_one_line_and_the_flag_decides(tmp_path):
    path = write_csv(tmp_path / "amb.csv", "mol;a,b\nCCO;1,5\nCCN;3,5\nCCCl;2,5\nCCC;1,0\n")
    command = ["featurize", str(path), "--smiles-col", "mol", "--split", "random",
               "-o", str(tmp_path / "f"), "-j", "1"]
    line = one_line_error(runner.invoke(app, command))
    assert "cannot tell the delimiter" in line and "--delimiter (data.delimiter)" in line
    result = runner.invoke(app, command + ["--delimiter", ";"])
    assert result.exit_code == 0, result.output
    assert f"read {path} as ';'-separated with decimal commas" in result.output
    assert "targets: 'a,b' (regression)" in " ".join(result.output.split())
    line = one_line_error(runner.invoke(app, command + ["--delimiter", "::"]))
    assert "--delimiter: '::' is not one of" in line


def test_featurize_an_excel_sheet_reports_invalid_rows_by_sheet_row(tmp_path):
    rows = [["smiles", "logS"]] + [[s, i / 2] for i, s in enumerate(SMILES[:10])]
    rows.insert(4, ["C1CC", 0.5])  # sheet row 6 (the header is on row 2)
    path = write_xlsx(tmp_path / "lib.xlsx", [["a title row"]], sheet="Notes",
                      other_sheets={"Data": [[None], *rows]})
    out = tmp_path / "f"
    result = runner.invoke(app, ["featurize", str(path), "--sheet", "Data", "--split", "random",
                                 "-o", str(out), "-j", "1"])
    assert result.exit_code == 0, result.output
    assert f"read {path} as an Excel workbook, sheet 'Data'" in result.output
    assert "11 rows, 10 valid, 1 invalid" in result.output
    report = (out / "invalid_rows.csv").read_text().splitlines()
    assert report[0] == "row,sheet row,smiles,reason" and report[1].startswith("3,6,C1CC,")
    line = one_line_error(runner.invoke(app, ["featurize", str(path), "-o", str(tmp_path / "g")]))
    assert "no SMILES column 'smiles' (columns: 'a title row')" in line  # the first sheet


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The same 26 rows (an int ID, SMILES with an invalid one, text) as CSV, xlsx and Parquet
    (three row groups), and a tiny trained run."""
    folder = tmp_path_factory.mktemp("inputs")
    smiles = SMILES[:12] + ["not a smiles"] + SMILES[12:] + ["C1CC"]
    ids = list(range(1000, 1000 + len(smiles)))
    notes = [f"batch {i % 3}, plate" for i in range(len(smiles))]
    table = folder / "in.csv"
    with open(table, "w", newline="") as handle:
        csv.writer(handle).writerows([["id", "smiles", "note"], *zip(ids, smiles, notes)])
    xlsx = write_xlsx(folder / "in.xlsx", [["id", "smiles", "note"], *zip(ids, smiles, notes)])
    import pyarrow as pa

    parquet = write_parquet(folder / "in.parquet", {
        "id": pa.array(ids, pa.int32()), "smiles": smiles, "note": notes,
        "day": pa.array([datetime.date(2024, 1, 1 + i % 28) for i in range(len(smiles))]),
        "w": pa.array([i / 8 for i in range(len(smiles))], pa.float32()),
    }, row_group_size=10)
    run, _ = make_run(folder / "run", seeds=(0, 1), steps=1)
    return run, table, xlsx, parquet


def test_predict_gives_the_same_rows_from_csv_excel_and_parquet(tmp_path, inputs):
    run, table, xlsx, parquet = inputs
    outputs = {}
    for path in (table, xlsx, parquet):
        out = tmp_path / f"{path.suffix[1:]}.csv"
        result = runner.invoke(app, ["predict", str(run), str(path), "-o", str(out), "-j", "1"])
        assert result.exit_code == 0, result.output
        assert f"read {path} as " in result.stderr and "26 rows, 24 valid, 2 invalid" in \
            result.stderr
        outputs[path.suffix] = list(csv.reader(io.StringIO(out.read_text())))
    assert outputs[".csv"] == outputs[".xlsx"]  # byte for byte the same rows
    from_parquet = [row[:3] + row[5:] for row in outputs[".parquet"]]  # less `day` and `w`
    assert from_parquet == outputs[".csv"]
    assert outputs[".csv"][0] == ["id", "smiles", "note", "y", "y_std", "molsam_error"]
    assert outputs[".csv"][13][1] == "not a smiles" and outputs[".csv"][13][3] == ""
    assert outputs[".csv"][13][-1].startswith("SMILES parse error")
    assert outputs[".parquet"][1][3:5] == ["2024-01-01", "0"]


def test_parquet_to_parquet_keeps_column_types_and_values(tmp_path, inputs):
    import pyarrow as pa
    import pyarrow.parquet as pq

    run, table, _, parquet = inputs
    out = tmp_path / "out.parquet"
    result = runner.invoke(app, ["predict", str(run), str(parquet), "-o", str(out), "-j", "1"])
    assert result.exit_code == 0, result.output
    assert f"read {parquet} as Parquet (26 rows in 3 row groups)" in result.stderr
    got = pq.read_table(out)
    source = pq.read_table(parquet)
    assert got.schema.names == ["id", "smiles", "note", "day", "w", "y", "y_std", "molsam_error"]
    for name in ("id", "smiles", "note", "day", "w"):
        assert got.schema.field(name).type == source.schema.field(name).type, name
        assert got.column(name).equals(source.column(name)), name
    assert got.schema.field("y").type == pa.float64() and got.schema.field("y_std").type == \
        pa.float64()
    reference = list(csv.DictReader(io.StringIO(
        runner.invoke(app, ["predict", str(run), str(table), "-j", "1"]).stdout)))
    assert got.column("y").to_pylist() == [float(r["y"]) if r["y"] else None for r in reference]
    assert got.column("molsam_error").to_pylist() == [r["molsam_error"] for r in reference]
    assert got.column("y").null_count == 2
    # Blocks that straddle row groups (block 4 rows, row groups 10): the same rows and columns
    # (predictions from other batches: float32 rounding only).
    ensemble = load_ensemble([run], "cpu")
    again = tmp_path / "again.parquet"
    predict_csv(ensemble, parquet, again, workers=1, block_rows=4)
    small = pq.read_table(again)
    assert small.schema == got.schema and small.num_rows == 26
    assert small.drop(["y", "y_std"]).equals(got.drop(["y", "y_std"]))
    for name in ("y", "y_std"):
        a, b = (np.array(t.column(name).to_pylist(), dtype=float) for t in (small, got))
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_parquet_output_of_a_csv_input_holds_strings_and_floats(tmp_path, inputs):
    import pyarrow as pa
    import pyarrow.parquet as pq

    run, table, _, _ = inputs
    out = tmp_path / "out.parquet"
    out.write_text("an older output")  # replaced, as a CSV output is
    result = runner.invoke(app, ["predict", str(run), str(table), "-o", str(out), "-j", "1"])
    assert result.exit_code == 0, result.output
    got = pq.read_table(out)
    assert [f.type for f in got.schema] == [pa.string()] * 3 + [pa.float64()] * 2 + [pa.string()]
    assert got.column("id").to_pylist()[:2] == ["1000", "1001"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet"]  # no temporary left


def test_bad_outputs_and_inputs_leave_nothing_behind(tmp_path, inputs):
    run, table, _, parquet = inputs
    line = one_line_error(runner.invoke(app, ["predict", str(run), str(parquet), "-o",
                                              str(tmp_path / "missing" / "o.parquet")]))
    assert "--out" in line and "does not exist" in line
    line = one_line_error(runner.invoke(app, ["predict", str(run), str(table), "-o",
                                              str(tmp_path / "o.xlsx")]))
    assert "predict writes CSV, TSV or Parquet files, not Excel workbooks" in line
    corrupt = tmp_path / "bad.parquet"
    corrupt.write_bytes(b"PAR1" + b"\0" * 64 + b"PAR1")
    line = one_line_error(runner.invoke(app, ["predict", str(run), str(corrupt), "-o",
                                              str(tmp_path / "o.parquet")]))
    assert line.startswith(f"error: {corrupt}: cannot read as Parquet")
    line = one_line_error(runner.invoke(app, ["predict", str(run), str(table), "--sheet", "S"]))
    assert "--sheet (data.sheet) applies to Excel workbooks, not CSV/TSV files" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.parquet"]


def test_evaluate_scores_the_same_from_every_format(tmp_path):
    run, _ = make_run(tmp_path / "run", steps=1)
    labeled = [line.split(",") for line in (run / "data.csv").read_text().splitlines()]
    eu = write_csv(tmp_path / "eu.csv", "".join(f"{s};{y.replace('.', ',')}\n"
                                                for s, y in labeled))
    xlsx = write_xlsx(tmp_path / "d.xlsx", [labeled[0]] + [[s, float(y)] for s, y in labeled[1:]])
    parquet = write_parquet(tmp_path / "d.parquet", {
        "smiles": [s for s, _ in labeled[1:]], "y": [float(y) for _, y in labeled[1:]]})
    scores = []
    for data in (run / "data.csv", eu, xlsx, parquet):
        out = tmp_path / f"{data.name}.json"
        result = runner.invoke(app, ["evaluate", str(run), "--data", str(data), "-o", str(out),
                                     "-j", "1", "--device", "cpu"])
        assert result.exit_code == 0, result.output
        assert f"read {data} as" in result.output
        scores.append(json.loads(out.read_text())["members"][0]["metrics"]["mean"])
    assert scores[1] == scores[0] and scores[2] == scores[0] and scores[3] == scores[0]
    line = one_line_error(runner.invoke(app, ["evaluate", str(run), "--decimal", ","]))
    assert "--delimiter, --decimal and --sheet read --data" in line
