"""One self-contained HTML page about a trained run (`molsam report RUN -o report.html`).

Sections: the resolved recipe; data and split statistics (splits.json); learning curves
(seed_*/metrics.csv); test metrics, mean and spread (population std) over seeds
(summary.json); the test split scored by the ensemble of the run's replicates
(molsam.evaluate: the numbers `molsam evaluate RUN` reports): a parity plot per target
(regression) or ROC curves (classification, one-vs-rest per class for multiclass); calibration
plots (molsam.uncertainty.plots: a reliability diagram before and after the stored calibration
for classification, expected against observed coverage of Gaussian intervals and |error|
against sigma when a sigma exists, observed coverage of the stored split-conformal intervals
against their nominal level for regression); and the worst-predicted test molecules
(|y - mu|, or the probability's squared error), drawn with RDKit's SVG drawer.

Self-contained: every figure is inline (PNG as base64 data URIs, molecules as inline SVG), the
page loads nothing from the network and runs no script, so it opens offline and can be sent
as one file. The report reads what a run directory holds and scores its saved test split; it
never imports the training code (molsam.train.loop, molsam.train.run, molsam.optim).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from molsam.errors import InputError

#: Worst-predicted test molecules drawn.
WORST = 12
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;
max-width:1100px;color:#222;background:#fff;line-height:1.4}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;
text-align:right}th{background:#f4f4f4}td.l,th.l{text-align:left}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.85em}
img{max-width:100%;height:auto}.mols{display:flex;flex-wrap:wrap;gap:10px}
.mol{border:1px solid #ddd;padding:4px;width:250px;font-size:.8em;word-break:break-all}
.note{color:#666;font-size:.9em}
"""


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(figure) -> str:
    """An <img> holding the figure as a base64 PNG; closes the figure."""
    plt = _pyplot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="figure" src="data:image/png;base64,{data}">'


def _png_file(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(Path(path).name)}" src="data:image/png;base64,{data}">'


def _table(header: list[str], rows: list[list], left: int = 1) -> str:
    def cell(value, tag, i):
        cls = ' class="l"' if i < left else ""
        if isinstance(value, float):
            value = "" if math.isnan(value) else f"{value:.4g}"
        return f"<{tag}{cls}>{html.escape(str(value))}</{tag}>"

    head = "".join(cell(h, "th", i) for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell(v, "td", i) for i, v in enumerate(row)) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable ({' '.join(str(exc).split())[:120]})") from None


def _seed_dirs(run: Path) -> list[Path]:
    found = [p for p in run.glob("seed_*") if p.is_dir() and (p / "best.pt").is_file()]
    return sorted(found, key=lambda p: int(p.name[5:]) if p.name[5:].isdigit() else 1 << 30)


# --------------------------------------------------------------------------- sections


def _recipe_section(run: Path) -> str:
    path = run / "recipe.yaml"
    text = path.read_text(encoding="utf-8") if path.is_file() else "(no recipe.yaml)"
    return f"<h2>Recipe</h2><pre>{html.escape(text)}</pre>"


def _split_section(splits: dict) -> str:
    if not splits:
        return "<h2>Data and split</h2><p class=note>no splits.json in the run directory</p>"
    parts = [p for p in ("train", "val", "test") if p in splits]
    sizes = [[p, len(splits[p].get("indices", []))] for p in parts]
    line = (f"<h2>Data and split</h2><p>method <b>{html.escape(str(splits.get('method')))}</b>"
            f", seed {html.escape(str(splits.get('seed')))}, sizes "
            f"{html.escape(str(splits.get('sizes')))}</p>")
    out = [line, _table(["split", "molecules"], sizes)]
    stats = splits.get("stats") or {}
    rows = []
    for part in parts:
        for task, values in ((stats.get(part) or {}).get("tasks") or {}).items():
            if isinstance(values, dict):
                shown = ", ".join(f"{k} {_short(v)}" for k, v in values.items())
                rows.append([part, task, shown])
    if rows:
        out.append(_table(["split", "task", "statistics"], rows, left=3))
    return "".join(out)


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items()) + "}"
    return str(value)


