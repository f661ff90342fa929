"""How featurize_many schedules its work: chunks that shrink at the end so the workers finish
together, the caller's `meanwhile` work running while the workers do theirs, and `molsam
featurize` forking its workers before torch is imported (torch is then loaded meanwhile)."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from molsam.chem.parallel import chunk_bounds, featurize_many
from tests.conftest import ROOT


@pytest.mark.parametrize(
    "total, size, workers", [(23403, 256, 2), (5000, 256, 4), (1000, 256, 2), (300, 256, 2),
                             (5000, 256, 1), (10, 3, 2), (0, 256, 2)]
)
def test_chunks_cover_every_molecule_once_in_order_and_shrink_at_the_end(total, size, workers):
    bounds = chunk_bounds(total, size, workers)
    assert [i for start, stop in bounds for i in range(start, stop)] == list(range(total))
    lengths = [stop - start for start, stop in bounds]
    assert max(lengths, default=size) <= size and min(lengths, default=1) >= 1
    if workers == 1:
        assert lengths[:-1] == [size] * (len(lengths) - 1)
    else:
        # the molecules after the last full chunk are at most 2 * workers * size + size
        full = [n for n in lengths if n == size]
        assert lengths[: len(full)] == full
        assert total - size * len(full) <= (2 * workers + 1) * size
        # and go in quarter chunks (the last may be shorter)
        assert all(n == max(1, size // 4) for n in lengths[len(full) : -1])


def test_meanwhile_runs_once_after_the_workers_started_and_changes_nothing():
    smiles = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "not a smiles", "C1CC1N"] * 60
    before = set(multiprocessing.active_children())
    seen: list[int] = []

    def meanwhile() -> None:
        seen.append(len(set(multiprocessing.active_children()) - before))

    parallel = featurize_many(smiles, 8, workers=2, chunk_size=32, scaffolds=True,
                              meanwhile=meanwhile)
    assert seen == [2]  # both workers were forked (and had their chunks) before it ran
    serial_seen: list[int] = []
    serial = featurize_many(smiles, 8, workers=1, scaffolds=True,
                            meanwhile=lambda: serial_seen.append(1))
    assert serial_seen == [1]
    for name in ("valid", "atom_counts", "bond_counts", "atom_codes", "rwse", "bond_atoms",
                 "bond_codes"):
        assert np.array_equal(getattr(parallel, name), getattr(serial, name)), name
    assert parallel.invalid == serial.invalid and parallel.scaffolds == serial.scaffolds


PROBE = textwrap.dedent("""
    import sys
    import molsam.chem.parallel as parallel
    start_pool = parallel.start_pool

    def spy(workers):
        print("torch at fork:", "torch" in sys.modules, flush=True)
        return start_pool(workers)

    parallel.start_pool = spy
    from molsam.cli.main import app
    try:
        app(sys.argv[1:])
    except SystemExit as done:
        print("exit:", done.code, flush=True)
    print("torch at end:", "torch" in sys.modules, flush=True)
""")


def test_featurize_forks_its_workers_before_importing_torch(tmp_path):
    """torch takes seconds to import: `molsam featurize` loads it while its workers run, and
    they are forked from a parent without torch in it."""
    data = tmp_path / "mols.csv"
    data.write_text("smiles\n" + "\n".join(["CCO", "c1ccccc1O", "CC(=O)O"] * 120) + "\n")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MOLSAM_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "featurize", str(data), "--no-cache", "-j", "2",
         "-o", str(out)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )
    lines = done.stdout.splitlines()
    assert "torch at fork: False" in lines, done.stdout + done.stderr
    assert "exit: 0" in lines or "exit: None" in lines, done.stdout + done.stderr
    assert (out / "store.pt").is_file() and (out / "splits.json").is_file()
