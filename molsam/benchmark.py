"""Benchmark grids: datasets x optimizers x seeds, trained from recipes, compared in one table.

A suite file names the grid::

    datasets:                         # name -> recipe path, or {recipe: path, set: [overrides]}
      bbbp: ../../recipes/bbbp.yaml
      sider: {recipe: ../../recipes/sider.yaml, set: [data.path=/data/sider.csv]}
    optimizers: [adam, sam, graphsam, graphsam_r05]   # optimizer names or variant names
    variants:                         # a named optimizer setting, a column of its own (optional)
      graphsam_r05: {optimizer: graphsam, set: [optim.rho=0.05]}
    seeds: [0, 1, 2]
    set: [train.epochs=15]            # overrides for every cell (optional)
    optimizer_set: {sam: [optim.rho=0.05]}   # overrides for one optimizer's cells (optional)
    baseline: adam                    # the optimizer times are compared against (optional)
    reference: {bbbp: 0.710}          # a published number per dataset, shown beside ours (optional)
    sharpness: {rhos: [0.01, 0.05]}   # flatness of every cell's best.pt (optional; see below)

Relative recipe paths (and a relative data.path in a dataset's `set`) resolve against the suite
file's folder. Each cell is `train_recipe` of the dataset recipe with `optim.name=<optimizer>`,
`train.seeds=[seed]`, `split.seed=seed` and the suite's overrides, in its own run directory::

    OUT/cells/<dataset>/<optimizer>/seed_<s>/   (a molsam run directory: summary.json, ...)
    OUT/results.csv  OUT/results.md  OUT/results.png  OUT/cells.csv

Optimizers compete on identical data: splits are pure functions of (molecules, method, sizes,
seed), and the grid refuses overrides that would make one optimizer's data differ from another's
(`data.*`, `split.*` in `optimizer_set`). The grid is resumable: a cell with summary.json is
finished and never rerun; a cell with a last.pt continues through `resume_run`. `jobs` cells
train at once, each in its own process (one torch thread each by default); the order stays
seed-major, so an interrupted grid still holds the first seeds of every column.

With `sharpness:`, every finished cell also gets sharpness.json: `molsam.analysis.sharpness`
measured on its best.pt (training split, dropout off, seeded; keys of the mapping are passed
to `measure_checkpoint`), also resumable cell by cell.
"""

from __future__ import annotations

import csv
import difflib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from molsam.config import (
    OPTIMIZERS,
    Recipe,
    apply_overrides,
    load_recipe,
    load_recipe_dict,
    read_yaml_file,
    recipe_from_dict,
    recipe_to_dict,
)
from molsam.errors import ConfigError
from molsam.jsonio import write_json_atomic, write_text_atomic
from molsam.outputs import naming, output_folder, save_figure
from molsam.train.metrics import LOWER_IS_BETTER, mean_std

log = logging.getLogger("molsam")

SUITE_KEYS = ("datasets", "optimizers", "variants", "seeds", "set", "optimizer_set", "baseline",
              "reference", "sharpness")
DATASET_KEYS = ("recipe", "set")
VARIANT_KEYS = ("optimizer", "set")
#: options of `molsam.analysis.sharpness.measure_checkpoint` a suite may set
SHARPNESS_KEYS = ("rhos", "steps", "iters", "tol", "probes", "landscape", "batch_size", "seed")
# Keys the grid itself sets per cell: a suite override of them would silently break the grid.
GRID_KEYS = ("optim.name", "train.seeds", "split.seed")