def _curves_section(seeds: list[Path], metric: str | None) -> str:
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    drawn = False
    for folder in seeds:
        path = folder / "metrics.csv"
        if not path.is_file():
            continue
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        if not rows:
            continue
        epochs = [int(r["epoch"]) for r in rows]
        left.plot(epochs, [float(r["train_loss"]) for r in rows], label=folder.name)
        name = metric or next((c[4:] for c in rows[0] if c.startswith("val_")), None)
        for part, style in (("val", "-"), ("test", "--")):
            points = [(e, float(r[f"{part}_{name}"])) for e, r in zip(epochs, rows)
                      if r.get(f"{part}_{name}")]
            if points:
                right.plot(*zip(*points), style, label=f"{part} {folder.name}")
        right.set(ylabel=name)
        drawn = True
    if not drawn:
        plt.close(figure)
        return "<h2>Learning curves</h2><p class=note>no metrics.csv</p>"
    left.set(xlabel="epoch", ylabel="train loss", title="training loss")
    right.set(xlabel="epoch", title="validation / test")
    for axis in (left, right):
        axis.legend(fontsize="small")
    return "<h2>Learning curves</h2>" + _png(figure)


def _metrics_section(summary: dict) -> str:
    """summary.json's test scores: {"mean": {metric: {"mean", "std", "n"}}, "tasks": {task:
    {metric: {...}}}} (molsam.train.run.summarize; std: population std over seeds)."""
    test = summary.get("test") or {}
    rows = []
    for scope, metrics in [("mean over tasks", test.get("mean") or {}),
                           *((task, values) for task, values in (test.get("tasks") or {}).items())]:
        for name, value in metrics.items():
            if isinstance(value, dict):
                rows.append([scope, name, _num(value.get("mean")), _num(value.get("std")),
                             value.get("n", "")])
    replicates = summary.get("replicates") or []
    head = (f"<h2>Test metrics</h2><p>{len(replicates)} replicate(s); spread: population "
            "standard deviation over seeds (molsam train's summary.json)</p>")
    if not rows:
        return head + "<p class=note>no test scores in summary.json</p>"
    return head + _table(["task", "metric", "mean", "std over seeds", "seeds"], rows, left=2)


def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _prediction_plots(task: str, names: list[str], y: np.ndarray, values: np.ndarray,
                      num_classes) -> str:
    plt = _pyplot()
    if task == "regression":
        count = len(names)
        figure, axes = plt.subplots(1, count, figsize=(4.2 * count, 4), squeeze=False,
                                    constrained_layout=True)
        for t, axis in enumerate(axes[0]):
            keep = ~np.isnan(y[:, t])
            axis.scatter(y[keep, t], values[keep, t], s=10, alpha=0.6)
            if keep.any():
                low = float(min(y[keep, t].min(), values[keep, t].min()))
                high = float(max(y[keep, t].max(), values[keep, t].max()))
                axis.plot([low, high], [low, high], ":", color="grey")
                rmse = float(np.sqrt(np.mean((y[keep, t] - values[keep, t]) ** 2)))
                axis.set_title(f"{names[t]}: RMSE {rmse:.3g}, n={int(keep.sum())}")
            axis.set(xlabel="measured", ylabel="predicted")
        return "<h2>Parity plot (test)</h2>" + _png(figure)
    from sklearn.metrics import roc_auc_score, roc_curve

    curves = []  # (title, labels 0/1, scores)
    if task == "classification":
        for t, name in enumerate(names):
            keep = ~np.isnan(y[:, t])
            curves.append((name, y[keep, t], values[keep, t]))
    else:
        start = 0
        for t, name in enumerate(names):
            k = num_classes[t]
            keep = ~np.isnan(y[:, t])
            for c in range(k):
                curves.append((f"{name} class {c}", (y[keep, t] == c).astype(float),
                               values[keep, start + c]))
            start += k
    figure, axis = plt.subplots(figsize=(5, 4.5), constrained_layout=True)
    axis.plot([0, 1], [0, 1], ":", color="grey")
    for title, labels, scores in curves:
        if len(np.unique(labels)) < 2:
            continue
        fpr, tpr, _ = roc_curve(labels, scores)
        axis.plot(fpr, tpr, label=f"{title} (AUC {roc_auc_score(labels, scores):.3f})")
    axis.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)")
    if axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize="small", loc="lower right")
    return "<h2>ROC curve (test)</h2>" + _png(figure)


