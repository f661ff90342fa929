"""Recipes: YAML files checked against a typed schema of frozen dataclasses.

A recipe can be as short as::

    data: {path: my.csv}

Every other key has a default (the fully resolved recipe is saved next to each run). Unknown keys,
wrong types and bad values are rejected before any work starts, as a one-line ConfigError naming
the dotted key, the value and the valid choices::

    optim.rhoo: unknown key (did you mean 'rho'?)
    train.device: 'gpu' is not one of auto, cpu, cuda

`apply_overrides` implements the CLI's `--set optim.rho=0.01` (values parsed as YAML).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import tempfile
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import yaml

from molsam.errors import ConfigError

SPLIT_METHODS = ("scaffold", "scaffold_balanced", "scaffold_random", "random", "column", "file")
TASKS = ("classification", "regression", "multiclass")
POOLINGS = ("mean", "sum", "attention")  # same as molsam.models.gps.POOLINGS (no torch import here)
OPTIMIZERS = ("adam", "sam", "asam", "graphsam", "samk", "looksam", "aesam", "rst")
SCHEDULES = ("noam", "constant")
#: rho over epochs: "step" is GraphSAM's gradient-ball decay rho * gamma^(epoch // rho_every);
#: "constant" keeps rho; "auto" is "step" for graphsam (the paper's) and "constant" for every
#: other optimizer (the baselines' own papers use a constant radius).
RHO_SCHEDULES = ("auto", "step", "constant")
#: which parameters a sharpness-aware optimizer perturbs: "all", or "weights": the matrices of
#: linear layers only (no biases, LayerNorm parameters or embedding tables).
PERTURB = ("all", "weights")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
CLASSIFICATION_METRICS = ("roc_auc", "prc_auc", "accuracy")
REGRESSION_METRICS = ("rmse", "mae", "r2")
MULTICLASS_METRICS = ("cross_entropy", "accuracy", "balanced_accuracy", "roc_auc", "macro_f1")
METRICS = tuple(dict.fromkeys(CLASSIFICATION_METRICS + REGRESSION_METRICS + MULTICLASS_METRICS))
TASK_METRICS = {
    "classification": CLASSIFICATION_METRICS,
    "regression": REGRESSION_METRICS,
    "multiclass": MULTICLASS_METRICS,
}

Check = Callable[[str, Any], Any]


# --------------------------------------------------------------------------- value checkers
# Each checker takes (dotted key, raw value) and returns the normalized value or raises
# ConfigError. They are composed in the dataclass field metadata below.


def _show(value: Any) -> str:
    return repr(value)


def _fail(key: str, message: str) -> ConfigError:
    return ConfigError(f"{key}: {message}")


def _is_number(value: Any) -> bool:
    # bool is an int subclass in Python; `dropout: true` is a mistake, not 1.0.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def number(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> Check:
    """A finite float (ints accepted) in [low, high]; `*_open` excludes the bound."""

    def check(key: str, value: Any) -> float:
        if not _is_number(value):
            raise _fail(key, f"expected a number, got {_show(value)}")
        raw, value = value, float(value)
        if not math.isfinite(value):
            raise _fail(key, f"expected a finite number, got {_show(value)}")
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            if high is None:
                wanted = f"> {low:g}" if low_open else f">= {low:g}"
            else:
                lo = "-inf" if low is None else f"{low:g}"
                wanted = f"in {'(' if low_open else '['}{lo}, {high:g}{')' if high_open else ']'}"
            raise _fail(key, f"expected a number {wanted}, got {_show(raw)}")
        return value

    return check


def integer(low: int | None = None) -> Check:
    """An int (not a bool, not a float) >= low."""

    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(key, f"expected an integer, got {_show(value)}")
        if low is not None and value < low:
            raise _fail(key, f"expected an integer >= {low}, got {value}")
        return value

    return check


def string(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _fail(key, f"expected a string, got {_show(value)}")
    if not value.strip():
        raise _fail(key, "expected a non-empty string, got ''")
    return value


def boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(key, f"expected true or false, got {_show(value)}")
    return value


def auto_or_boolean(key: str, value: Any) -> str | bool:
    if value == "auto" or isinstance(value, bool):
        return value
    raise _fail(key, f"{_show(value)} is not one of auto, true, false")


def choice(choices: tuple[str, ...]) -> Check:
    def check(key: str, value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise _fail(key, f"{_show(value)} is not one of {', '.join(choices)}")
        return value

    return check


def optional(inner: Check) -> Check:
    def check(key: str, value: Any) -> Any:
        return None if value is None else inner(key, value)

    return check


def list_of(inner: Check, *, allow_scalar: bool = False, unique: bool = False) -> Check:
    """A non-empty list checked item by item (items named key[i]); returned as a tuple."""

    def check(key: str, value: Any) -> tuple:
        if allow_scalar and not isinstance(value, (list, tuple)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise _fail(key, f"expected a list, got {_show(value)}")
        if not value:
            raise _fail(key, "expected a non-empty list, got []")
        items = tuple(inner(f"{key}[{i}]", item) for i, item in enumerate(value))
        if unique and len(set(items)) != len(items):
            dupes = sorted({x for x in items if items.count(x) > 1}, key=str)
            raise _fail(key, f"duplicate entries {dupes} in {list(items)}")
        return items

    return check


def mapping(key: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise _fail(key, f"expected a mapping, got {_show(value)}")
    for k in value:
        if not isinstance(k, str):
            raise _fail(key, f"keys must be strings, got {_show(k)}")
    return dict(value)


def split_sizes(key: str, value: Any) -> tuple[float, float, float]:
    sizes = list_of(number(0.0, 1.0))(key, value)
    if len(sizes) != 3:
        raise _fail(key, f"expected 3 fractions [train, val, test], got {list(value)}")
    if abs(sum(sizes) - 1.0) > 1e-6:
        raise _fail(key, f"must sum to 1, got {list(value)}")
    return sizes  # type: ignore[return-value]


def _spec(check: Check, default: Any = MISSING, **kwargs: Any) -> Any:
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"check": check})
    return field(default=default, metadata={"check": check}, **kwargs)


# --------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class DataConfig:
    """Where the molecules are. `path`: a CSV file or a named dataset (e.g. `bbbp`).

    target_columns None means inferred (molsam.data.targets: numeric or class-label columns, ID and
    name columns never, an error listing the candidates where it cannot tell); a single
    string is accepted as a one-column list. task None means inferred from the labels
    (molsam.data.targets): classification for 0/1 numbers, regression for other numbers,
    multiclass for text labels (classes sorted; `multiclass` also makes integer labels classes).
    """

    path: str = _spec(string)
    smiles_column: str = _spec(string, "smiles")
    target_columns: tuple[str, ...] | None = _spec(
        optional(list_of(string, allow_scalar=True, unique=True)), None
    )
    id_column: str | None = _spec(optional(string), None)
    task: str | None = _spec(optional(choice(TASKS)), None)


@dataclass(frozen=True)
class SplitConfig:
    """How rows are split into train/val/test (see DESIGN.md for the three scaffold variants)."""

    method: str = _spec(choice(SPLIT_METHODS), "scaffold")
    sizes: tuple[float, float, float] = _spec(split_sizes, (0.8, 0.1, 0.1))
    seed: int = _spec(integer(0), 0)
    column: str | None = _spec(optional(string), None)
    file: str | None = _spec(optional(string), None)


@dataclass(frozen=True)
class ModelConfig:
    """GPSModel arguments (molsam.models.gps); defaults equal GPSModel's."""

    hidden: int = _spec(integer(1), 64)
    layers: int = _spec(integer(1), 3)
    heads: int = _spec(integer(1), 4)
    dropout: float = _spec(number(0.0, 1.0, high_open=True), 0.1)
    pe_steps: int = _spec(integer(0), 16)
    pooling: str = _spec(choice(POOLINGS), "mean")
    attn_dropout: float = _spec(number(0.0, 1.0, high_open=True), 0.0)


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and schedules (docs/GRAPHSAM.md). `lr` is the peak learning rate of the Noam
    schedule (warm-up from init_lr over warmup_epochs, then exponential decay to final_lr).
    `extra` passes algorithm-specific keyword arguments through unchanged."""

    name: str = _spec(choice(OPTIMIZERS), "graphsam")
    lr: float = _spec(number(0.0, low_open=True), 1e-3)
    init_lr: float = _spec(number(0.0, low_open=True), 1e-4)
    final_lr: float = _spec(number(0.0, low_open=True), 1e-4)
    warmup_epochs: float = _spec(number(0.0), 2.0)
    schedule: str = _spec(choice(SCHEDULES), "noam")
    weight_decay: float = _spec(number(0.0), 0.0)
    rho: float = _spec(number(0.0), 0.05)
    beta: float = _spec(number(0.0, 1.0), 0.99)
    gamma: float = _spec(number(0.0, 1.0, low_open=True), 0.5)
    rho_every: int = _spec(integer(1), 1)
    rho_schedule: str = _spec(choice(RHO_SCHEDULES), "auto")
    perturb: str = _spec(choice(PERTURB), "all")
    reanchor_every: int = _spec(integer(1), 1)
    k: int | None = _spec(optional(integer(1)), None)
    alpha: float | None = _spec(optional(number()), None)
    extra: dict = _spec(mapping, {})


@dataclass(frozen=True)
class TrainConfig:
    """Training loop. metric None means roc_auc for classification, rmse for regression,
    cross_entropy for multiclass.
    workers: featurization processes (None: all cores). threads: torch intra-op threads on the
    CPU (None: molsam.devices.DEFAULT_CPU_THREADS, measured fastest for molsam's models).
    log_sam_cosine: GraphSAM only; every step also computes the exact SAM perturbation gradient
    (one extra pass, excluded from the timing) and logs its cosine with GraphSAM's estimate and
    both norms to metrics.csv (the paper's Fig. 3 diagnostic). Training follows the same path
    with or without it.
    deterministic: bitwise-repeatable runs on CUDA too (torch.use_deterministic_algorithms and
    CUBLAS_WORKSPACE_CONFIG while training; slower on a GPU, no effect on the CPU, which is
    deterministic anyway).
    static_shapes: pad batches to bucketed shapes and, on CUDA, replay each shape's whole step
    as one captured CUDA graph (molsam.train.static); auto = on for CUDA, off on the CPU.
    sort_by_size: batch molecules of similar size together (less attention padding; changes
    which molecules share a batch, so results differ from an unsorted run)."""

    epochs: int = _spec(integer(1), 30)
    batch_size: int = _spec(integer(1), 32)
    patience: int | None = _spec(optional(integer(1)), None)
    seeds: tuple[int, ...] = _spec(list_of(integer(0), unique=True), (0,))
    device: str = _spec(choice(DEVICES), "auto")
    precision: str = _spec(choice(PRECISIONS), "auto")
    metric: str | None = _spec(optional(choice(METRICS)), None)
    log_every: int = _spec(integer(1), 50)
    workers: int | None = _spec(optional(integer(0)), None)
    threads: int | None = _spec(optional(integer(1)), None)
    log_sam_cosine: bool = _spec(boolean, False)
    deterministic: bool = _spec(boolean, False)
    static_shapes: str | bool = _spec(auto_or_boolean, "auto")
    sort_by_size: bool = _spec(boolean, False)


@dataclass(frozen=True)
class Recipe:
    """A whole recipe. Build with `load_recipe` or `recipe_from_dict`, which validate."""

    data: DataConfig
    split: SplitConfig = field(default_factory=SplitConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    #: `molsam tune`'s search space (None: molsam.tune.DEFAULT_SPACE); `molsam train` ignores it.
    tune: dict | None = None


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "split": SplitConfig,
    "model": ModelConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
}


# --------------------------------------------------------------------------- tune: search space


@dataclass(frozen=True)
class SearchRange:
    """A numeric range searched for one recipe key (Optuna's suggest_int / suggest_float).

    `integer` is not written by users: it follows the key's type (model.layers is an int).
    `step` quantizes the range; `log` samples it on a log scale (the two exclude each other).
    """

    low: float
    high: float
    log: bool = False
    step: float | None = None
    integer: bool = False


@dataclass(frozen=True)
class SearchChoices:
    """A list of values searched for one recipe key (Optuna's suggest_categorical)."""

    choices: tuple


#: Sections and keys a search never changes: the split and the objective stay fixed so that every
#: trial is scored on the same validation molecules by the same metric (and test stays unseen).
TUNE_FIXED = ("data", "split", "train.metric", "train.seeds")
RANGE_KEYS = ("low", "high", "log", "step")


def tunable_keys() -> list[str]:
    """Every dotted recipe key a `tune:` section may search."""
    return [
        f"{section}.{f.name}"
        for section, cls in SECTIONS.items()
        if section not in TUNE_FIXED
        for f in fields(cls)
        if f"{section}.{f.name}" not in TUNE_FIXED
    ]


def _tune_field(where: str, key: Any) -> Any:
    """The dataclass field a tune key names (`optim.rho` -> OptimConfig.rho), or a ConfigError."""
    parts = key.split(".") if isinstance(key, str) else []
    if len(parts) == 2 and parts[0] in SECTIONS:
        names = {f.name: f for f in fields(SECTIONS[parts[0]])}
        if parts[1] in names:
            if parts[0] in TUNE_FIXED or key in TUNE_FIXED:
                raise _fail(where, "cannot be searched (data, split, train.metric and train.seeds "
                                   "stay fixed so that every trial is scored on the same validation set)")
            return names[parts[1]]
    raise _unknown_key(where, str(key), tunable_keys())


def _field_kind(f: Any) -> str | None:
    """'int' or 'float' for a numeric key (from its annotation), else None."""
    kinds = set(re.findall(r"\b(int|float|tuple|dict|str|bool)\b", str(f.type)))
    if kinds == {"int"}:
        return "int"
    if kinds == {"float"}:
        return "float"
    return None


def _search_choices(where: str, value: list, check: Check) -> SearchChoices:
    if not value:
        raise _fail(where, "expected a non-empty list of choices, got []")
    items = []
    for i, item in enumerate(value):
        if item is not None and not isinstance(item, (bool, int, float, str)):
            raise _fail(f"{where}[{i}]", f"a choice must be a single value, got {_show(item)}")
        items.append(check(f"{where}[{i}]", item))
    if len(set(items)) != len(items):
        raise _fail(where, f"duplicate choices in {list(value)}")
    return SearchChoices(tuple(items))


def _search_range(where: str, value: dict, f: Any) -> SearchRange:
    for name in value:
        if name not in RANGE_KEYS:
            raise _unknown_key(f"{where}.{name}", str(name), list(RANGE_KEYS))
    kind = _field_kind(f)
    if kind is None:
        raise _fail(where, f"{_show(value)}: a range needs a numeric key; give a list of choices")
    check = f.metadata["check"]
    bounds = {}
    for name in ("low", "high"):
        if name not in value:
            raise _fail(f"{where}.{name}", "required key is missing (e.g. {low: 0.01, high: 0.1})")
        if value[name] is None:
            raise _fail(f"{where}.{name}", f"expected a number, got None")
        bounds[name] = check(f"{where}.{name}", value[name])
    low, high = bounds["low"], bounds["high"]
    if low > high:
        raise _fail(where, f"low {value['low']!r} is above high {value['high']!r}")
    log = value.get("log", False)
    if not isinstance(log, bool):
        raise _fail(f"{where}.log", f"expected true or false, got {_show(log)}")
    step = value.get("step")
    if step is not None:
        step_check = integer(1) if kind == "int" else number(0.0, low_open=True)
        step = step_check(f"{where}.step", step)
        if log:
            raise _fail(where, "log and step cannot be combined")
    if log and low <= 0:
        raise _fail(f"{where}.low", f"a log range needs low > 0, got {value['low']!r}")
    return SearchRange(low, high, log, step, kind == "int")


def _build_tune(raw: Any) -> dict[str, SearchRange | SearchChoices] | None:
    """The `tune:` section: {dotted recipe key: {low, high[, log][, step]} or [choices]}."""
    if raw is None:
        return None
    raw = mapping("tune", raw)
    if not raw:
        raise _fail("tune", "expected recipe keys to search, got {} (leave tune out for the "
                            "default space)")
    space: dict[str, SearchRange | SearchChoices] = {}
    for key, value in raw.items():
        where = f"tune.{key}"
        f = _tune_field(where, key)
        if isinstance(value, (list, tuple)):
            space[key] = _search_choices(where, list(value), f.metadata["check"])
        elif isinstance(value, dict):
            space[key] = _search_range(where, value, f)
        else:
            raise _fail(where, f"expected {{low: ..., high: ...}} or a list of choices, "
                               f"got {_show(value)}")
    return space


def tune_to_dict(space: dict[str, SearchRange | SearchChoices]) -> dict:
    """A search space as plain builtins (the form a `tune:` section is written in)."""
    out: dict = {}
    for key, spec in space.items():
        if isinstance(spec, SearchChoices):
            out[key] = list(spec.choices)
        else:
            out[key] = {"low": spec.low, "high": spec.high, "log": spec.log, "step": spec.step}
    return out


# --------------------------------------------------------------------------- YAML


#: Most values a recipe may hold once its aliases are expanded (a real recipe has ~50; a suite a
#: few hundred). Far above any honest use, far below what makes copying the parsed tree hang.
MAX_YAML_VALUES = 100_000


class _RecipeLoader(yaml.SafeLoader):
    """SafeLoader that reads `1e-3` as a float (YAML 1.1 wants `1.0e-3`), refuses duplicate
    keys (plain YAML keeps the last one silently, hiding typos in long recipes) and refuses a
    document whose aliases expand it beyond MAX_YAML_VALUES values (an alias bomb: a few lines
    that, copied or validated value by value, never finish)."""

    def compose_document(self) -> yaml.Node:
        node = super().compose_document()
        _check_expanded_size(node)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _check_expanded_size(root: yaml.Node) -> None:
    """Count the values `root` holds with every alias expanded, without expanding anything:
    a node reached through several aliases is one object, so its size is computed once."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            if known < 0:  # still being counted: the node contains an alias to itself
                raise yaml.composer.ComposerError(
                    None, None, "a recursive alias (a value that contains itself)",
                    node.start_mark)
            return known
        sizes[id(node)] = -1
        total = 1
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        else:
            children = []
        for child in children:
            total += size(child)
            if total > MAX_YAML_VALUES:
                raise yaml.composer.ComposerError(
                    None, None,
                    f"aliases expand this document beyond {MAX_YAML_VALUES} values (an alias "
                    "bomb?); write the values out instead", node.start_mark)
        sizes[id(node)] = total
        return total

    if root is not None:
        size(root)


_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f":{mark.line + 1}:{mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}{where}: invalid YAML: {' '.join(str(problem).split())}") from None


# --------------------------------------------------------------------------- building


def _unknown_key(key: str, name: str, valid: list[str]) -> ConfigError:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(valid)}"
    return ConfigError(f"{key}: unknown key ({hint})")


def _build_section(cls: type, section: str, raw: Any) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise _fail(section, f"expected a mapping, got {_show(raw)}")
    names = [f.name for f in fields(cls)]
    for key in raw:
        if key not in names:
            raise _unknown_key(f"{section}.{key}", str(key), names)
    values = {}
    for f in fields(cls):
        key = f"{section}.{f.name}"
        if f.name in raw:
            values[f.name] = f.metadata["check"](key, raw[f.name])
        elif f.default is MISSING and f.default_factory is MISSING:
            raise _fail(key, f"required key is missing (e.g. {section}: {{{f.name}: ...}})")
    return cls(**values)


def _check_consistency(recipe: Recipe) -> None:
    model, split, data, train = recipe.model, recipe.split, recipe.data, recipe.train
    if model.hidden % model.heads != 0:
        valid = [h for h in range(1, model.hidden + 1) if model.hidden % h == 0]
        raise _fail(
            "model.heads",
            f"{model.heads} does not divide model.hidden={model.hidden}; valid: "
            f"{', '.join(map(str, valid))}",
        )
    if train.log_sam_cosine and recipe.optim.name != "graphsam":
        raise _fail("train.log_sam_cosine", f"only graphsam has an estimate to compare with "
                    f"SAM's direction (optim.name is {recipe.optim.name!r})")
    for method in ("column", "file"):
        if split.method == method and getattr(split, method) is None:
            raise _fail(f"split.{method}", f"required when split.method is {method!r}")
    if train.metric is not None and data.task is not None:
        valid = TASK_METRICS[data.task]
        if train.metric not in valid:
            raise _fail(
                "train.metric",
                f"{train.metric!r} does not apply to {data.task}; valid: {', '.join(valid)}",
            )


def _resolve_data_path(path: str, base_dir: Path | None) -> str:
    # Only resolve when the joined path exists: a bare dataset name ("bbbp") stays a name.
    if base_dir is None or os.path.isabs(path):
        return path
    joined = base_dir / path
    return str(joined.resolve()) if joined.exists() else path


def recipe_from_dict(
    d: dict, source: str = "<recipe>", *, base_dir: str | Path | None = None
) -> Recipe:
    """Validate a recipe mapping (as parsed from YAML) and return a Recipe.

    Args:
        d: {section: {key: value}}; missing sections and keys take their defaults.
        source: names the recipe in messages about its overall shape.
        base_dir: folder that a relative `data.path` is resolved against, when the joined path
            exists (load_recipe passes the recipe file's folder).

    Raises:
        ConfigError: one line naming the dotted key, the value and the valid choices.
    """
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: a recipe must be a mapping of sections, got {_show(d)}")
    for key in d:
        if key not in SECTIONS and key != "tune":
            raise _unknown_key(str(key), str(key), [*SECTIONS, "tune"])
    if d.get("data") is None:
        raise _fail("data.path", "required key is missing (e.g. data: {path: my.csv})")
    sections = {name: _build_section(cls, name, d.get(name)) for name, cls in SECTIONS.items()}
    data = sections["data"]
    resolved = _resolve_data_path(data.path, None if base_dir is None else Path(base_dir))
    if resolved != data.path:
        sections["data"] = dataclasses.replace(data, path=resolved)
    recipe = Recipe(**sections, tune=_build_tune(d.get("tune")))
    _check_consistency(recipe)
    return recipe


def read_yaml_file(path: str | Path, what: str = "recipe") -> Any:
    """Parse a YAML file (numbers like 1e-3 as floats, duplicate keys refused); one-line
    ConfigErrors name the file, and the line and column of a syntax error."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read {what} ({exc})") from None
    return _parse_yaml(text, str(path))


def load_recipe_dict(path: str | Path) -> dict:
    """Read a YAML recipe file into a mapping, unvalidated (apply --set overrides to it, then
    validate with recipe_from_dict)."""
    path = Path(path)
    raw = read_yaml_file(path, "recipe")
    if raw is None:
        raise ConfigError(f"{path}: recipe is empty (at least data: {{path: my.csv}} is needed)")
    return raw


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a YAML recipe. A relative data.path is resolved against the recipe's
    folder when that file exists there."""
    path = Path(path)
    return recipe_from_dict(load_recipe_dict(path), str(path), base_dir=path.parent)


# --------------------------------------------------------------------------- overrides


def _schema_check_path(parts: list[str], key: str) -> None:
    """Reject unknown sections and keys at once, with a suggestion (deeper levels are free-form
    only inside mapping-valued keys such as optim.extra)."""
    section = parts[0]
    if section == "tune":
        return  # the tune section is checked as a whole by recipe_from_dict
    if section not in SECTIONS:
        raise _unknown_key(section, section, [*SECTIONS, "tune"])
    if len(parts) == 1:
        return
    names = {f.name: f for f in fields(SECTIONS[section])}
    if parts[1] not in names:
        raise _unknown_key(f"{section}.{parts[1]}", parts[1], list(names))
    if len(parts) > 2 and names[parts[1]].metadata["check"] is not mapping:
        raise _fail(key, f"{section}.{parts[1]} is not a mapping, so it has no key {parts[2]!r}")


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    """Apply `KEY=VALUE` overrides (the CLI's --set) to a recipe mapping; returns a new dict.

    KEY is dotted (`optim.rho`, `optim.extra.c0`); VALUE is parsed as YAML, so `0.01` is a
    number, `[a, b]` a list, `null` None and `'1'` a string. The input is not modified.

    Raises:
        ConfigError: malformed override, unknown key (with a suggestion) or invalid YAML value.
    """
    out = _deep_copy(d)
    for text in overrides:
        key, sep, value_text = text.partition("=")
        key = key.strip()
        parts = key.split(".")
        if not sep or not key or any(not p for p in parts):
            raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. optim.rho=0.01")
        _schema_check_path(parts, key)
        if parts[0] == "tune" and len(parts) > 2:
            # tune keys are themselves dotted: tune.optim.rho.high -> tune["optim.rho"]["high"]
            parts = ["tune", ".".join(parts[1:3]), *parts[3:]]
        value = _parse_yaml(value_text, f"--set {key}")
        node = out
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise _fail(key, f"{where} is {_show(child)}, not a mapping")
            node = child
        node[parts[-1]] = value
    return out


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


# --------------------------------------------------------------------------- saving


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _section_to_dict(section: Any) -> dict:
    """One section as a dict of plain builtins (tuples become lists)."""
    return {f.name: _plain(getattr(section, f.name)) for f in fields(section)}


def recipe_to_dict(recipe: Recipe) -> dict:
    """The fully resolved recipe as plain builtins: `recipe_from_dict(recipe_to_dict(r)) == r`.
    A `tune:` section is included only when the recipe has one."""
    out = {name: _section_to_dict(getattr(recipe, name)) for name in SECTIONS}
    if recipe.tune is not None:
        out["tune"] = tune_to_dict(recipe.tune)
    return out


def save_recipe(recipe: Recipe, path: str | Path) -> None:
    """Write the fully resolved recipe as YAML (atomically: temp file + rename)."""
    path = Path(path)
    text = yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False, default_flow_style=None)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
