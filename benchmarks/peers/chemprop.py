"""molsam beside chemprop on the same molecules and the same splits (issue 22, part 3).

What it measures: for each dataset and seed, the test metric (ROC-AUC for classification, RMSE
for regression) and the wall time of one training run of
- molsam: `molsam train recipes/<dataset>.yaml --set train.seeds=[SEED]`, the shipped recipe;
- chemprop 2.x (D-MPNN) at its own defaults (`chemprop train`: its epochs, model, learning-rate
  schedule, batch size, early stopping on validation loss), once as it is (`default`) and once
  with RDKit descriptors (`+v1_rdkit_2d_normalized`, chemprop v1's "D-MPNN + RDKit features",
  `--molecule-featurizers`), one replicate per seed with `--data-seed` = `--pytorch-seed` = SEED.

Why this way: published chemprop numbers come from other splits, other molecule filters and
other metric code, so they do not compare (docs/RESULTS.md quotes them only as a reference).
Here both tools see exactly the same molecules, labels and split indices, and both are scored by
the same code:
- molsam featurizes and splits each dataset exactly as `molsam train` does (the recipe with the
  same `--set` overrides, `molsam.train.run.load_recipe_data` and
  `molsam.data.pipeline.split_store`: the deterministic scaffold split of the recipes). The valid
  molecules (SMILES as read, molsam's labels, the same target columns) are written as chemprop's
  input CSV, row i = molsam's molecule i, and the split as a chemprop `--splits-file`
  (`[{"train": [...], "val": [...], "test": [...]}]`), so chemprop trains on molsam's indices.
  Both runs' own record of their split (molsam's splits.json, chemprop's splits.json) is checked
  against these indices after every run; a mismatch stops the script.
- chemprop's test predictions (test_predictions.csv, from its best-validation-loss checkpoint)
  are scored with `molsam.train.metrics.task_metrics` against molsam's labels, the function
  molsam scores its own test split with (masked per task, averaged over the tasks that have a
  value). chemprop's own logged test numbers are kept beside it as `chemprop_reported`.
- The scaffold split does not depend on the seed (the recipes' `split.seed` is fixed and the
  `scaffold` method ignores it): every seed is the same split, and the seeds measure the training
  noise of each tool (initialization, shuffling, dropout). The difference molsam minus chemprop is
  paired by seed.
- Wall time is the whole command, start-up included, each tool's torch limited to `--threads`
  intra-op threads (default 1, molsam's CPU default: `train.threads` for molsam,
  OMP_NUM_THREADS/MKL_NUM_THREADS for chemprop), one run at a time. molsam reads its featurized
  store from its cache (filled by this script's split step, before the first run of a dataset);
  chemprop featurizes (and computes descriptors) inside every run, as it always does. Cells run
  seed-major, the smallest dataset first, so a grid cut short still holds every tool on the same
  (dataset, seed) cells.

chemprop runs in its own virtual environment (default `benchmarks/peers/.chemprop-venv`,
created with `python3 -m venv`, then `pip install chemprop==2.3.1 torch==<molsam's torch>`; an
existing one with that chemprop version is re-used). chemprop 2.3.1 needs torch>=2.1 and runs on
the torch molsam uses (2.13.0, CPU build). For a CPU-only torch from PyTorch's own index pass
`--pip-arg=--extra-index-url=https://download.pytorch.org/whl/cpu`.

Results: one JSON line per (tool, config, dataset, seed) cell in `--out`/results.jsonl, appended
as each run ends; a cell already there with the same settings (versions, overrides, threads,
recipe content) is skipped, so the same command continues an interrupted grid. Work files
(CSV, splits, each run's directory) are under `--out`/work. At the end (or with `--table-only`)
a Markdown table: metric mean ± sample std over seeds per tool/config/dataset, the paired
difference molsam minus each chemprop config (mean ± sample std over the seeds both have), and
the mean wall time per run.

    # the full comparison (hours of CPU: 6 datasets x 5 seeds x 3 runs)
    MOLSAM_DATA_DIR=/path/to/moleculenet/raw nice -n 19 python benchmarks/peers/chemprop.py \\
        --data-path sider=/path/to/moleculenet/sider.csv --out runs/peers

    # a smoke run (shortened training; the real runs use each tool's defaults)
    MOLSAM_DATA_DIR=/path/to/moleculenet/raw nice -n 19 python benchmarks/peers/chemprop.py \\
        --datasets esol bbbp --seeds 0 --chemprop-epochs 3 --molsam-set train.epochs=3 \\
        --out runs/peers-smoke

sider's named download is the raw DeepChem file; the recipes' studies read the main-set CSV
(smiles + 27 task columns) instead, hence `--data-path sider=...` (molsam's `data.path`; the
same molecules then go to chemprop).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
#: The six GraphSAM-paper datasets, smallest first (cells run in this order).
DATASETS = ("esol", "sider", "clintox", "bbbp", "lipo", "tox21")
SEEDS = (0, 1, 2, 3, 4)
CHEMPROP_VERSION = "2.3.1"
RDKIT_FEATURIZER = "v1_rdkit_2d_normalized"
TOOLS = ("molsam", "chemprop")
METRIC_LABEL = {"roc_auc": "ROC-AUC ↑", "rmse": "RMSE ↓"}
RESULTS = "results.jsonl"


# --------------------------------------------------------------------------- pure helpers


def chemprop_splits(train: Iterable[int], val: Iterable[int], test: Iterable[int]) -> list[dict]:
    """chemprop 2.x `--splits-file` content for one split: a list with one replicate, each part
    a sorted list of plain ints (row indices of chemprop's input CSV = molsam store indices)."""
    parts = {name: sorted(int(i) for i in part)
             for name, part in (("train", train), ("val", val), ("test", test))}
    seen: dict[int, str] = {}
    for name, part in parts.items():
        for i in part:
            if i < 0:
                raise ValueError(f"{name}: negative index {i}")
            if i in seen:
                raise ValueError(f"index {i} is in both {seen[i]} and {name}")
            seen[i] = name
    return [parts]


def write_splits_file(path: Path, train: Iterable[int], val: Iterable[int],
                      test: Iterable[int]) -> Path:
    """Write chemprop's --splits-file JSON for molsam's split indices."""
    path.write_text(json.dumps(chemprop_splits(train, val, test)) + "\n")
    return path


def label_text(value: float) -> str:
    """A label as chemprop's CSV holds it: empty for a missing one (NaN), else the shortest
    decimal that reads back as the same float32 (molsam stores labels as float32)."""
    import numpy as np

    if value is None or math.isnan(float(value)):
        return ""
    return str(np.float32(value))


def write_chemprop_csv(path: Path, smiles: Sequence[str], y, target_names: Sequence[str],
                       smiles_column: str = "smiles") -> Path:
    """chemprop's input CSV: one row per molsam molecule, in store order (row i = molecule i),
    the SMILES as molsam read them and one column per target."""
    if smiles_column in target_names:
        raise ValueError(f"a target is named {smiles_column!r}, like the SMILES column")
    if len(y) != len(smiles):
        raise ValueError(f"{len(smiles)} SMILES but {len(y)} label rows")
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([smiles_column, *target_names])
        for smi, row in zip(smiles, y):
            writer.writerow([smi, *(label_text(v) for v in row)])
    return path


def read_test_predictions(path: Path, expected_smiles: Sequence[str],
                          target_names: Sequence[str]):
    """chemprop's test_predictions.csv as float [n_test, T] in `target_names` order, checked to
    hold exactly the expected test molecules in the expected order."""
    import numpy as np

    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    missing = [t for t in target_names if t not in header]
    if missing:
        raise ValueError(f"{path}: no prediction column for {missing}")
    if [r[0] for r in body] != list(expected_smiles):
        raise ValueError(f"{path}: the predicted molecules are not the test split's, in order")
    at = [header.index(t) for t in target_names]
    return np.array([[float(r[i]) for i in at] for r in body], dtype=np.float64)


def parse_reported(log_text: str) -> dict[str, float]:
    """chemprop's own test scores from its log (`test/roc: 0.91`, `test/rmse: 1.02`)."""
    found = {}
    for name, value in re.findall(r"\btest/([A-Za-z0-9_-]+): ([-+0-9.eE]+|nan)\b", log_text):
        try:
            found[name] = float(value)
        except ValueError:
            continue
    return found


def parse_data_paths(items: Sequence[str]) -> dict[str, str]:
    """`--data-path NAME=PATH` items -> {name: path}."""
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--data-path {item!r}: expected DATASET=PATH")
        out[name.strip().casefold()] = path
    return out


def settings_id(settings: dict) -> str:
    """A short stable hash of a cell's settings (names work folders; decides resume)."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def cell_key(record: dict) -> tuple:
    """What makes a cell the same cell: tool, config, dataset, seed and every setting."""
    return (record["tool"], record["config"], record["dataset"], int(record["seed"]),
            settings_id(record["settings"]))


def read_results(path: Path) -> list[dict]:
    """The records of results.jsonl (a torn last line, from a killed write, is skipped)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def append_result(path: Path, record: dict) -> None:
    """One JSON line, flushed to disk before the next run starts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None for fewer than 2 values, as docs/RESULTS.md)."""
    if not values:
        return None, None
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def paired_differences(molsam: dict[int, float], other: dict[int, float]) -> dict[int, float]:
    """molsam minus the other tool, per seed both have."""
    return {seed: molsam[seed] - other[seed] for seed in sorted(set(molsam) & set(other))}


def show(mean: float | None, std: float | None, digits: int = 3, signed: bool = False) -> str:
    if mean is None:
        return "-"
    text = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    return text if std is None else f"{text} ± {std:.{digits}f}"


def summary_rows(records: Sequence[dict], baseline: str = "molsam") -> list[dict]:
    """Per (dataset, tool, config): seeds, metric mean/std, wall time per run and, for every
    other tool's config, the paired difference baseline minus it (per seed)."""
    cells: dict[tuple, dict[int, dict]] = defaultdict(dict)
    for r in records:
        cells[(r["dataset"], r["tool"], r["config"])][int(r["seed"])] = r
    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    rows = []
    for dataset in datasets:
        keys = sorted((k for k in cells if k[0] == dataset),
                      key=lambda k: (k[1] != baseline, k[1], k[2] != "default", k[2]))
        base = next((cells[k] for k in keys if k[1] == baseline), {})
        base_scores = {s: r["test"] for s, r in base.items() if r["test"] is not None}
        for key in keys:
            by_seed = cells[key]
            scores = {s: r["test"] for s, r in by_seed.items() if r["test"] is not None}
            metric = next(iter(by_seed.values()))["metric"]
            row = {
                "dataset": dataset, "tool": key[1], "config": key[2], "metric": metric,
                "seeds": sorted(scores), "scores": scores,
                "test": mean_std(list(scores.values())),
                "wall": mean_std([r["wall_s"] for r in by_seed.values()]),
                "diff": None, "diff_seeds": [],
            }
            if key[1] != baseline and base_scores:
                diffs = paired_differences(base_scores, scores)
                row["diff"] = mean_std(list(diffs.values()))
                row["diff_seeds"] = sorted(diffs)
            rows.append(row)
    return rows


def markdown_table(rows: Sequence[dict], baseline: str = "molsam") -> str:
    """The comparison as a Markdown table (one line per dataset, tool and config)."""
    lines = [
        f"| dataset | metric | tool | config | seeds | test (mean ± std) "
        f"| {baseline} − this (paired) | wall s/run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        diff = ("" if row["diff"] is None else
                f"{show(*row['diff'], signed=True)} (n={len(row['diff_seeds'])})")
        wall_mean, _ = row["wall"]
        lines.append(
            f"| {row['dataset']} | {METRIC_LABEL.get(row['metric'], row['metric'])} "
            f"| {row['tool']} | {row['config']} | {len(row['seeds'])} | {show(*row['test'])} "
            f"| {diff} | {'-' if wall_mean is None else f'{wall_mean:.0f}'} |"
        )
    lines.append("")
    lines.append(
        f"std: sample standard deviation over seeds (none shown for one seed). Paired: per seed, "
        f"{baseline} minus that row, over the seeds both have; positive favours {baseline} for "
        "ROC-AUC, negative for RMSE. Wall: the whole command, start-up included, mean per run.")
    return "\n".join(lines)


# --------------------------------------------------------------------------- chemprop venv


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def venv_versions(venv: Path) -> dict[str, str] | None:
    """{chemprop, torch} versions installed in `venv`, None if chemprop does not import."""
    python = venv_python(venv)
    if not python.exists():
        return None
    probe = subprocess.run(
        [str(python), "-c",
         "import json, chemprop, torch; "
         "print(json.dumps({'chemprop': chemprop.__version__, 'torch': torch.__version__}))"],
        capture_output=True, text=True)
    if probe.returncode != 0:
        return None
    return json.loads(probe.stdout.strip().splitlines()[-1])


def ensure_venv(venv: Path, version: str, torch_spec: str, python: str,
                pip_args: Sequence[str]) -> dict[str, str]:
    """The chemprop venv, created and installed when it is missing or holds another chemprop."""
    found = venv_versions(venv)
    if found is not None and found["chemprop"] == version:
        return found
    if not venv_python(venv).exists():
        print(f"== creating {venv} ({python} -m venv)", flush=True)
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
    command = [str(venv_python(venv)), "-m", "pip", "install", f"chemprop=={version}",
               torch_spec, *pip_args]
    print("== " + " ".join(command), flush=True)
    subprocess.run(command, check=True)
    found = venv_versions(venv)
    if found is None or found["chemprop"] != version:
        raise SystemExit(f"{venv}: chemprop {version} did not install ({found})")
    return found


# --------------------------------------------------------------------------- molsam side


@dataclass
class Prepared:
    """One dataset as molsam featurizes and splits it, and its chemprop input files."""

    dataset: str
    task: str
    metric: str
    target_names: list[str]
    smiles: list[str]
    y: object  # float [N, T], NaN where missing
    split: dict[str, list[int]]
    csv_path: Path
    splits_path: Path
    split_sha: str


def molsam_overrides(dataset: str, seed: int | None, data_paths: dict[str, str],
                     sets: Sequence[str], threads: int) -> list[str]:
    """The --set list of a molsam run: the seed, threads, a data path override, the user's."""
    out = [] if seed is None else [f"train.seeds=[{seed}]"]
    out.append(f"train.threads={threads}")
    if dataset in data_paths:
        out.append(f"data.path={data_paths[dataset]}")
    return out + list(sets)


def prepare(dataset: str, recipe_path: Path, overrides: Sequence[str], work: Path) -> Prepared:
    """Featurize and split like `molsam train` does, write chemprop's CSV and splits file."""
    import numpy as np

    from molsam.config import apply_overrides, load_recipe_dict, recipe_from_dict
    from molsam.data.pipeline import split_store
    from molsam.data.read_options import ReadOptions
    from molsam.train.metrics import default_metric
    from molsam.train.run import check_task_labels, load_recipe_data

    raw = apply_overrides(load_recipe_dict(recipe_path), list(overrides))
    recipe = recipe_from_dict(raw, source=str(recipe_path), base_dir=recipe_path.parent)
    store = load_recipe_data(recipe)
    task = recipe.data.task or store.task
    if task not in ("classification", "regression"):
        raise SystemExit(f"{dataset}: task {task!r} is not compared here")
    check_task_labels(store, task)
    s = recipe.split
    split = split_store(store, s.method, s.sizes, s.seed, column=s.column, split_file=s.file,
                        read=ReadOptions.from_recipe(recipe.data))
    parts = {name: [int(i) for i in index] for name, index in split.parts().items()}
    split_sha = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]
    folder = work / dataset / f"data-{split_sha}"
    folder.mkdir(parents=True, exist_ok=True)
    y = np.asarray(store.y, dtype=np.float64)
    csv_path = write_chemprop_csv(folder / "data.csv", list(store.smiles), y,
                                  list(store.target_names))
    splits_path = write_splits_file(folder / "splits.json", parts["train"], parts["val"],
                                    parts["test"])
    return Prepared(dataset, task, default_metric(task), list(store.target_names),
                    list(store.smiles), y, parts, csv_path, splits_path, split_sha)