# --------------------------------------------------------------------------- suite


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset row of the grid: its recipe file and the overrides for its cells."""

    name: str
    recipe: Path
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Suite:
    """A validated suite file (see the module docstring)."""

    datasets: tuple[DatasetEntry, ...]
    optimizers: tuple[str, ...]
    seeds: tuple[int, ...]
    overrides: tuple[str, ...] = ()
    optimizer_overrides: dict[str, tuple[str, ...]] = field(default_factory=dict)
    baseline: str | None = None
    reference: dict[str, float] = field(default_factory=dict)
    source: str = "<suite>"
    #: variant name -> (optimizer name, overrides); a plain optimizer name needs no entry.
    variants: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    sharpness: dict[str, Any] | None = None

    def algorithm(self, column: str) -> str:
        """The optimizer name behind a column of the grid (a variant or an optimizer)."""
        return self.variants[column][0] if column in self.variants else column


@dataclass(frozen=True)
class Cell:
    """One (dataset, optimizer, seed) training run; `optimizer` is a column of the grid: an
    optimizer name or a variant name."""

    dataset: str
    optimizer: str
    seed: int

    def run_dir(self, out: Path) -> Path:
        return Path(out) / "cells" / self.dataset / self.optimizer / f"seed_{self.seed}"


def _fail(key: str, message: str) -> ConfigError:
    return ConfigError(f"{key}: {message}")


def _check_keys(key: str, raw: dict, valid: tuple[str, ...]) -> None:
    for name in raw:
        if name not in valid:
            close = difflib.get_close_matches(str(name), valid, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(valid)}"
            where = f"{key}.{name}" if key else str(name)
            raise _fail(where, f"unknown key ({hint})")


def _override_list(key: str, value: Any, *, forbidden: tuple[str, ...] = GRID_KEYS) -> tuple[str, ...]:
    """A list of KEY=VALUE strings; keys in `forbidden` (exact or as a prefix section) refused."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise _fail(key, f"expected a list of KEY=VALUE overrides, got {value!r}")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or "=" not in item:
            raise _fail(f"{key}[{i}]", f"expected KEY=VALUE (e.g. train.epochs=15), got {item!r}")
        name = item.partition("=")[0].strip()
        for bad in forbidden:
            if name == bad or (not bad.count(".") and name.startswith(bad + ".")):
                raise _fail(f"{key}[{i}]", f"{name} cannot be overridden here "
                            f"(the grid sets {', '.join(GRID_KEYS)}; optimizers share data and split)")
        out.append(item)
    return tuple(out)


