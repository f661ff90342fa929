"""The targets of issue 23 (uncertainty, calibration, domain) on the six paper datasets.

What it trains (resumable: a run whose summary.json holds every asked seed is kept, a run with
a recipe.yaml but no summary is continued with molsam.train.run.resume_run, anything else is
trained with train_recipe):
- per dataset, `<out>/<dataset>/mse`: the shipped recipe (recipes/<dataset>.yaml, scaffold
  split 80/10/10) with `train.seeds=[SEEDS]`; every replicate's best.pt gets its own
  calibration (fitted on validation) and, with several seeds, the ensemble's;
- for esol and lipo also `<out>/<dataset>/mve`: the same with `train.loss=mve`.

What it measures, on each run's saved test split, with molsam's own code (molsam.evaluate's
evaluate, molsam.predict's predict_smiles with PredictOptions, molsam.uncertainty.metrics):
1. esol, lipo: coverage and mean width of each seed's stored 90% split-conformal interval
   (mean ± std over seeds), beside the width the 5-seed ensemble's z-scaled sigma needs to
   reach the same test coverage (mu ± k sigma', k the coverage quantile of |y - mu| / sigma'
   on test: an oracle width, the best any Gaussian interval of that sigma can do) and its own
   nominal 90% Gaussian interval (mu ± 1.645 sigma'). Target: mean coverage within
   COVERAGE_TOLERANCE of 0.90.
2. bbbp, clintox, sider, tox21: test ECE (10 equal-width bins, mean over tasks) of each seed
   before and after its stored calibration (temperature scaling, the one predict applies; the
   isotonic fit is shown beside). Target: mean after <= half of mean before.
3. esol, lipo: the ensemble of the seeds (`--uncertainty ensemble`, z-scaled spread), MC
   dropout (`--uncertainty dropout`, `--samples` passes, one model per seed; raw sigma and
   sigma z-scaled on the validation split with molsam.uncertainty.calibration
   .fit_sigma_scaling) and MVE (`--uncertainty mve`, one model per seed, z-scaled): Spearman
   (|error|, sigma), Gaussian NLL, miscalibration area, and the cost in seconds (training of
   the models used, from summary.json; predicting the test split, featurization included,
   plus the validation split for the z-scaled dropout). Target: best Spearman > 0.2.
4. esol, lipo: test absolute error in the lowest and the highest tercile of Tanimoto
   similarity to the nearest training molecule (evaluate's by_similarity), per seed and for
   the ensemble. Target: lowest / highest >= 1.3 (mean over seeds).

It prints Markdown tables, each target marked met / not met, and writes everything to
`<out>/uncertainty_study.json`.

    # the full study (5 seeds, shipped epochs; hours of CPU)
    MOLSAM_DATA_DIR=/work/shared/data/moleculenet/raw nice -n 19 \\
        python benchmarks/uncertainty_study.py \\
        --data-path sider=/work/shared/data/moleculenet/sider.csv --out runs/uncertainty-study

    # a smoke run
    MOLSAM_DATA_DIR=/work/shared/data/moleculenet/raw nice -n 19 \\
        python benchmarks/uncertainty_study.py --datasets esol bbbp --seeds 0 1 --epochs 2 \\
        --out runs/uncertainty-smoke
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATASETS = ("bbbp", "clintox", "sider", "tox21", "esol", "lipo")
REGRESSION = ("esol", "lipo")
SEEDS = (0, 1, 2, 3, 4)
LEVEL = 0.9  # the calibration's default split-conformal level (alpha 0.1)
COVERAGE_TOLERANCE = 0.02  # the target: 90% intervals cover 88-92% of test molecules
ECE_FACTOR = 0.5
SPEARMAN_TARGET = 0.2
TERCILE_RATIO_TARGET = 1.3
RESULTS = "uncertainty_study.json"


# --------------------------------------------------------------------------- pure helpers


def parse_data_paths(items: Sequence[str]) -> dict[str, str]:
    """`--data-path NAME=PATH` items -> {name: path}."""
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--data-path {item!r}: expected DATASET=PATH")
        out[name.strip()] = path.strip()
    return out


def run_overrides(dataset: str, seeds: Sequence[int], epochs: int | None,
                  data_paths: dict[str, str], loss: str = "mse") -> list[str]:
    """The --set list of one run of the study."""
    out = [f"train.seeds=[{', '.join(str(int(s)) for s in seeds)}]"]
    if loss != "mse":
        out.append(f"train.loss={loss}")
    if epochs is not None:
        out.append(f"train.epochs={int(epochs)}")
    if dataset in data_paths:
        out.append(f"data.path={data_paths[dataset]}")
    return out


def stats(values: Sequence[float | None]) -> dict:
    """{"mean", "std" (sample, None for one value), "n", "values"} of the finite values."""
    kept = [float(v) for v in values if v is not None and math.isfinite(v)]
    return {"mean": statistics.mean(kept) if kept else None,
            "std": statistics.stdev(kept) if len(kept) > 1 else None,
            "n": len(kept), "values": [None if v is None else float(v) for v in values]}


def fmt(value: dict | float | None, digits: int = 3) -> str:
    """A stats() dict as `mean ± std`, a number as itself, None as `-`."""
    if isinstance(value, dict):
        if value.get("mean") is None:
            return "-"
        if value.get("std") is None:
            return f"{value['mean']:.{digits}f}"
        return f"{value['mean']:.{digits}f} ± {value['std']:.{digits}f}"
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "not met")


def width_at_coverage(y, mu, sigma, coverage: float) -> float:
    """Mean width of the intervals mu ± k sigma whose k is the smallest multiple covering at
    least `coverage` of the labelled rows (k = an order statistic of |y - mu| / sigma), mean over
    tasks; NaN without usable rows. y, mu, sigma: [N] or [N, T]."""
    y, mu, sigma = (np.asarray(a, dtype=np.float64) for a in (y, mu, sigma))
    if y.ndim == 1:
        y, mu, sigma = y[:, None], mu[:, None], sigma[:, None]
    widths = []
    for t in range(y.shape[1]):
        keep = ~np.isnan(y[:, t]) & np.isfinite(mu[:, t]) & np.isfinite(sigma[:, t])
        keep &= sigma[:, t] > 0
        if not keep.any():
            continue
        z = np.sort(np.abs(y[keep, t] - mu[keep, t]) / sigma[keep, t])
        rank = min(len(z), max(1, math.ceil(coverage * len(z) - 1e-9)))
        widths.append(float(np.mean(2.0 * z[rank - 1] * sigma[keep, t])))
    return float(np.mean(widths)) if widths else math.nan


def tercile_ratio(by_similarity: dict | None) -> float | None:
    """Mean error of the lowest-similarity tercile over that of the highest."""
    if not by_similarity or len(by_similarity.get("bins", [])) < 2:
        return None
    low = by_similarity["bins"][0]["mean_over_tasks"]
    high = by_similarity["bins"][-1]["mean_over_tasks"]
    if low is None or not high:
        return None
    return low / high


def seed_of(path: Path) -> int:
    """The seed of RUN/seed_<s>/best.pt."""
    return int(Path(path).parent.name.removeprefix("seed_"))


# --------------------------------------------------------------------------- training


def run_finished(folder: Path, seeds: Sequence[int]) -> bool:
    """summary.json is there and holds exactly `seeds` (another set: refuse, not mix)."""
    summary = folder / "summary.json"
    if not summary.is_file():
        return False
    held = sorted(r["seed"] for r in json.loads(summary.read_text())["replicates"])
    if held != sorted(seeds):
        raise SystemExit(f"{folder}: a finished run with seeds {held}, not {sorted(seeds)}; "
                         "choose another --out")
    return True


def train_run(dataset: str, folder: Path, overrides: list[str]) -> dict:
    """Train (or resume, or keep) one run; returns its summary."""
    from molsam.config import apply_overrides, load_recipe_dict, recipe_from_dict
    from molsam.train.run import resume_run, train_recipe

    seeds = json.loads(overrides[0].partition("=")[2])
    if run_finished(folder, seeds):
        print(f"[{dataset}] {folder}: finished, kept", flush=True)
    elif (folder / "recipe.yaml").is_file():
        print(f"[{dataset}] {folder}: resuming", flush=True)
        resume_run(folder)
    else:
        recipe_path = ROOT / "recipes" / f"{dataset}.yaml"
        raw = apply_overrides(load_recipe_dict(recipe_path), overrides)
        recipe = recipe_from_dict(raw, source=str(recipe_path), base_dir=recipe_path.parent)
        print(f"[{dataset}] training {folder} ({' '.join(overrides)})", flush=True)
        folder.parent.mkdir(parents=True, exist_ok=True)
        train_recipe(recipe, folder)
    return json.loads((folder / "summary.json").read_text())


def train_seconds(summary: dict) -> dict[int, float]:
    return {int(r["seed"]): float(r["train_seconds"]) for r in summary["replicates"]}


# --------------------------------------------------------------------------- measuring


def evaluate_run(folder: Path):
    """molsam evaluate of the run's saved test split (members and, with several, ensemble)."""
    from molsam.evaluate import evaluate

    return evaluate([folder], device="cpu")