def _conformal_plot(result, seeds: list[Path]) -> str:
    """Regression: observed test coverage of the stored split-conformal intervals against
    their nominal level, 5% to 95% (from the calibration scores stored beside the quantile;
    molsam.train.calibration.conformal_level_quantiles), "" when none is stored."""
    from molsam.train.calibration import conformal_level_quantiles, entry_of, member_id
    from molsam.train.checkpoint import load_checkpoint

    arrays = result.arrays or {}
    y, outputs, calibrated = arrays.get("y"), arrays.get("outputs"), arrays.get("calibrated")
    checkpoints = [load_checkpoint(folder / "best.pt") for folder in seeds]
    record = checkpoints[0].get("calibration")
    entry = entry_of(record) if len(checkpoints) == 1 else \
        entry_of(record, [member_id(c) for c in checkpoints])
    conformal = (entry or {}).get("calibrators", {}).get("conformal")
    if conformal is None or y is None:
        return ""
    sigma = calibrated.sigma if calibrated is not None else None
    if conformal.get("normalized") and sigma is None:
        return ""
    levels = np.round(np.arange(0.05, 0.951, 0.05), 2)
    observed = []
    for level in levels:
        quantiles = conformal_level_quantiles(conformal, float(level))
        if quantiles is None:
            continue
        half = np.asarray(quantiles) * (sigma if conformal.get("normalized") else 1.0)
        with np.errstate(invalid="ignore"):
            inside = np.abs(y - outputs.values) <= half
        keep = ~np.isnan(y)
        observed.append((float(level), float(inside[keep].mean()) if keep.any() else np.nan))
    if not observed:
        return ""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5, 4.5), constrained_layout=True)
    axis.plot([0, 1], [0, 1], ":", color="grey", label="ideal")
    axis.plot(*zip(*observed), "o-", label="split-conformal intervals")
    axis.set(xlabel="nominal coverage", ylabel="observed test coverage", xlim=(0, 1),
             ylim=(0, 1), title="conformal interval coverage (test)")
    axis.legend(fontsize="small", loc="upper left")
    return _png(figure)


def _calibration_section(result, seeds: list[Path]) -> str:
    from molsam.evaluate import write_uncertainty_plots

    with tempfile.TemporaryDirectory() as folder:
        written = write_uncertainty_plots(result, Path(folder) / "eval.json")
        images = "".join(_png_file(path) for path in written)
    if result.task == "regression":
        images += _conformal_plot(result, seeds)
    uncertainty = result.final_uncertainty or {}
    described = (uncertainty.get("calibration") or {}).get("description")
    note = f"<p class=note>stored calibration: {html.escape(str(described))}</p>" \
        if described else "<p class=note>no stored calibration applies</p>"
    if not images:
        images = "<p class=note>no calibration plot: no stored calibration</p>"
    return "<h2>Calibration (test)</h2>" + note + images


def _molecule_svg(smiles: str, size: tuple[int, int] = (240, 180)) -> str:
    from rdkit import Chem, rdBase
    from rdkit.Chem.Draw import rdMolDraw2D

    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return "<p class=note>(not drawable)</p>"
    drawer = rdMolDraw2D.MolDraw2DSVG(*size)
    rdMolDraw2D.PrepareAndDrawMolecule(drawer, mol)
    drawer.FinishDrawing()
    svg = drawer.GetDrawingText()
    return svg[svg.find("<svg"):]  # drop the XML declaration: inline in HTML