def suite_from_dict(raw: Any, source: str = "<suite>", *, base_dir: str | Path = ".") -> Suite:
    """Validate a suite mapping (as parsed from YAML).

    Every override is also checked against the recipe schema at once (via `build_cell_recipe`
    on the first seed), so a typo fails before hours of training, not in the last cell.

    Raises:
        ConfigError: one line naming the suite key, the value and the valid choices.
    """
    base = Path(base_dir)
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a suite must be a mapping with datasets, optimizers, seeds")
    _check_keys("", raw, SUITE_KEYS)
    for required in ("datasets", "optimizers", "seeds"):
        if raw.get(required) in (None, [], {}):
            raise _fail(required, "required key is missing or empty")

    if not isinstance(raw["datasets"], dict):
        raise _fail("datasets", f"expected a mapping name -> recipe path, got {raw['datasets']!r}")
    datasets = []
    for name, spec in raw["datasets"].items():
        key = f"datasets.{name}"
        if not isinstance(name, str) or not name or "/" in name:
            raise _fail(key, "a dataset name must be a non-empty string without '/'")
        if isinstance(spec, str):
            spec = {"recipe": spec}
        if not isinstance(spec, dict):
            raise _fail(key, f"expected a recipe path or {{recipe: path, set: [...]}}, got {spec!r}")
        _check_keys(key, spec, DATASET_KEYS)
        if not isinstance(spec.get("recipe"), str):
            raise _fail(f"{key}.recipe", f"expected a recipe file path, got {spec.get('recipe')!r}")
        recipe = Path(spec["recipe"])
        recipe = recipe if recipe.is_absolute() else base / recipe
        if not recipe.is_file():
            raise _fail(f"{key}.recipe", f"recipe file not found: {recipe}")
        overrides = _resolve_data_paths(_override_list(f"{key}.set", spec.get("set")), base)
        datasets.append(DatasetEntry(name, recipe, overrides))

    variants = _variants(raw.get("variants"))
    optimizers = raw["optimizers"]
    if isinstance(optimizers, str):
        optimizers = [optimizers]
    if not isinstance(optimizers, list):
        raise _fail("optimizers", f"expected a list, got {optimizers!r}")
    for i, name in enumerate(optimizers):
        if name not in OPTIMIZERS and name not in variants:
            named = f" or a variant ({', '.join(variants)})" if variants else ""
            raise _fail(f"optimizers[{i}]",
                        f"{name!r} is not one of {', '.join(OPTIMIZERS)}{named}")
    if len(set(optimizers)) != len(optimizers):
        raise _fail("optimizers", f"duplicate entries in {optimizers}")

    seeds = raw["seeds"]
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, list):
        raise _fail("seeds", f"expected a list of integers, got {seeds!r}")
    for i, seed in enumerate(seeds):
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise _fail(f"seeds[{i}]", f"expected an integer >= 0, got {seed!r}")
    if len(set(seeds)) != len(seeds):
        raise _fail("seeds", f"duplicate entries in {seeds}")

    per_optimizer = raw.get("optimizer_set") or {}
    if not isinstance(per_optimizer, dict):
        raise _fail("optimizer_set", f"expected a mapping optimizer -> [overrides], got {per_optimizer!r}")
    optimizer_overrides = {}
    for name, items in per_optimizer.items():
        if name not in optimizers:
            raise _fail(f"optimizer_set.{name}", f"not in optimizers ({', '.join(optimizers)})")
        optimizer_overrides[name] = _override_list(
            f"optimizer_set.{name}", items, forbidden=GRID_KEYS + ("data", "split")
        )

    baseline = raw.get("baseline")
    if baseline is None:
        baseline = "adam" if "adam" in optimizers else optimizers[0]
    elif baseline not in optimizers:
        raise _fail("baseline", f"{baseline!r} is not one of the suite's optimizers "
                    f"({', '.join(optimizers)})")

    reference = raw.get("reference") or {}
    if not isinstance(reference, dict):
        raise _fail("reference", f"expected a mapping dataset -> number, got {reference!r}")
    names = [d.name for d in datasets]
    for name, value in reference.items():
        if name not in names:
            raise _fail(f"reference.{name}", f"not one of the suite's datasets ({', '.join(names)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(f"reference.{name}", f"expected a number, got {value!r}")

    for name in variants:
        if name not in optimizers:
            raise _fail(f"variants.{name}", f"not in optimizers ({', '.join(optimizers)})")

    suite = Suite(
        datasets=tuple(datasets), optimizers=tuple(optimizers), seeds=tuple(seeds),
        overrides=_override_list("set", raw.get("set")), optimizer_overrides=optimizer_overrides,
        baseline=baseline, reference={k: float(v) for k, v in reference.items()}, source=source,
        variants=variants, sharpness=_sharpness_options(raw.get("sharpness")),
    )
    for entry in suite.datasets:  # validate every override now (cheap: no data is read)
        for optimizer in suite.optimizers:
            build_cell_recipe(suite, Cell(entry.name, optimizer, suite.seeds[0]))
    return suite


def _variants(raw: Any) -> dict[str, tuple[str, tuple[str, ...]]]:
    """`variants:` -> {name: (optimizer, overrides)}; a variant may not share a name with an
    optimizer (a column name must say which setting it is)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _fail("variants", f"expected a mapping name -> {{optimizer, set}}, got {raw!r}")
    out = {}
    for name, spec in raw.items():
        key = f"variants.{name}"
        if not isinstance(name, str) or not name or "/" in name or name in OPTIMIZERS:
            raise _fail(key, "a variant name must be a non-empty string without '/' that is not "
                        "an optimizer name")
        if not isinstance(spec, dict):
            raise _fail(key, f"expected {{optimizer: NAME, set: [...]}}, got {spec!r}")
        _check_keys(key, spec, VARIANT_KEYS)
        if spec.get("optimizer") not in OPTIMIZERS:
            raise _fail(f"{key}.optimizer",
                        f"{spec.get('optimizer')!r} is not one of {', '.join(OPTIMIZERS)}")
        overrides = _override_list(f"{key}.set", spec.get("set"),
                                   forbidden=GRID_KEYS + ("data", "split"))
        out[name] = (spec["optimizer"], overrides)
    return out


def _sharpness_options(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _fail("sharpness", f"expected a mapping of options ({', '.join(SHARPNESS_KEYS)}), "
                    f"got {raw!r}")
    _check_keys("sharpness", raw, SHARPNESS_KEYS)
    return dict(raw)


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite YAML file (relative paths resolve against its folder)."""
    path = Path(path)
    return suite_from_dict(read_yaml_file(path, "suite"), str(path), base_dir=path.parent)


def _resolve_data_paths(overrides: tuple[str, ...], base: Path) -> tuple[str, ...]:
    # A data.path written in the suite is relative to the suite file, not to the recipe; a bare
    # dataset name (no such file) is left alone.
    out = []
    for item in overrides:
        key, _, value = item.partition("=")
        value = value.strip()
        if key.strip() == "data.path" and value and not os.path.isabs(value) and (base / value).exists():
            item = f"data.path={(base / value).resolve()}"
        out.append(item)
    return tuple(out)


def cells(suite: Suite) -> list[Cell]:
    """The grid in training order: seed-major, so an unfinished grid still holds every dataset
    and optimizer for its first seeds (comparable rows) rather than all seeds of a few."""
    return [Cell(d.name, o, s) for s in suite.seeds for d in suite.datasets for o in suite.optimizers]


def build_cell_recipe(suite: Suite, cell: Cell) -> Recipe:
    """The resolved recipe of one cell: dataset recipe + dataset set + suite set + optimizer set,
    then the grid's own keys (optimizer, seed, split seed)."""
    entry = next(d for d in suite.datasets if d.name == cell.dataset)
    variant = suite.variants.get(cell.optimizer, (cell.optimizer, ()))[1]
    overrides = [
        *entry.overrides, *suite.overrides, *variant,
        *suite.optimizer_overrides.get(cell.optimizer, ()),
        f"optim.name={suite.algorithm(cell.optimizer)}", f"train.seeds=[{cell.seed}]",
        f"split.seed={cell.seed}",
    ]
    try:
        raw = apply_overrides(load_recipe_dict(entry.recipe), overrides)
        return recipe_from_dict(raw, str(entry.recipe), base_dir=entry.recipe.parent)
    except ConfigError as error:
        raise ConfigError(f"{suite.source}: dataset {cell.dataset}, optimizer {cell.optimizer}: "
                          f"{error}") from None


# --------------------------------------------------------------------------- running


def run_benchmark(
    suite: Suite,
    out_dir: str | Path,
    *,
    jobs: int = 1,
    on_cell: Callable[[dict], None] | None = None,
    on_progress: Callable[[dict], None] | None = None,
) -> dict:
    """Train every unfinished cell of the grid, then write the results table and plot.

    Args:
        suite: the grid (`load_suite`).
        out_dir: the benchmark folder; rerunning on the same folder resumes the grid.
        jobs: cells trained at once, each in a process of its own (1: in this process).
        on_cell: called with {"cell", "index", "total", "status", "summary"?, "wall_seconds"?},
            status one of "done" (finished before), "start", "resume", "finished".
        on_progress: passed to `train_recipe` (epoch progress of the cell in training; only
            with jobs=1, worker processes report per cell).

    Each trained cell also gets benchmark_cell.json with the wall seconds of the call that
    finished it (for a resumed cell only the resumed part: its "resumed" flag says so).

    Returns:
        `collect_results` of the finished grid.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"--jobs: expected an integer >= 1, got {jobs!r}")
    out = output_folder(out_dir, "--out")  # read-only, not creatable: one line, before training
    report = on_cell or (lambda info: None)
    grid = cells(suite)
    pending = []
    for index, cell in enumerate(grid):
        run_dir = cell.run_dir(out)
        recipe = build_cell_recipe(suite, cell)
        info = {"cell": cell, "index": index, "total": len(grid), "run_dir": run_dir}
        if (run_dir / "summary.json").is_file():
            _check_same_recipe(run_dir, recipe, cell)
            report({**info, "status": "done"})
            _measure_sharpness(suite, cell, out)  # a grid given sharpness: later catches up
            continue
        partial = run_dir.is_dir() and any(run_dir.glob("seed_*/last.pt"))
        if partial:
            _check_same_recipe(run_dir, recipe, cell)
        pending.append({**info, "status": "resume" if partial else "start"})

    if jobs == 1:
        for info in pending:
            report(info)
            result = _run_cell(suite, info["cell"], out, on_progress)
            report({**info, **result, "status": "finished"})
    else:
        _run_parallel(suite, out, pending, jobs, report)
    return write_results(suite, out)


def _run_cell(
    suite: Suite, cell: Cell, out: Path, on_progress: Callable[[dict], None] | None = None
) -> dict:
    """Train (or resume) one cell, write benchmark_cell.json, measure its sharpness if asked."""
    from molsam.train.run import resume_run, train_recipe

    run_dir = cell.run_dir(out)
    partial = run_dir.is_dir() and any(run_dir.glob("seed_*/last.pt"))
    started = time.perf_counter()
    if partial:
        summary = resume_run(run_dir, on_progress=on_progress)
    else:
        summary = train_recipe(build_cell_recipe(suite, cell), run_dir, on_progress=on_progress)
    wall = time.perf_counter() - started
    write_json_atomic(run_dir / "benchmark_cell.json", {
        "dataset": cell.dataset, "optimizer": cell.optimizer, "seed": cell.seed,
        "wall_seconds": wall, "resumed": partial,
    })
    _measure_sharpness(suite, cell, out)
    return {"summary": summary, "wall_seconds": wall}


def _run_parallel(suite: Suite, out: Path, pending: list[dict], jobs: int,
                  report: Callable[[dict], None]) -> None:
    """`jobs` worker processes (spawned: no forked torch state), cells handed out seed-major."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    queue = list(pending)
    running = {}
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_exit_with_parent, initargs=(os.getpid(),)) as pool:
        while queue or running:
            while queue and len(running) < jobs:
                info = queue.pop(0)
                report(info)
                running[pool.submit(_run_cell, suite, info["cell"], out)] = info
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                info = running.pop(future)
                report({**info, **future.result(), "status": "finished"})


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: end this worker when the benchmark process is gone.

    A pool worker outlives a parent killed by a signal and would go on training its cell
    while a rerun of the grid resumes the same cell: two writers in one run directory. A daemon
    thread polls the parent's pid (portable, unlike Linux's PR_SET_PDEATHSIG).
    """
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(2.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def _measure_sharpness(suite: Suite, cell: Cell, out: Path) -> None:
    """sharpness.json of a finished cell's best.pt, when the suite asks and it is missing."""
    run_dir = cell.run_dir(out)
    path = run_dir / "sharpness.json"
    if suite.sharpness is None or path.is_file() or not (run_dir / "summary.json").is_file():
        return
    from molsam.analysis.sharpness import measure_checkpoint

    options = {k: v for k, v in suite.sharpness.items() if k != "rhos"}
    if "rhos" in suite.sharpness:
        options["rhos"] = tuple(suite.sharpness["rhos"])
    options.setdefault("landscape", False)
    result = measure_checkpoint(run_dir / f"seed_{cell.seed}" / "best.pt", **options)
    write_json_atomic(path, result)


