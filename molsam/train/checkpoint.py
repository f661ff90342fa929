"""Self-contained checkpoints: a plain dict of tensors and builtins.

A checkpoint holds everything predict needs besides the SMILES (model config and weights,
featurizer spec, target names, task, target scaler) plus what makes a run reproducible and
resumable (resolved recipe, split and replicate seeds, epoch, best metric, optimizer/scheduler
state, RNG states, early-stopping counters) and the versions of molsam, torch and rdkit.

Only tensors and plain builtins are stored, so `torch.load(path, weights_only=True)` reads it and
nothing is ever unpickled unsafely: a file that weights_only refuses is refused here too. Files are
written atomically (temp file in the same folder, then os.replace), so a crash mid-write never
leaves a truncated checkpoint where a good one was.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import importlib.metadata
import os
import pickle
import random
import tempfile
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

import molsam
from molsam.chem.spec import FEATURIZER_VERSION, featurizer_spec, spec_extras
from molsam.config import Recipe, recipe_to_dict
from molsam.errors import CheckpointError
from molsam.models import build_model, featurizer_options
from molsam.outputs import naming
from molsam.train.losses import LOSSES, outputs_per_target

FORMAT = "molsam-checkpoint"
FORMAT_VERSION = 1
TASKS = ("classification", "regression", "multiclass")
#: Keys every checkpoint has (training_state is optional and may be None).
REQUIRED_KEYS = (
    "format",
    "format_version",
    "model_config",
    "model_state",
    "featurizer",
    "target_names",
    "task",
    "scaler",
    "recipe",
    "split_seed",
    "seed",
    "epoch",
    "best_metric",
    "metric",
    "versions",
)


# --------------------------------------------------------------------------- writing


def _check_plain(value: Any, key: str) -> None:
    """Raise TypeError (a bug, not user input) if `value` holds anything but tensors and
    builtins: such a checkpoint could not be read back with weights_only=True."""
    # Exact types: subclasses (numpy.float64, torch's TorchVersion str) pickle as their class,
    # which weights_only refuses.
    kind = type(value)
    # bytes: packed training fingerprints ("domain"), which weights_only loads as they are.
    if value is None or kind in (bool, int, float, str, bytes) or isinstance(value, Tensor):
        return
    if kind in (dict, OrderedDict):
        for k, v in value.items():
            if type(k) not in (str, int):
                raise TypeError(f"checkpoint key {key}: dict key {k!r} is not a str or int")
            _check_plain(v, f"{key}.{k}")
        return
    if kind in (list, tuple, torch.Size):
        for i, v in enumerate(value):
            _check_plain(v, f"{key}[{i}]")
        return
    raise TypeError(
        f"checkpoint key {key}: {type(value).__name__} is not a tensor or plain builtin "
        "(convert it so the checkpoint loads with weights_only=True)"
    )


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Write `payload` atomically to `path`, stamped with the format name and version.

    The payload is checked first (tensors and builtins only), then written to a temp file in
    the same folder and renamed over `path`; if anything fails, an existing file at `path` is left
    untouched and no temp file remains.

    Raises:
        TypeError: the payload holds an object that weights_only loading would refuse.
    """
    path = Path(path)
    payload = {**payload, "format": FORMAT, "format_version": FORMAT_VERSION}
    _check_plain(payload, "checkpoint")
    with naming(path):  # a full disk or a read-only folder: an OSError naming `path`
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with naming(path, tmp):
            with os.fdopen(fd, "wb") as handle:
                torch.save(payload, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------- reading


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint with `torch.load(weights_only=True)` and check its format.

    Raises:
        CheckpointError (one line, naming the file): missing file, corrupt or truncated file,
        a file that is not a molsam checkpoint, an unsupported format version, or content that
        weights_only refuses to unpickle.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if not path.is_file():
        raise CheckpointError(f"{path}: is not a file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint is empty (corrupt or truncated)")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != b"PK\x03\x04":
        raise CheckpointError(f"{path}: not a molsam checkpoint (not a PyTorch checkpoint file)")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: checkpoint is corrupt or truncated (incomplete zip archive)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refusals land here: the file holds arbitrary Python objects.
        message = str(exc)
        marker = "WeightsUnpickler error:"
        if marker in message:
            first = message.split(marker, 1)[1].strip().splitlines()[0]
            first = first.split(" was not an allowed global")[0] + " is not allowed"
        else:
            first = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: refused to load: it holds objects other than tensors and plain values, "
            f"which are never unpickled ({' '.join(first.split())[:200]})"
        ) from None
    except Exception as exc:  # zip member missing, CRC error, EOF, ...: all mean corrupt
        first = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise CheckpointError(f"{path}: checkpoint is corrupt or truncated ({first})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a molsam checkpoint (a PyTorch file without format {FORMAT!r})"
        )
    version = ckpt.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version} is not supported by molsam "
            f"{molsam.__version__} (supports {FORMAT_VERSION})"
        )
    missing = [key for key in REQUIRED_KEYS if key not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint is incomplete: missing {', '.join(missing)}")
    return ckpt


# --------------------------------------------------------------------------- RNG state


def capture_rng_state(numpy_generator: np.random.Generator | None = None) -> dict:
    """RNG states of torch (CPU and every CUDA device), numpy's global RNG, Python's `random`,
    and optionally a numpy Generator, as tensors and builtins (weights_only-safe)."""
    np_name, np_key, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "name": str(np_name),
            "key": torch.from_numpy(np.asarray(np_key, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "python": {
            "version": int(py_version),
            "internal": torch.tensor(py_internal, dtype=torch.int64),
            "gauss_next": py_gauss,
        },
        "numpy_generator": None,
    }
    if numpy_generator is not None:
        # bit_generator.state is a dict of str and Python ints (128-bit ints pickle as builtins).
        state["numpy_generator"] = _plain_copy(numpy_generator.bit_generator.state)
    return state


def restore_rng_state(state: dict, numpy_generator: np.random.Generator | None = None) -> None:
    """Inverse of capture_rng_state (CUDA states are restored only where devices exist)."""
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    n = state["numpy"]
    np.random.set_state(
        (
            n["name"],
            n["key"].cpu().numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["internal"].tolist()), p["gauss_next"]))
    if numpy_generator is not None and state.get("numpy_generator") is not None:
        numpy_generator.bit_generator.state = state["numpy_generator"]


def _plain_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_copy(v) for v in value]
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, np.generic):
        return value.item()
    return value