def measure_intervals(result) -> dict:
    """(1) per-seed conformal coverage and width, ensemble z-scaled width at that coverage."""
    from molsam.uncertainty.metrics import interval_coverage, mean_interval_width

    seeds = [seed_of(p) for p, _ in result.members]
    coverage, width = [], []
    for report in result.uncertainty["members"]:
        calibrated = (report.get("calibrated") or {}).get("mean", {})
        coverage.append(calibrated.get("coverage"))
        width.append(calibrated.get("width"))
    out = {"seeds": seeds, "level": LEVEL, "coverage": stats(coverage), "width": stats(width)}
    arrays, ensemble = result.arrays, result.uncertainty.get("ensemble")
    sigma = None if ensemble is None or arrays["calibrated"] is None else arrays["calibrated"].sigma
    if sigma is not None:
        y, mu = arrays["y"], arrays["outputs"].values
        out["ensemble_width_at_coverage"] = stats(
            [width_at_coverage(y, mu, sigma, c) if c is not None else None for c in coverage])
        z = 1.6448536269514722  # Phi^-1(0.95)
        out["ensemble_gaussian_90"] = {
            "coverage": float(np.nanmean(interval_coverage(y, mu - z * sigma, mu + z * sigma))),
            "width": float(np.nanmean(mean_interval_width(y, mu - z * sigma, mu + z * sigma)))}
        own = (ensemble.get("calibrated") or {}).get("mean", {})
        out["ensemble_conformal"] = {"coverage": own.get("coverage"), "width": own.get("width")}
    mean = out["coverage"]["mean"]
    out["target"] = f"mean coverage within {COVERAGE_TOLERANCE} of {LEVEL}"
    out["met"] = None if mean is None else abs(mean - LEVEL) <= COVERAGE_TOLERANCE
    return out