def _check_same_recipe(run_dir: Path, recipe: Recipe, cell: Cell) -> None:
    """Refuse to mix a cell trained under another recipe into this grid's table."""
    saved_path = run_dir / "recipe.yaml"
    if not saved_path.is_file():
        return
    saved = recipe_to_dict(load_recipe(saved_path))
    wanted = recipe_to_dict(recipe)
    if saved != wanted:
        diff = sorted(
            f"{section}.{key}" for section in wanted for key in wanted[section]
            if saved.get(section, {}).get(key) != wanted[section][key]
        )
        raise ConfigError(
            f"{run_dir}: cell {cell.dataset}/{cell.optimizer}/seed {cell.seed} was trained with a "
            f"different recipe ({', '.join(diff)} differ); use another --out or delete the cell"
        )


# --------------------------------------------------------------------------- results


def _cell_record(suite: Suite, cell: Cell, out: Path) -> dict | None:
    run_dir = cell.run_dir(out)
    path = run_dir / "summary.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    metric = summary["metric"]
    replicate = summary["replicates"][0]
    timing_path = run_dir / "benchmark_cell.json"
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    return {
        "dataset": cell.dataset, "optimizer": cell.optimizer, "seed": cell.seed,
        "metric": metric,
        "test": (replicate["test"].get("mean") or {}).get(metric),
        "val": (replicate["val"].get("mean") or {}).get(metric),
        "best_epoch": replicate["best_epoch"], "epochs_run": replicate["epochs_run"],
        "train_seconds": replicate["train_seconds"], "graphs_per_s": replicate["graphs_per_s"],
        "wall_seconds": timing.get("wall_seconds"), "resumed": timing.get("resumed"),
        **_cosine_record(run_dir / f"seed_{cell.seed}" / "metrics.csv"),
        **_sharpness_record(run_dir / "sharpness.json"),
    }