def _worst_section(task: str, names: list[str], smiles: list[str], y: np.ndarray,
                   values: np.ndarray, similarity, num_classes) -> str:
    if task == "regression":
        error = np.abs(y - values)
    elif task == "classification":
        error = (values - y) ** 2
    else:  # multiclass: 1 - probability of the true class, per target
        error = np.full(y.shape, np.nan)
        start = 0
        for t, k in enumerate(num_classes):
            keep = ~np.isnan(y[:, t])
            rows = np.flatnonzero(keep)
            error[rows, t] = 1.0 - values[rows, start + y[rows, t].astype(int)]
            start += k
    with np.errstate(invalid="ignore"):
        worst_of = np.nanmax(np.where(np.isnan(error), -np.inf, error), axis=1)
    order = [i for i in np.argsort(-worst_of, kind="stable") if np.isfinite(worst_of[i])]
    cards = []
    for i in order[:WORST]:
        t = int(np.nanargmax(np.where(np.isnan(error[i]), -np.inf, error[i])))
        if task == "multiclass":
            start = sum(num_classes[:t])
            predicted = f"p(true class) {1 - error[i, t]:.3g}"
        else:
            predicted = f"predicted {values[i, t]:.4g}"
        close = "" if similarity is None or np.isnan(similarity[i]) else \
            f"<br>similarity to training {similarity[i]:.2f}"
        cards.append(
            f"<div class=mol>{_molecule_svg(smiles[i])}<br><b>{html.escape(names[t])}</b>: "
            f"measured {y[i, t]:.4g}, {predicted}{close}<br><code>{html.escape(smiles[i])}"
            "</code></div>")
    what = {"regression": "|measured - predicted|", "classification":
            "(probability - label)^2", "multiclass": "1 - probability of the true class"}[task]
    return (f"<h2>Worst-predicted test molecules</h2><p class=note>by {what}, the worst task "
            f"of each molecule</p><div class=mols>{''.join(cards)}</div>")


# --------------------------------------------------------------------------- page


def build_report(run: str | Path, *, device: str = "auto", workers: int | None = 1,
                 batch_size: int | None = None) -> str:
    """The HTML page of a run directory (module docstring).

    Raises:
        InputError: not a run directory (no seed_*/best.pt); CheckpointError, InputError from
            scoring its test split (molsam.evaluate).
    """
    from molsam.evaluate import evaluate

    run = Path(run).expanduser()
    seeds = _seed_dirs(run) if run.is_dir() else []
    if not seeds:
        raise InputError(f"{run}: not a run directory (no seed_*/best.pt)")
    summary = _read_json(run / "summary.json")
    splits = _read_json(run / "splits.json")
    result = evaluate([run], split="test", device=device, workers=workers,
                      batch_size=batch_size)
    arrays = result.arrays or {}
    y, outputs = arrays.get("y"), arrays.get("outputs")
    indices = (splits.get("test") or {}).get("smiles") or []
    task, names = result.task, result.target_names
    metric = summary.get("metric")
    head = (f"<h1>molsam run {html.escape(run.name)}</h1><p>{html.escape(str(run.resolve()))}"
            f"<br>task <b>{html.escape(task)}</b>, targets {html.escape(', '.join(names))}; "
            f"{len(seeds)} replicate(s); test split scored by "
            f"{'their ensemble' if len(seeds) > 1 else 'the model'} on {result.n} molecules</p>")
    sections = [head, _recipe_section(run), _split_section(splits),
                _curves_section(seeds, metric), _metrics_section(summary)]
    if y is not None and outputs is not None and len(y):
        k = arrays.get("num_classes")
        sections.append(_prediction_plots(task, names, y, outputs.values, k))
        sections.append(_calibration_section(result, seeds))
        if len(indices) == len(y):
            sections.append(_worst_section(task, names, list(indices), y, outputs.values,
                                           arrays.get("similarity"), k))
    return ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            f"<title>molsam report: {html.escape(run.name)}</title><style>{STYLE}</style>"
            f"</head><body>{''.join(sections)}</body></html>\n")


def write_report(run: str | Path, out: str | Path, **kwargs) -> Path:
    """build_report, written atomically to `out` (a temp file renamed into place)."""
    from molsam.outputs import output_file, writes_to

    text = build_report(run, **kwargs)
    path = output_file(out, "--out")
    with writes_to(path, "--out"):
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(temp, path)
        finally:
            if os.path.exists(temp):
                os.unlink(temp)
    return path
