"""`molsam report RUN`: one self-contained HTML page (inline PNG and SVG, no script, nothing
fetched) with every section, built without the training code, and rendered by headless
Chromium when one is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from molsam.cli.main import app
from tests.conftest import ROOT
from tests.integration.test_train import TINY_MODEL, _fixture_csv

pytest.importorskip("rdkit")
runner = CliRunner()
SECTIONS = ("Recipe", "Data and split", "Learning curves", "Test metrics", "Calibration (test)",
            "Worst-predicted test molecules")


def _train(folder: Path, name: str, rows: int, seeds: list[int]) -> Path:
    from molsam.config import recipe_from_dict
    from molsam.train.run import train_recipe

    folder.mkdir(parents=True, exist_ok=True)
    data = _fixture_csv(folder, name, rows)
    train_recipe(recipe_from_dict({
        "data": {"path": str(data)},
        "split": {"method": "random", "sizes": [0.5, 0.25, 0.25], "seed": 0},
        "model": TINY_MODEL,
        "train": {"epochs": 2, "batch_size": 8, "seeds": seeds, "workers": 1, "device": "cpu"},
    }), folder / "run")
    return folder / "run"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOLSAM_CACHE_DIR", str(folder / "cache"))
        return {"classification": _train(folder / "c", "bbbp.csv", 48, [0, 1]),
                "regression": _train(folder / "r", "esol.csv", 48, [0])}


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_report_has_every_section_and_is_self_contained(runs, task, tmp_path):
    out = tmp_path / "report.html"
    result = runner.invoke(app, ["report", str(runs[task]), "-o", str(out), "-j", "1",
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f"<h2>{section}</h2>" in page, section
    plot = "ROC curve (test)" if task == "classification" else "Parity plot (test)"
    assert f"<h2>{plot}</h2>" in page
    assert "std over seeds" in page and "graphsam" in page  # metrics table, the recipe
    images = re.findall(r'<img [^>]*src="([^"]*)"', page)
    # curves, parity or ROC, and a calibration plot (regression without a sigma: the stored
    # conformal intervals' coverage; classification: the reliability diagram)
    assert len(images) >= 3 and all(src.startswith("data:image/png;base64,") for src in images)
    # Nothing to fetch, nothing to run: no external src/href, no script, no CSS url().
    assert not re.search(r'(src|href)\s*=\s*"(?!data:)', page)
    assert "<script" not in page.lower() and "url(" not in page and "@import" not in page
    test_size = 12  # 48 molecules, a quarter in test: every one drawn (at most 12)
    assert page.count("<svg") == test_size
    assert "similarity to training" in page
    assert "stored calibration: " in page and "fitted on" in page


def test_report_imports_nothing_from_training(runs, tmp_path):
    code = (
        "import sys\n"
        "from molsam.report import write_report\n"
        f"write_report({str(runs['regression'])!r}, {str(tmp_path / 'r.html')!r}, device='cpu')\n"
        "bad = sorted(m for m in sys.modules if m in ('molsam.train.loop', 'molsam.train.run', "
        "'molsam.train.static', 'molsam.train.finetune') or m.startswith('molsam.optim'))\n"
        "print(bad)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "r.html").stat().st_size > 10_000


def test_report_of_a_folder_that_is_not_a_run_is_one_line(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a run directory" in lines[0]


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def test_report_renders_in_headless_chromium(runs, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium installed (apt-get install chromium, or put chromium on PATH)")
    out = tmp_path / "report.html"
    result = runner.invoke(app, ["report", str(runs["classification"]), "-o", str(out), "-j",
                                 "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    shot = tmp_path / "shot.png"
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--host-resolver-rules=MAP * ~NOTFOUND",  # anything fetched would fail and be logged
         "--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp_path / 'profile'}",
         "--window-size=1200,2400", f"--screenshot={shot}", out.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines()
               if "CONSOLE" in line or "Failed to load resource" in line or "Uncaught" in line]
    assert not console, console
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.std() > 0.05  # not blank: text, figures and drawings
    colours = np.unique((pixels.reshape(-1, 3) * 255).astype(np.uint8), axis=0)
    assert len(colours) > 50