# --------------------------------------------------------------------------- building


def training_state(
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    early_stopping: dict | None = None,
    numpy_generator: np.random.Generator | None = None,
) -> dict:
    """What a resumed run needs: optimizer state_dict (molsam optimizers include the base
    optimizer's moments), scheduler state_dict, RNG states, and early-stopping counters
    (e.g. {"best": 0.91, "bad_epochs": 2})."""
    return {
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "rng": capture_rng_state(numpy_generator),
        "early_stopping": None if early_stopping is None else dict(early_stopping),
    }


def versions() -> dict:
    """molsam, torch and rdkit versions, recorded in every checkpoint.

    RDKit's version comes from the installed package's metadata, never from importing it: saving
    a checkpoint must not load RDKit (a GPU machine training from a store may not have it; then
    the version is None).
    """
    # str(): torch.__version__ is a TorchVersion, which weights_only would refuse to unpickle.
    return {
        "molsam": str(molsam.__version__),
        "torch": str(torch.__version__),
        "rdkit": _installed_version("rdkit"),
    }


@functools.cache
def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def build_checkpoint(
    model: torch.nn.Module,
    *,
    target_names: list[str],
    task: str,
    recipe: Recipe | dict,
    split_seed: int,
    seed: int,
    epoch: int,
    best_metric: float | None = None,
    metric: str | None = None,
    scaler: dict | None = None,
    training: dict | None = None,
    classes: list[list[str]] | None = None,
    loss: str = "mse",
    calibration: dict | None = None,
) -> dict:
    """Collect a checkpoint payload (pass it to save_checkpoint).

    Args:
        model: the trained model (GPS or CoMPT); weights are copied to the CPU so the file loads anywhere.
        target_names: T target column names, in the order of the model's outputs.
        task: "classification" or "regression".
        recipe: the resolved Recipe (or its recipe_to_dict form).
        split_seed, seed: the split seed and this replicate's seed.
        epoch: the epoch these weights come from (0-based).
        best_metric, metric: validation score of these weights and the metric's name.
        scaler: regression target scaler {"mean": [T floats], "std": [T floats]}, else None.
        training: training_state(...) for resume, or None for an inference-only checkpoint.
        classes: multiclass only: [T] class names per target, in the order of the model's
            outputs (target t owns the next len(classes[t]) logits). Stored as "classes" (None
            for other tasks; checkpoints written before multiclass lack the key).
        loss: the recipe's train.loss, stored as "loss": "mse", or "mve" (regression: the
            model has 2T outputs, T standardized means then T variance parameters;
            molsam.train.losses.split_mve). Checkpoints written before it lack the key and
            mean "mse" (checkpoint_loss).
        calibration: post-hoc calibration fitted on held-out molecules
            (molsam.train.calibration), builtins only, stored as "calibration" (None: none
            fitted; checkpoints written before it lack the key).
    """
    if task not in TASKS:
        raise ValueError(f"task: {task!r} is not one of {', '.join(TASKS)}")
    target_names = [str(t) for t in target_names]
    if (task == "multiclass") != (classes is not None):
        raise ValueError("classes: needed for multiclass and only there")
    if classes is not None:
        classes = [[str(c) for c in names] for names in classes]
        if len(classes) != len(target_names):
            raise ValueError(f"classes: {len(classes)} lists for {len(target_names)} targets")
    if loss not in LOSSES:
        raise ValueError(f"loss: {loss!r} is not one of {', '.join(LOSSES)}")
    if loss != "mse" and task != "regression":
        raise ValueError(f"loss: {loss!r} is for regression, not {task}")
    if classes is None and len(target_names) * outputs_per_target(loss) != model.num_tasks:
        raise ValueError(
            f"target_names: {len(target_names)} names for a model with {model.num_tasks} outputs"
            + (" (loss mve: 2 per target)" if loss == "mve" else "")
        )
    if classes is not None and sum(map(len, classes)) != model.num_tasks:
        raise ValueError(
            f"classes: {sum(map(len, classes))} classes in all for a model with "
            f"{model.num_tasks} outputs"
        )
    if scaler is not None:
        scaler = {
            "mean": [float(x) for x in np.asarray(scaler["mean"], dtype=np.float64).ravel()],
            "std": [float(x) for x in np.asarray(scaler["std"], dtype=np.float64).ravel()],
        }
        if len(scaler["mean"]) != len(target_names) or len(scaler["std"]) != len(target_names):
            raise ValueError(f"scaler: needs {len(target_names)} means and stds")
    if isinstance(recipe, Recipe) or dataclasses.is_dataclass(recipe):
        recipe = recipe_to_dict(recipe)  # type: ignore[arg-type]
    state = OrderedDict((k, v.detach().cpu()) for k, v in model.state_dict().items())
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": model.config(),
        "model_state": state,
        "featurizer": featurizer_spec(*featurizer_options(model)),
        "target_names": target_names,
        "task": task,
        "classes": classes,
        "scaler": scaler,
        "loss": loss,
        "calibration": calibration,
        "recipe": _plain_copy(recipe),
        "split_seed": int(split_seed),
        "seed": int(seed),
        "epoch": int(epoch),
        "best_metric": None if best_metric is None else float(best_metric),
        "metric": metric,
        "training_state": training,
        "versions": versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