def measure_ece(result) -> dict:
    """(2) per-seed test ECE before and after the stored calibration."""
    def ece(report: dict, name: str) -> float | None:
        block = report.get(name)
        return None if block is None else block["mean"].get("ece")

    reports = result.uncertainty["members"]
    out = {"seeds": [seed_of(p) for p, _ in result.members]}
    for name in ("uncalibrated", "temperature", "isotonic"):
        out[name] = stats([ece(r, name) for r in reports])
    before, after = out["uncalibrated"]["mean"], out["temperature"]["mean"]
    out["ratio"] = None if not before or after is None else after / before
    out["seeds_met"] = sum(1 for b, a in zip(out["uncalibrated"]["values"],
                                             out["temperature"]["values"])
                           if b is not None and a is not None and a <= ECE_FACTOR * b)
    out["target"] = f"mean ECE after temperature <= {ECE_FACTOR} x before"
    out["met"] = None if out["ratio"] is None else out["ratio"] <= ECE_FACTOR
    return out


def measure_similarity(result) -> dict:
    """(4) lowest / highest similarity tercile error ratio per seed and for the ensemble."""
    reports = result.uncertainty["members"]
    out = {"seeds": [seed_of(p) for p, _ in result.members],
           "ratio": stats([tercile_ratio(r.get("by_similarity")) for r in reports]),
           "bins": [r.get("by_similarity") for r in reports]}
    ensemble = result.uncertainty.get("ensemble")
    if ensemble is not None:
        out["ensemble_ratio"] = tercile_ratio(ensemble.get("by_similarity"))
        out["ensemble_bins"] = ensemble.get("by_similarity")
    mean = out["ratio"]["mean"]
    out["target"] = f"mean error ratio lowest / highest tercile >= {TERCILE_RATIO_TARGET}"
    out["met"] = None if mean is None else mean >= TERCILE_RATIO_TARGET
    return out


def split_molecules(folder: Path, split: str) -> tuple[list[str], np.ndarray]:
    """SMILES and labels of a run's saved split (evaluate's own reading of splits.json)."""
    from molsam.evaluate import labeled_molecules
    from molsam.predict import load_ensemble

    ensemble = load_ensemble([folder], "cpu")
    found = labeled_molecules(ensemble, split=split)
    return [found.store.smiles[i] for i in found.indices], found.labels