def _sharpness_record(path: Path) -> dict:
    """Flatness of the cell's best.pt (sharpness.json): top Hessian eigenvalue, Hutchinson
    trace and rho-sharpness per measured rho (`sharpness_rho<r>`); empty when not measured."""
    if not path.is_file():
        return {}
    measured = json.loads(path.read_text())
    out = {"top_eigenvalue": (measured.get("top_eigenvalue") or {}).get("eigenvalue"),
           "hessian_trace": (measured.get("trace") or {}).get("trace")}
    for entry in measured.get("rho_sharpness") or []:
        out[f"sharpness_rho{entry['rho']:g}"] = entry["sharpness"]
    return out


def _flatness_summary(suite: Suite, records: list[dict]) -> dict:
    """Per (dataset, optimizer): the mean over seeds of every flatness column, except the
    smallest cosine, which stays the smallest."""
    out = {}
    for column in _flatness_columns(suite):
        values = [r[column] for r in records if r.get(column) is not None]
        if column == "sam_cos_min":
            out[column] = min(values) if values else None
        else:
            out[f"{column}_mean"] = mean_std(values)[0]
    return out


def _summary_column(column: str) -> str:
    return column if column == "sam_cos_min" else f"{column}_mean"


def _flatness_columns(suite: Suite) -> list[str]:
    """cells.csv / results.csv columns of the flatness measurements this suite asks for."""
    columns = ["sam_cos_mean", "sam_cos_min"]
    if suite.sharpness is not None:
        from molsam.analysis.sharpness import DEFAULT_RHOS

        rhos = suite.sharpness.get("rhos", DEFAULT_RHOS)
        columns += ["top_eigenvalue", "hessian_trace", *(f"sharpness_rho{r:g}" for r in rhos)]
    return columns


