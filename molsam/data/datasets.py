"""Named datasets: the MoleculeNet registry, a download cache, a local mirror, a built-in set.

`molsam featurize bbbp` works like a path. A name resolves to a local file, in this order:
1. `$MOLSAM_DATA_DIR/<original file name>` (also without `.gz`): a local mirror, no network;
2. the user's cache (`$MOLSAM_CACHE_DIR` or `~/.cache/molsam`) from an earlier download;
3. a download of the original MoleculeNet file as DeepChem distributes it, into that cache.
The built-in `chembl2321810` set ships with RDKit itself and never needs the network.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from molsam.errors import DatasetError

_DEEPCHEM = "https://deepchemdata.s3-us-west-1.amazonaws.com/datasets/"

TOX21_TASKS = (
    "NR-AR", "NR-AR-LBD", "NR-AhR", "NR-Aromatase", "NR-ER", "NR-ER-LBD",
    "NR-PPAR-gamma", "SR-ARE", "SR-ATAD5", "SR-HSE", "SR-MMP", "SR-p53",
)


@dataclass(frozen=True)
class DatasetInfo:
    """How to read one named dataset. `targets=None` means every numeric non-SMILES column."""

    name: str
    filename: str
    smiles_column: str
    targets: tuple[str, ...] | None
    task: str
    metric: str
    url: str | None
    id_column: str | None = None
    description: str = ""


REGISTRY: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("bbbp", "BBBP.csv", "smiles", ("p_np",), "classification", "roc_auc",
                    _DEEPCHEM + "BBBP.csv", "name", "blood-brain barrier penetration"),
        DatasetInfo("bace", "bace.csv", "mol", ("Class",), "classification", "roc_auc",
                    _DEEPCHEM + "bace.csv", "CID", "BACE-1 inhibition"),
        DatasetInfo("clintox", "clintox.csv.gz", "smiles", ("FDA_APPROVED", "CT_TOX"),
                    "classification", "roc_auc", _DEEPCHEM + "clintox.csv.gz", None,
                    "clinical trial toxicity"),
        DatasetInfo("tox21", "tox21.csv.gz", "smiles", TOX21_TASKS, "classification", "roc_auc",
                    _DEEPCHEM + "tox21.csv.gz", "mol_id", "Tox21 challenge, 12 assays"),
        DatasetInfo("sider", "sider.csv.gz", "smiles", None, "classification", "roc_auc",
                    _DEEPCHEM + "sider.csv.gz", None, "side effects, 27 organ classes"),
        DatasetInfo("hiv", "HIV.csv", "smiles", ("HIV_active",), "classification", "roc_auc",
                    _DEEPCHEM + "HIV.csv", None, "HIV replication inhibition"),
        DatasetInfo("esol", "delaney-processed.csv", "smiles",
                    ("measured log solubility in mols per litre",), "regression", "rmse",
                    _DEEPCHEM + "delaney-processed.csv", "Compound ID", "aqueous solubility"),
        DatasetInfo("freesolv", "SAMPL.csv", "smiles", ("expt",), "regression", "rmse",
                    _DEEPCHEM + "SAMPL.csv", "iupac", "hydration free energy"),
        DatasetInfo("lipo", "Lipophilicity.csv", "smiles", ("exp",), "regression", "rmse",
                    _DEEPCHEM + "Lipophilicity.csv", "CMPD_CHEMBLID", "octanol/water logD7.4"),
        DatasetInfo("chembl2321810", "chembl2321810.csv", "smiles", ("activity",), "regression",
                    "rmse", None, "chembl_id",
                    "built-in: ChEMBL2321810 activity set shipped with RDKit (offline)"),
    )
}
BUILTIN = "chembl2321810"


def cache_dir() -> Path:
    """`$MOLSAM_CACHE_DIR`, else `$XDG_CACHE_HOME/molsam`, else `~/.cache/molsam`."""
    if os.environ.get("MOLSAM_CACHE_DIR"):
        return Path(os.environ["MOLSAM_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "molsam"


def is_dataset_name(text: str) -> bool:
    return text.casefold() in REGISTRY and not Path(text).exists()


def dataset_info(name: str) -> DatasetInfo:
    try:
        return REGISTRY[name.casefold()]
    except KeyError:
        raise DatasetError(
            f"unknown dataset {name!r}; named datasets: {', '.join(REGISTRY)} "
            "(or give a path to a CSV file)"
        ) from None


def dataset_path(name: str) -> Path:
    """Local path of a named dataset's file, fetching it on first use (see module docstring)."""
    info = dataset_info(name)
    if info.name == BUILTIN:
        return _materialize_builtin()
    mirror = os.environ.get("MOLSAM_DATA_DIR")
    if mirror:
        for candidate in (info.filename, info.filename.removesuffix(".gz")):
            if (Path(mirror) / candidate).is_file():
                return Path(mirror) / candidate
    cached = cache_dir() / "datasets" / info.filename
    if cached.is_file():
        return cached
    return _download(info, cached, mirror)


def _download(info: DatasetInfo, target: Path, mirror: str | None) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=target.parent, suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(info.url, timeout=60) as resp:
            shutil.copyfileobj(resp, out)
        os.replace(temp, target)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        where = f"not in MOLSAM_DATA_DIR={mirror}, " if mirror else ""
        raise DatasetError(
            f"dataset {info.name!r}: {info.filename} is {where}not cached, and downloading "
            f"{info.url} failed ({exc}); put the file in a folder and set MOLSAM_DATA_DIR to it"
        ) from None
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    return target


def _rdkit_freewilson_data() -> Path:
    from rdkit import RDConfig

    candidates = [Path(RDConfig.RDContribDir) / "FreeWilson" / "data"]
    import rdkit

    candidates.append(Path(rdkit.__file__).parent / "Contrib" / "FreeWilson" / "data")
    for folder in candidates:
        if (folder / "CHEMBL2321810.smi").is_file():
            return folder
    raise DatasetError(
        "built-in dataset: RDKit's Contrib/FreeWilson/data/CHEMBL2321810.smi was not found "
        f"(looked in {', '.join(str(c) for c in candidates)})"
    )


def _materialize_builtin() -> Path:
    """Join RDKit's CHEMBL2321810.smi (SMILES, ChEMBL id) with CHEMBL2321810_act.csv (id, pIC50)
    into one CSV in the cache (once): columns smiles, chembl_id, pIC50."""
    target = cache_dir() / "datasets" / REGISTRY[BUILTIN].filename
    if target.is_file():
        return target
    folder = _rdkit_freewilson_data()
    activity = {}
    for line in (folder / "CHEMBL2321810_act.csv").read_text().splitlines()[1:]:
        if line.strip():
            name, value = line.split(",")
            activity[name.strip()] = value.strip()
    rows = ["smiles,chembl_id,activity"]
    for line in (folder / "CHEMBL2321810.smi").read_text().splitlines():
        if line.strip():
            smiles, name = line.split()
            rows.append(f"{smiles},CHEMBL{name},{activity.get(name, '')}")
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    temp.write_text("\n".join(rows) + "\n")
    os.replace(temp, target)
    return target