def timed_predict(models: list[Path], smiles: list[str], options) -> tuple[object, float]:
    """predict_smiles with `options`; (Predictions, seconds, loading included)."""
    from molsam.predict import load_ensemble, predict_smiles

    start = time.perf_counter()
    found = predict_smiles(load_ensemble(models, "cpu"), smiles, options=options)
    return found, time.perf_counter() - start


def sigma_scores(y: np.ndarray, found, sigma: np.ndarray | None = None) -> dict:
    """Spearman, NLL, miscalibration area (mean over tasks) of predictions and a sigma."""
    from molsam.uncertainty.metrics import regression_report

    report = regression_report(y, found.mean, found.sigma if sigma is None else sigma)
    return {k: report["mean"][k] for k in ("spearman", "nll", "miscalibration_area")}


def measure_methods(mse: Path, mve: Path, seeds: Sequence[int], samples: int,
                    mse_seconds: dict[int, float], mve_seconds: dict[int, float]) -> dict:
    """(3) ensemble vs MC dropout vs MVE on the test split: scores and cost per method."""
    from molsam.predict_uncertainty import PredictOptions
    from molsam.uncertainty.calibration import fit_sigma_scaling

    test_smiles, y_test = split_molecules(mse, "test")
    val_smiles, y_val = split_molecules(mse, "val")
    # Untimed warm-up: the first MC-dropout call pays one-time costs (seen: 28 s, then 2.6 s).
    for options, folder in ((PredictOptions(uncertainty="dropout", samples=2, domain=False), mse),
                            (PredictOptions(uncertainty="mve", domain=False), mve)):
        timed_predict([folder / f"seed_{seeds[0]}" / "best.pt"], test_smiles[:8], options)
    rows: dict[str, list[dict]] = {"ensemble": [], "dropout": [], "dropout_zscaled": [],
                                   "mve": []}
    if len(seeds) > 1:
        found, seconds = timed_predict(
            [mse / f"seed_{s}" / "best.pt" for s in seeds], test_smiles,
            PredictOptions(uncertainty="ensemble", domain=False))
        rows["ensemble"].append({**sigma_scores(y_test, found), "predict_s": seconds,
                                 "train_s": sum(mse_seconds[s] for s in seeds)})
    for s in seeds:
        model = [mse / f"seed_{s}" / "best.pt"]
        options = PredictOptions(uncertainty="dropout", samples=samples, seed=s, domain=False)
        found, seconds = timed_predict(model, test_smiles, options)
        rows["dropout"].append({**sigma_scores(y_test, found), "predict_s": seconds,
                                "train_s": mse_seconds[s]})
        val, val_seconds = timed_predict(model, val_smiles, options)
        scaled = fit_sigma_scaling(y_val, val.mean, val.sigma).apply(found.sigma)
        rows["dropout_zscaled"].append({**sigma_scores(y_test, found, scaled),
                                        "predict_s": seconds + val_seconds,
                                        "train_s": mse_seconds[s]})
        found, seconds = timed_predict([mve / f"seed_{s}" / "best.pt"], test_smiles,
                                       PredictOptions(uncertainty="mve", domain=False))
        rows["mve"].append({**sigma_scores(y_test, found), "predict_s": seconds,
                            "train_s": mve_seconds[s]})
    out = {"samples": samples, "methods": {}}
    for method, cells in rows.items():
        if cells:
            out["methods"][method] = {key: stats([c[key] for c in cells]) for key in cells[0]}
    best = max((m["spearman"]["mean"] for m in out["methods"].values()
                if m["spearman"]["mean"] is not None), default=None)
    out["best_spearman"] = best
    out["target"] = f"best mean Spearman(|error|, sigma) > {SPEARMAN_TARGET}"
    out["met"] = None if best is None else best > SPEARMAN_TARGET
    return out


# --------------------------------------------------------------------------- tables