# --------------------------------------------------------------------------- using


def checkpoint_loss(ckpt: dict) -> str:
    """The loss a checkpoint's model was trained with: "mse" (also for checkpoints written
    before the key existed, and for classification) or "mve"."""
    return ckpt.get("loss") or "mse"


def write_calibration(path: str | Path, calibration: dict | None) -> dict:
    """Set a checkpoint file's "calibration" (molsam.train.calibration) and rewrite the file
    atomically (save_checkpoint): every other key stays as it was. Returns the new payload."""
    ckpt = load_checkpoint(path)
    ckpt["calibration"] = calibration
    save_checkpoint(path, ckpt)
    return ckpt


def write_domain(path: str | Path, domain: dict | None) -> dict:
    """Set a checkpoint file's "domain" and rewrite the file atomically (save_checkpoint): every
    other key stays as it was. Returns the new payload.

    domain: the training split's Morgan fingerprints (radius 2, 2048 bits) packed 8 bits a
    byte, molsam.uncertainty.domain.Fingerprints.to_dict() (builtins and `bytes`: 256 bytes
    a molecule plus one bit for its validity, which torch.load(weights_only=True) reads), or
    None. `molsam train` stores it in best.pt at the end of each replicate
    (molsam.train.loop); `molsam predict` measures each molecule's similarity to it
    (applicability domain). Checkpoints written before it lack the key."""
    ckpt = load_checkpoint(path)
    ckpt["domain"] = domain
    save_checkpoint(path, ckpt)
    return ckpt


