"""Named datasets: the MoleculeNet registry, a download cache, a local mirror, a built-in set.

`molsam featurize bbbp` works like a path. A name resolves to a local file, in this order:
1. `$MOLSAM_DATA_DIR/<original file name>` (also without `.gz`): a local mirror, no network;
2. the user's cache (`$MOLSAM_CACHE_DIR` or `~/.cache/molsam`) from an earlier download;
3. a download of the original MoleculeNet file as DeepChem distributes it, into that cache.
The built-in `chembl2321810` set ships with RDKit itself and never needs the network.

A cache that cannot be written (a read-only `$MOLSAM_CACHE_DIR`, one that cannot be created, a
full disk) never stops a command: it says so once (`cache_unusable`) and goes on without it,
fetching or writing files into a temporary folder of its own instead.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from molsam.errors import DatasetError

log = logging.getLogger("molsam")

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


#: Cache folders already reported as unusable by this process (each is reported once).
_REPORTED: set[str] = set()


def cache_unusable(error: OSError) -> None:
    """Say, once per process and cache folder, that the cache cannot be written and that work
    goes on without it (a warning line naming the folder and what to do)."""
    folder = str(cache_dir())
    if folder in _REPORTED:
        return
    _REPORTED.add(folder)
    reason = error.strerror or type(error).__name__
    if error.filename and str(error.filename) != folder:
        reason = f"{error.filename}: {reason}"
    log.warning(f"warning: cache folder {folder} cannot be written ({reason}); going on without "
                "the cache (set MOLSAM_CACHE_DIR to a writable folder to keep featurized data)")


def cache_folder(name: str) -> Path | None:
    """`cache_dir()/name`, created; None (said once: cache_unusable) where it cannot be created
    or written into."""
    folder = cache_dir() / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(13, "not writable", str(folder))
    except OSError as error:
        cache_unusable(error)
        return None
    return folder


def _scratch(name: str) -> Path:
    """A folder of this process, removed at exit: where files go when the cache cannot."""
    folder = Path(tempfile.mkdtemp(prefix=f"molsam-{name}-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


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
    if _is_file(cached):
        return cached
    folder = cache_folder("datasets") or _scratch("datasets")
    return _download(info, folder / info.filename, mirror)


def _is_file(path: Path) -> bool:
    """Path.is_file, False also where a folder on the way may not be searched (EACCES)."""
    try:
        return path.is_file()
    except OSError:
        return False


def _download(info: DatasetInfo, target: Path, mirror: str | None) -> Path:
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
    if _is_file(target):
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
    text = "\n".join(rows) + "\n"
    for place in (cache_folder("datasets"), None):
        target = (place or _scratch("datasets")) / REGISTRY[BUILTIN].filename
        temp = target.with_name(f".{target.name}.tmp{os.getpid()}")
        try:
            temp.write_text(text)
            os.replace(temp, target)
            return target
        except OSError as error:  # a full cache disk: once more in the scratch folder
            temp.unlink(missing_ok=True)
            if place is None:
                raise
            cache_unusable(error)
    raise AssertionError("unreachable")