def score(prepared: Prepared, predictions) -> float | None:
    """The test metric of predictions [n_test, T], by molsam's metric code."""
    from molsam.train.metrics import task_metrics

    test = prepared.split["test"]
    result = task_metrics(prepared.y[test], predictions, prepared.task, prepared.target_names,
                          names=[prepared.metric])
    return result["mean"][prepared.metric]


def check_same_split(prepared: Prepared, parts: dict[str, list[int]], who: str) -> None:
    for name in ("train", "val", "test"):
        if sorted(int(i) for i in parts.get(name, [])) != prepared.split[name]:
            raise SystemExit(f"{who}: its {name} split differs from molsam's indices")


def run_logged(command: list[str], log: Path, env: dict[str, str]) -> tuple[int, float]:
    """Run a command with its output to `log`; (return code, wall seconds)."""
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as handle:
        code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT,
                              env=env).returncode
    return code, time.perf_counter() - start


def run_molsam(prepared: Prepared, seed: int, recipe: Path, overrides: list[str], folder: Path,
               env: dict[str, str]) -> dict:
    run_dir = folder / "run"
    command = [sys.executable, "-m", "molsam", "train", str(recipe), "--out", str(run_dir)]
    for item in overrides:
        command += ["--set", item]
    code, wall = run_logged(command, folder / "molsam.log", env)
    if code != 0:
        raise SystemExit(f"molsam train failed (exit {code}); see {folder / 'molsam.log'}")
    saved = json.loads((run_dir / "splits.json").read_text())
    check_same_split(prepared, {p: saved[p]["indices"] for p in ("train", "val", "test")},
                     f"molsam run {run_dir}")
    summary = json.loads((run_dir / "summary.json").read_text())
    replicate = summary["replicates"][0]
    return {"test": replicate["test"]["mean"].get(prepared.metric), "wall_s": wall,
            "train_seconds": replicate["train_seconds"], "epochs_run": replicate["epochs_run"],
            "best_epoch": replicate["best_epoch"], "work": str(run_dir)}