def feature_spec_matches(ckpt: dict) -> bool:
    """True when the checkpoint's featurizer spec equals this molsam's featurizer."""
    spec = ckpt.get("featurizer")
    if not isinstance(spec, dict) or "rwse_steps" not in spec:
        return False
    return spec == featurizer_spec(spec["rwse_steps"], spec_extras(spec))


def check_feature_spec(ckpt: dict) -> None:
    """Raise CheckpointError unless the checkpoint's featurizer matches the current one: codes
    from a different featurizer would feed the embeddings wrong rows, silently."""
    spec = ckpt.get("featurizer")
    if not isinstance(spec, dict) or "rwse_steps" not in spec:
        raise CheckpointError("checkpoint has no featurizer spec; it cannot be used for prediction")
    if spec.get("version") != FEATURIZER_VERSION:
        raise CheckpointError(
            f"checkpoint was featurized with featurizer version {spec.get('version')}, this "
            f"molsam {molsam.__version__} has version {FEATURIZER_VERSION}: retrain the model "
            f"or use the molsam version that made it ({ckpt.get('versions', {}).get('molsam')})"
        )
    try:
        current = featurizer_spec(spec["rwse_steps"], spec_extras(spec))
    except ValueError as exc:  # extras this molsam does not know
        raise CheckpointError(f"checkpoint featurizer: {exc}") from None
    for key in current:
        if spec.get(key) != current[key]:
            raise CheckpointError(
                f"checkpoint featurizer differs from this molsam's in {key!r}: "
                f"{spec.get(key)} vs {current[key]}"
            )


def model_from_checkpoint(
    ckpt: dict, device: str | torch.device | None = None
) -> torch.nn.Module:
    """Rebuild the model (GPS or CoMPT) from its config, load its weights, put it in eval mode.

    Raises:
        CheckpointError: featurizer mismatch, or a config/weights pair that does not fit.
    """
    check_feature_spec(ckpt)
    try:
        model = build_model(ckpt["model_config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint model config is invalid: {exc}") from None
    steps, extras = featurizer_options(model)
    if (steps, sorted(extras)) != (ckpt["featurizer"]["rwse_steps"],
                                   sorted(spec_extras(ckpt["featurizer"]))):
        raise CheckpointError(
            f"checkpoint model expects pe_steps={model.pe_steps} and featurizer extras "
            f"{list(featurizer_options(model)[1])} but its featurizer made "
            f"rwse_steps={ckpt['featurizer']['rwse_steps']} with extras "
            f"{list(spec_extras(ckpt['featurizer']))}"
        )
    try:
        model.load_state_dict(ckpt["model_state"])
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:300]
        raise CheckpointError(f"checkpoint weights do not fit its model config: {first}") from None
    if device is not None:
        model.to(device)
    return model.eval()