def tables(results: dict) -> list[str]:
    """Markdown lines of the four tables."""
    lines = []
    intervals = {d: r["intervals"] for d, r in results.items() if "intervals" in r}
    if intervals:
        lines += [f"### 1. {LEVEL:.0%} split-conformal intervals (test, per seed)", "",
                  ("| dataset | coverage | width | z-ens. width at same coverage "
                   "| z-ens. 90% Gaussian cov. / width | target |"),
                  "|---|---|---|---|---|---|"]
        for d, r in intervals.items():
            g = r.get("ensemble_gaussian_90")
            gauss = "-" if g is None else f"{fmt(g['coverage'])} / {fmt(g['width'])}"
            lines.append(f"| {d} | {fmt(r['coverage'])} | {fmt(r['width'])} | "
                         f"{fmt(r.get('ensemble_width_at_coverage'))} | {gauss} | "
                         f"{verdict(r['met'])} |")
        lines += ["", f"Target: {next(iter(intervals.values()))['target']}.", ""]
    ece = {d: r["ece"] for d, r in results.items() if "ece" in r}
    if ece:
        lines += ["### 2. Test ECE before and after calibration (per seed)", "",
                  ("| dataset | before | temperature | isotonic | after / before "
                   "| seeds met | target |"), "|---|---|---|---|---|---|---|"]
        for d, r in ece.items():
            lines.append(f"| {d} | {fmt(r['uncalibrated'])} | {fmt(r['temperature'])} | "
                         f"{fmt(r['isotonic'])} | {fmt(r['ratio'], 2)} | "
                         f"{r['seeds_met']}/{r['uncalibrated']['n']} | {verdict(r['met'])} |")
        lines += ["", f"Target: {next(iter(ece.values()))['target']}.", ""]
    methods = {d: r["methods"] for d, r in results.items() if "methods" in r}
    if methods:
        lines += ["### 3. Uncertainty methods (test)", "",
                  "| dataset | method | Spearman | NLL | miscal. area | train s | predict s |",
                  "|---|---|---|---|---|---|---|"]
        for d, r in methods.items():
            for name, m in r["methods"].items():
                lines.append(f"| {d} | {name} | {fmt(m['spearman'])} | {fmt(m['nll'])} | "
                             f"{fmt(m['miscalibration_area'])} | {fmt(m['train_s'], 1)} | "
                             f"{fmt(m['predict_s'], 1)} |")
        lines += [""] + [f"{d}: best Spearman {fmt(r['best_spearman'])}: {verdict(r['met'])} "
                         f"({r['target']})." for d, r in methods.items()] + [""]
    similarity = {d: r["similarity"] for d, r in results.items() if "similarity" in r}
    if similarity:
        lines += ["### 4. Test error by training-similarity tercile", "",
                  "| dataset | lowest / highest (seeds) | ensemble | target |",
                  "|---|---|---|---|"]
        for d, r in similarity.items():
            lines.append(f"| {d} | {fmt(r['ratio'], 2)} | {fmt(r.get('ensemble_ratio'), 2)} | "
                         f"{verdict(r['met'])} |")
        lines += ["", f"Target: {next(iter(similarity.values()))['target']}.", ""]
    return lines


# --------------------------------------------------------------------------- main


def study_dataset(dataset: str, out: Path, args, data_paths: dict[str, str]) -> dict:
    """Train (or keep) the runs of one dataset and measure them."""
    mse = out / dataset / "mse"
    summary = train_run(dataset, mse, run_overrides(dataset, args.seeds, args.epochs,
                                                    data_paths))
    result = evaluate_run(mse)
    found: dict = {"task": result.task, "n_test": result.n}
    if result.task == "regression":
        found["intervals"] = measure_intervals(result)
        found["similarity"] = measure_similarity(result)
        if dataset in REGRESSION:
            mve = out / dataset / "mve"
            mve_summary = train_run(dataset, mve, run_overrides(dataset, args.seeds,
                                                                args.epochs, data_paths, "mve"))
            found["methods"] = measure_methods(mse, mve, args.seeds, args.samples,
                                               train_seconds(summary),
                                               train_seconds(mve_summary))
    else:
        found["ece"] = measure_ece(result)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/uncertainty-study"))
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--epochs", type=int, default=None,
                        help="override train.epochs (smoke runs); default: the recipes'")
    parser.add_argument("--samples", type=int, default=20, help="MC-dropout passes per model")
    parser.add_argument("--data-path", action="append", default=[], metavar="DATASET=PATH",
                        help="data.path of a dataset (sider=.../sider.csv)")
    args = parser.parse_args(argv)
    data_paths = {name: str(Path(p).resolve()) if Path(p).exists() else p
                  for name, p in parse_data_paths(args.data_path).items()}
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / RESULTS
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for dataset in args.datasets:
        results[dataset] = {"seeds": list(args.seeds), "epochs": args.epochs,
                            **study_dataset(dataset, args.out, args, data_paths)}
        results_path.write_text(json.dumps(results, indent=2) + "\n")
    ordered = {d: results[d] for d in DATASETS if d in results and d in args.datasets}
    print("\n".join(tables(ordered)))
    print(f"wrote {results_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
