"""Atomic JSON files: written to a temporary name in the same folder, then renamed over the
target, so a crash never leaves a half-written summary, split or results file. A write that
fails (a full disk) removes its temporary file and raises an OSError naming the target."""

from __future__ import annotations

import json
import os
from pathlib import Path

from molsam.outputs import naming


def write_json_atomic(path: str | Path, data: object) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=1))


def write_text_atomic(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    with naming(path, temp):
        try:
            temp.write_text(text)
            os.replace(temp, path)
        finally:
            if temp.exists():
                temp.unlink()
    return path