def _cosine_record(metrics_csv: Path) -> dict:
    """GraphSAM's SAM-direction diagnostic over the whole run (train.log_sam_cosine): the mean
    of the per-epoch means, the smallest per-step cosine; empty for cells without it."""
    if not metrics_csv.is_file():
        return {}
    with open(metrics_csv, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("sam_cos_mean")]
    if not rows:
        return {}
    return {"sam_cos_mean": mean_std([float(r["sam_cos_mean"]) for r in rows])[0],
            "sam_cos_min": min(float(r["sam_cos_min"]) for r in rows)}


def collect_results(suite: Suite, out_dir: str | Path) -> dict:
    """Read every finished cell; aggregate per (dataset, optimizer). Unfinished cells are listed,
    not guessed. Returns {"cells": [...], "rows": [...], "missing": [...], "baseline": name}."""
    out = Path(out_dir)
    records, missing = [], []
    for cell in cells(suite):
        record = _cell_record(suite, cell, out)
        if record is None:
            missing.append(cell)
        else:
            records.append(record)
    rows = []
    for entry in suite.datasets:
        # Seconds per epoch of the baseline, for the cost ratio (per epoch, because early
        # stopping makes runs of different optimizers last different numbers of epochs).
        baseline_rate = _rate([r for r in records if r["dataset"] == entry.name
                               and r["optimizer"] == suite.baseline])
        for optimizer in suite.optimizers:
            mine = [r for r in records if r["dataset"] == entry.name and r["optimizer"] == optimizer]
            test_mean, test_std, n = mean_std([r["test"] for r in mine])
            val_mean, val_std, _ = mean_std([r["val"] for r in mine])
            rate = _rate(mine)
            rows.append({
                "dataset": entry.name, "optimizer": optimizer,
                "metric": mine[0]["metric"] if mine else None,
                "n": n, "seeds_planned": len(suite.seeds),
                "test_mean": test_mean, "test_std": test_std,
                "val_mean": val_mean, "val_std": val_std,
                "epochs_mean": mean_std([r["epochs_run"] for r in mine])[0],
                "graphs_per_s": mean_std([r["graphs_per_s"] for r in mine])[0],
                "train_seconds_per_run": mean_std([r["train_seconds"] for r in mine])[0],
                "wall_seconds_per_run": mean_std([r["wall_seconds"] for r in mine])[0],
                "epoch_time_vs_baseline": (rate / baseline_rate
                                           if rate is not None and baseline_rate else None),
                "reference": suite.reference.get(entry.name),
                **_flatness_summary(suite, mine),
            })
    return {"cells": records, "rows": rows, "missing": missing, "baseline": suite.baseline}