def run_chemprop(prepared: Prepared, seed: int, venv: Path, featurizer: str | None,
                 epochs: int | None, extra: Sequence[str], folder: Path,
                 env: dict[str, str]) -> dict:
    out_dir = folder / "run"
    chemprop = venv / ("Scripts/chemprop.exe" if os.name == "nt" else "bin/chemprop")
    command = [str(chemprop), "train", "--data-path", str(prepared.csv_path),
               "--smiles-columns", "smiles", "--task-type", prepared.task,
               "--splits-file", str(prepared.splits_path),
               "--data-seed", str(seed), "--pytorch-seed", str(seed),
               "--output-dir", str(out_dir), "--remove-checkpoints"]
    if featurizer:
        command += ["--molecule-featurizers", featurizer]
    if epochs is not None:
        command += ["--epochs", str(epochs)]
    command += list(extra)
    log = folder / "chemprop.log"
    code, wall = run_logged(command, log, env)
    if code != 0:
        raise SystemExit(f"chemprop train failed (exit {code}); see {log}")
    used = json.loads((out_dir / "splits.json").read_text())
    check_same_split(prepared, used[0], f"chemprop run {out_dir}")
    found = sorted(out_dir.rglob("test_predictions.csv"))
    if len(found) != 1:
        raise SystemExit(f"{out_dir}: expected one test_predictions.csv, found {len(found)}")
    test_smiles = [prepared.smiles[i] for i in prepared.split["test"]]
    predictions = read_test_predictions(found[0], test_smiles, prepared.target_names)
    epochs_run = None
    logged = sorted(out_dir.rglob("trainer_logs/*/metrics.csv"))
    if logged:
        with open(logged[-1], newline="") as handle:
            seen = [int(float(r["epoch"])) for r in csv.DictReader(handle) if r.get("epoch")]
        epochs_run = max(seen) + 1 if seen else None
    return {"test": score(prepared, predictions), "wall_s": wall, "epochs_run": epochs_run,
            "chemprop_reported": parse_reported(log.read_text(errors="replace")),
            "work": str(out_dir)}


