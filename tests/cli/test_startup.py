"""Start-up stays light: the CLI imports torch, RDKit, matplotlib (and sklearn, scipy) only inside
the command that needs them, so `molsam --help` and every `COMMAND --help` start in a fraction of
a second (benchmarks/startup.py measures it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

HEAVY = ("torch", "rdkit", "matplotlib", "sklearn", "scipy", "pandas", "optuna", "ray")
PROBE = """
import json, sys
from molsam.cli.main import app
try:
    app(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)), file=sys.stderr)
"""


def _heavy_modules_after(*argv: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *argv],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
    )
    return json.loads(done.stderr.strip().splitlines()[-1])


def test_importing_the_cli_imports_no_heavy_module():
    assert _heavy_modules_after() == []


@pytest.mark.parametrize(
    "command", ["featurize", "train", "evaluate", "predict", "datasets", "benchmark", "tune",
                "sharpness", "calibrate", "embed", "report"]
)
def test_command_help_imports_no_heavy_module(command):
    assert _heavy_modules_after(command, "--help") == []