def _rate(records: list[dict]) -> float | None:
    """Training seconds per epoch, pooled over replicates."""
    seconds = sum(r["train_seconds"] for r in records)
    epochs = sum(r["epochs_run"] for r in records)
    return seconds / epochs if epochs else None


def write_results(suite: Suite, out_dir: str | Path) -> dict:
    """Write results.csv, cells.csv, results.md and results.png from the finished cells."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = collect_results(suite, out)
    _write_csv(out / "cells.csv", results["cells"], [
        "dataset", "optimizer", "seed", "metric", "test", "val", "best_epoch", "epochs_run",
        "train_seconds", "graphs_per_s", "wall_seconds", "resumed", *_flatness_columns(suite)])
    _write_csv(out / "results.csv", results["rows"], [
        "dataset", "optimizer", "metric", "n", "seeds_planned", "test_mean", "test_std",
        "val_mean", "val_std", "epochs_mean", "graphs_per_s", "train_seconds_per_run",
        "wall_seconds_per_run", "epoch_time_vs_baseline", "reference",
        *map(_summary_column, _flatness_columns(suite))])
    write_text_atomic(out / "results.md", results_markdown(suite, results))
    plot_results(suite, results, out / "results.png")
    return results


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    with naming(path, temp):  # a full disk: an OSError naming the table
        with open(temp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in columns})
        os.replace(temp, path)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def results_markdown(suite: Suite, results: dict) -> str:
    """Two Markdown tables: test metric per dataset x optimizer (best mean in bold), and the
    per-row detail with throughput and time against the baseline."""
    rows = results["rows"]
    optimizers = list(suite.optimizers)
    has_reference = bool(suite.reference)
    lines = ["| dataset | metric | " + " | ".join(optimizers)
             + (" | reference |" if has_reference else " |"),
             "|---|---|" + "---|" * (len(optimizers) + has_reference)]
    for entry in suite.datasets:
        mine = {r["optimizer"]: r for r in rows if r["dataset"] == entry.name}
        metric = next((r["metric"] for r in mine.values() if r["metric"]), None)
        means = [mine[o]["test_mean"] for o in optimizers if mine[o]["test_mean"] is not None]
        best = None
        if means and metric:
            best = min(means) if metric in LOWER_IS_BETTER else max(means)
        cells_text = []
        for o in optimizers:
            r = mine[o]
            if r["test_mean"] is None:
                cells_text.append("not run")
                continue
            # one seed has no spread to show
            text = (f"{r['test_mean']:.3f}" if r["n"] == 1
                    else f"{r['test_mean']:.3f} ± {r['test_std']:.3f}")
            if r["n"] < r["seeds_planned"]:
                text += f" (n={r['n']})"
            cells_text.append(f"**{text}**" if r["test_mean"] == best and len(means) > 1 else text)
        arrow = "" if metric is None else (" ↓" if metric in LOWER_IS_BETTER else " ↑")
        line = f"| {entry.name} | {metric or '-'}{arrow} | " + " | ".join(cells_text)
        if has_reference:
            line += f" | {_fmt(suite.reference.get(entry.name))}"
        lines.append(line + " |")
    header = ("| dataset | optimizer | n | test | val | epochs | train graphs/s | train s/run "
              f"| wall s/run | s/epoch vs {results['baseline']} |")
    lines += ["", header, "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["n"] == 0:
            lines.append(f"| {r['dataset']} | {r['optimizer']} | 0 | not run | | | | | | |")
            continue
        spread = "" if r["n"] == 1 else f" ± {_fmt(r['test_std'])}"
        lines.append(
            f"| {r['dataset']} | {r['optimizer']} | {r['n']} | {_fmt(r['test_mean'])}{spread} | "
            f"{_fmt(r['val_mean'])} | {_fmt(r['epochs_mean'], 1)} | "
            f"{_fmt(r['graphs_per_s'], 1)} | {_fmt(r['train_seconds_per_run'], 0)} | "
            f"{_fmt(r['wall_seconds_per_run'], 0)} | {_fmt(r['epoch_time_vs_baseline'], 2)}x |"
        )
    lines += _flatness_markdown(suite, rows)
    missing = results["missing"]
    if missing:
        lines += ["", f"Not run ({len(missing)} cells): " + ", ".join(
            f"{c.dataset}/{c.optimizer}/seed {c.seed}" for c in missing)]
    return "\n".join(lines) + "\n"


def _flatness_markdown(suite: Suite, rows: list[dict]) -> list[str]:
    """A third table, when any cell has them: validation metric and flatness per row (mean over
    seeds; the cosine is GraphSAM's estimate against the exact SAM direction)."""
    columns = [_summary_column(c) for c in _flatness_columns(suite)]
    if not any(r.get(c) is not None for r in rows for c in columns):
        return []
    header = ["dataset", "optimizer", "n", "val", "test", *columns]
    lines = ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        values = [r["dataset"], r["optimizer"], str(r["n"]), _fmt(r["val_mean"]),
                  _fmt(r["test_mean"]), *(_fmt(r.get(c), 4) for c in columns)]
        lines.append("| " + " | ".join(values) + " |")
    return lines


def plot_results(suite: Suite, results: dict, out: str | Path) -> Path:
    """Test metric against training seconds per run, one panel per dataset, one colour per
    optimizer: seeds as small dots, mean +- std as a large marker with error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(suite.datasets)
    columns = min(3, n)
    rows_n = math.ceil(n / columns)
    figure, axes = plt.subplots(rows_n, columns, figsize=(4.2 * columns, 3.4 * rows_n),
                                squeeze=False, constrained_layout=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, entry in enumerate(suite.datasets):
        axis = axes[k // columns][k % columns]
        metric = None
        for j, optimizer in enumerate(suite.optimizers):
            colour = colours[j % len(colours)]
            mine = [r for r in results["cells"]
                    if r["dataset"] == entry.name and r["optimizer"] == optimizer
                    and r["test"] is not None]
            if not mine:
                continue
            metric = mine[0]["metric"]
            xs = [r["train_seconds"] for r in mine]
            ys = [r["test"] for r in mine]
            axis.scatter(xs, ys, color=colour, s=12, alpha=0.5)
            x_mean, x_std, _ = mean_std(xs)
            y_mean, y_std, _ = mean_std(ys)
            axis.errorbar([x_mean], [y_mean], xerr=[x_std], yerr=[y_std], color=colour,
                          marker="o", markersize=7, capsize=3, label=optimizer)
        reference = suite.reference.get(entry.name)
        if reference is not None:
            axis.axhline(reference, color="grey", linestyle=":", label="reference")
        better = "" if metric is None else (" (lower is better)" if metric in LOWER_IS_BETTER
                                            else " (higher is better)")
        axis.set(title=entry.name, xlabel="training seconds per run",
                 ylabel=f"test {metric or 'metric'}{better}")
        if axis.collections or axis.lines:
            axis.legend(fontsize="small")
        else:
            axis.text(0.5, 0.5, "not run", ha="center", va="center", transform=axis.transAxes)
    for k in range(n, rows_n * columns):
        axes[k // columns][k % columns].set_visible(False)
    try:
        save_figure(figure, out, dpi=100)  # atomic; a full disk: an OSError naming the PNG
    finally:
        plt.close(figure)
    return Path(out)


__all__ = [
    "Cell", "DatasetEntry", "Suite", "build_cell_recipe", "cells",
    "collect_results", "load_suite", "plot_results", "results_markdown", "run_benchmark",
    "suite_from_dict", "write_results",
]