# --------------------------------------------------------------------------- the grid


def thread_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    return env


def file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), metavar="NAME",
                        help=f"datasets, each with recipes/<name>.yaml [{' '.join(DATASETS)}]")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS), metavar="SEED",
                        help="seeds, one run per tool and config each [0 1 2 3 4]")
    parser.add_argument("--out", type=Path, default=Path("runs/peers"),
                        help="results.jsonl and work/ go here [runs/peers]")
    parser.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    parser.add_argument("--recipes", type=Path, default=ROOT / "recipes",
                        help="folder of <dataset>.yaml recipes [the project's recipes/]")
    parser.add_argument("--data-path", action="append", default=[], metavar="DATASET=PATH",
                        help="read DATASET from PATH (molsam's data.path), e.g. "
                             "sider=/data/moleculenet/sider.csv (repeatable)")
    parser.add_argument("--molsam-set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra molsam --set (smoke runs: train.epochs=3); it also applies "
                             "to the featurizing and split chemprop gets")
    parser.add_argument("--chemprop-epochs", type=int, default=None,
                        help="chemprop --epochs (smoke runs only; must exceed its 2 warm-up "
                             "epochs) [chemprop's default]")
    parser.add_argument("--chemprop-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for every `chemprop train` (repeatable; "
                             "--chemprop-arg=--batch-size --chemprop-arg=32)")
    parser.add_argument("--rdkit-featurizer", default=RDKIT_FEATURIZER,
                        help=f"the descriptors config's --molecule-featurizers "
                             f"[{RDKIT_FEATURIZER}]; 'none' skips that config")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads of each run, both tools [1]")
    parser.add_argument("--venv", type=Path, default=HERE / ".chemprop-venv",
                        help="chemprop's virtual environment [benchmarks/peers/.chemprop-venv]")
    parser.add_argument("--chemprop-version", default=CHEMPROP_VERSION)
    parser.add_argument("--torch", default=None,
                        help="torch requirement for the venv [the version molsam runs on]")
    parser.add_argument("--python", default="python3",
                        help="interpreter that creates the venv [python3]")
    parser.add_argument("--pip-arg", action="append", default=[], metavar="ARG",
                        help="extra `pip install` argument for the venv (repeatable)")
    parser.add_argument("--table-only", action="store_true",
                        help="run nothing, print the table of the cells --out holds for these "
                             "flags (give the flags of the run)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.out = args.out.resolve()
    args.recipes = args.recipes.resolve()
    # A file path (not a dataset name) made absolute: molsam would read a relative one against
    # the recipe's folder.
    data_paths = {name: str(Path(path).resolve()) if Path(path).exists() else path
                  for name, path in parse_data_paths(args.data_path).items()}
    datasets = [d.casefold() for d in args.datasets]
    results_path = args.out / RESULTS
    work = args.out / "work"
    configs: list[tuple[str, str | None]] = [("default", None)]
    if args.rdkit_featurizer.casefold() != "none":
        configs.append((f"+{args.rdkit_featurizer}", args.rdkit_featurizer))

    import torch  # molsam's own torch: its version is the venv's default

    molsam_torch = torch.__version__.split("+")[0]
    from molsam import __version__ as molsam_version

    versions = {}
    if "chemprop" in args.tools and not args.table_only:
        versions = ensure_venv(args.venv, args.chemprop_version,
                               args.torch or f"torch=={molsam_torch}", args.python,
                               args.pip_arg)
        print(f"== chemprop {versions['chemprop']} on torch {versions['torch']} ({args.venv})",
              flush=True)
    elif "chemprop" in args.tools:
        versions = venv_versions(args.venv) or {}

    def settings(tool: str, dataset: str, featurizer: str | None) -> dict:
        recipe = args.recipes / f"{dataset}.yaml"
        common = {"threads": args.threads,
                  "molsam_set": molsam_overrides(dataset, None, data_paths, args.molsam_set,
                                                 args.threads),
                  "recipe_sha": file_sha(recipe) if recipe.is_file() else None}
        if tool == "molsam":
            return {**common, "molsam": molsam_version, "torch": molsam_torch}
        return {**common, "chemprop": versions.get("chemprop"), "torch": versions.get("torch"),
                "featurizer": featurizer, "epochs": args.chemprop_epochs,
                "extra": list(args.chemprop_arg)}

    plan = []  # (seed, dataset, tool, config, featurizer, settings)
    for seed in args.seeds:
        for dataset in datasets:
            if "molsam" in args.tools:
                plan.append((seed, dataset, "molsam", "recipe", None,
                             settings("molsam", dataset, None)))
            if "chemprop" in args.tools:
                for config, featurizer in configs:
                    plan.append((seed, dataset, "chemprop", config, featurizer,
                                 settings("chemprop", dataset, featurizer)))
    wanted = {(tool, config, dataset, seed, settings_id(s))
              for seed, dataset, tool, config, _, s in plan}

    if not args.table_only:
        done = {cell_key(r) for r in read_results(results_path)}
        todo = [p for p in plan if (p[2], p[3], p[1], p[0], settings_id(p[5])) not in done]
        print(f"== {len(plan) - len(todo)} of {len(plan)} cells already in {results_path}",
              flush=True)
        prepared: dict[str, Prepared] = {}
        env = thread_env(args.threads)
        for n, (seed, dataset, tool, config, featurizer, cell_settings) in enumerate(todo, 1):
            recipe = args.recipes / f"{dataset}.yaml"
            if dataset not in prepared:
                start = time.perf_counter()
                prepared[dataset] = prepare(
                    dataset, recipe,
                    molsam_overrides(dataset, None, data_paths, args.molsam_set, args.threads),
                    work)
                p = prepared[dataset]
                print(f"== {dataset}: {len(p.smiles)} molecules, {len(p.target_names)} targets, "
                      f"split {len(p.split['train'])}/{len(p.split['val'])}/"
                      f"{len(p.split['test'])} ({p.split_sha}), {p.task}, "
                      f"{time.perf_counter() - start:.0f} s", flush=True)
            p = prepared[dataset]
            folder = work / dataset / f"{tool}-{config.lstrip('+')}-{settings_id(cell_settings)}" \
                / f"seed_{seed}"
            if folder.exists():
                shutil.rmtree(folder)  # a run cut short before its result was written
            folder.mkdir(parents=True)
            print(f"[{n}/{len(todo)}] {tool} {config} {dataset} seed {seed} ...", flush=True)
            if tool == "molsam":
                outcome = run_molsam(
                    p, seed, recipe,
                    molsam_overrides(dataset, seed, data_paths, args.molsam_set, args.threads),
                    folder, env)
            else:
                outcome = run_chemprop(p, seed, args.venv, featurizer, args.chemprop_epochs,
                                       args.chemprop_arg, folder, env)
            record = {"tool": tool, "config": config, "dataset": dataset, "seed": seed,
                      "metric": p.metric, "task": p.task, "split_sha": p.split_sha,
                      "split_sizes": [len(p.split[k]) for k in ("train", "val", "test")],
                      "settings": cell_settings,
                      "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      **outcome}
            append_result(results_path, record)
            value = "-" if record["test"] is None else f"{record['test']:.4f}"
            print(f"      {p.metric} {value}, {record['wall_s']:.1f} s", flush=True)

    records = [r for r in read_results(results_path) if cell_key(r) in wanted]
    others = len(read_results(results_path)) - len(records)
    print()
    if not records:
        print(f"no results in {results_path} for these flags ({others} records with other "
              "settings, datasets or seeds: give the flags of the run)")
        return
    print(markdown_table(summary_rows(records)))
    if others:
        print(f"\n({others} records of {results_path} have other settings, datasets or seeds "
              "and are left out.)")


if __name__ == "__main__":
    main()
