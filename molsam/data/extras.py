"""Optional dependencies of the file formats (`pip install molsam[formats]`), imported on first use.

Excel and Parquet readers need python-calamine and pyarrow; CSV, SD and SMILES files need
neither, so a plain install stays light and a missing extra is one line that says what to
install, never an ImportError traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from molsam.errors import ConfigError

INSTALL = "pip install molsam[formats]"


def require(module: str, package: str, purpose: str) -> ModuleType:
    """`module` imported, or a one-line ConfigError: `<purpose> needs <package>, which is not
    installed: pip install molsam[formats]`."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{purpose} needs {package}, which is not installed: {INSTALL}") from None
