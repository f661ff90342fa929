"""benchmarks/uncertainty_study.py's pure helpers: the oracle interval width at a coverage, the
similarity-tercile ratio, the run overrides and the seed statistics (no training)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "uncertainty_study.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("uncertainty_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_width_at_coverage_is_the_smallest_covering_multiple(study):
    y = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    mu = np.zeros(5)
    sigma = np.array([1.0, 1.0, 1.0, 2.0, 1.0])  # |z| = 1, 2, 3, 2; NaN label left out
    # 50% of 4 rows: 2 rows covered, k = 2 (second smallest |z|): widths 4, 4, 4, 8.
    assert study.width_at_coverage(y, mu, sigma, 0.5) == pytest.approx(5.0)
    # all rows: k = 3
    assert study.width_at_coverage(y, mu, sigma, 1.0) == pytest.approx(2 * 3 * 1.25)
    k = 2.0
    covered = np.abs(y[:4] - mu[:4]) <= k * sigma[:4]
    assert covered.mean() >= 0.5
    assert math.isnan(study.width_at_coverage([np.nan], [0.0], [1.0], 0.9))


def test_width_at_coverage_averages_tasks(study):
    y = np.array([[1.0, 2.0], [1.0, 2.0]])
    assert study.width_at_coverage(y, np.zeros((2, 2)), np.ones((2, 2)), 0.9) == \
        pytest.approx((2.0 + 4.0) / 2)


def test_tercile_ratio(study):
    bins = {"bins": [{"mean_over_tasks": 0.9}, {"mean_over_tasks": 0.6},
                     {"mean_over_tasks": 0.45}]}
    assert study.tercile_ratio(bins) == pytest.approx(2.0)
    assert study.tercile_ratio(None) is None
    assert study.tercile_ratio({"bins": [{"mean_over_tasks": None},
                                         {"mean_over_tasks": 1.0}]}) is None


def test_run_overrides_and_data_paths(study):
    paths = study.parse_data_paths(["sider=/d/sider.csv"])
    assert study.run_overrides("sider", [0, 1], 2, paths, "mse") == [
        "train.seeds=[0, 1]", "train.epochs=2", "data.path=/d/sider.csv"]
    assert study.run_overrides("esol", [3], None, paths, "mve") == [
        "train.seeds=[3]", "train.loss=mve"]
    with pytest.raises(ValueError):
        study.parse_data_paths(["sider"])


def test_stats_and_fmt(study):
    s = study.stats([1.0, 3.0, None, float("nan")])
    assert s["mean"] == 2.0 and s["n"] == 2 and s["std"] == pytest.approx(math.sqrt(2))
    assert study.fmt(s) == "2.000 ± 1.414"
    assert study.fmt(study.stats([0.5])) == "0.500"
    assert study.fmt(study.stats([])) == "-"
    assert study.verdict(True) == "met" and study.verdict(None) == "n/a"
