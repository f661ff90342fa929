"""Shared fixtures: paths to the real MoleculeNet files and an isolated molsam cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# Tests use tiny models: one intra-op thread avoids thread start-up and barrier costs that
# dominate at this size (and that balloon when the machine is shared).
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data" / "moleculenet"
RAW = SHARED_DATA / "raw"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets the same session-wide cache folder, never the user's real one."""
    cache = tmp_path_factory.getbasetemp() / "molsam-cache"
    monkeypatch.setenv("MOLSAM_CACHE_DIR", str(cache))
    monkeypatch.delenv("MOLSAM_DATA_DIR", raising=False)
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps tables at the terminal width
    return cache


@pytest.fixture
def raw_data_dir(monkeypatch):
    """Named datasets resolve to the shared raw MoleculeNet files (no network)."""
    monkeypatch.setenv("MOLSAM_DATA_DIR", str(RAW))
    return RAW


def write_csv(path: Path, text: str, *, encoding: str = "utf-8", newline: str = "\n") -> Path:
    path.write_bytes(text.replace("\n", newline).encode(encoding))
    return path
