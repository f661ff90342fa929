"""Recipes: YAML files checked against a schema of frozen pydantic v2 models.

A recipe can be as short as::

    data: {path: my.csv}

Every other key has a default (the fully resolved recipe is saved next to each run). Unknown keys,
wrong types and bad values are rejected before any work starts (pydantic validates; `extra=forbid`
refuses unknown keys), and the first problem becomes a one-line ConfigError naming the dotted key,
the value and the valid choices::

    optim.rhoo: unknown key (did you mean 'rho'?)
    train.device: 'gpu' is not one of auto, cpu, cuda

`recipe_json_schema()` is the same schema as JSON Schema (`molsam recipe schema`), for editors.
`apply_overrides` implements the CLI's `--set optim.rho=0.01` (values parsed as YAML).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tempfile
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from annotated_types import Ge, Gt, Le, Lt, MinLen
from pydantic import (
    AfterValidator,
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Strict,
    Tag,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    WrapValidator,
    create_model,
    model_validator,
)
from pydantic_core import PydanticCustomError

from molsam.errors import ConfigError

SPLIT_METHODS = ("scaffold", "scaffold_balanced", "scaffold_random", "random", "column", "file")
TASKS = ("classification", "regression", "multiclass")
POOLINGS = ("mean", "sum", "attention")  # same as molsam.models.gps.POOLINGS (no torch import here)
#: model.name: "gps" (molsam.models.gps, the default) or "compt" (molsam.models.compt).
MODEL_NAMES = ("gps", "compt")
#: Poolings of each model (CoMPT: the reference's GRU readout, or a mean).
MODEL_POOLINGS = {"gps": POOLINGS, "compt": ("gru", "mean")}
#: Keys only CoMPT reads, and its distance kernels and norms (molsam.models.compt).
COMPT_KEYS = ("kernel", "norm", "head_layers")
COMPT_KERNELS = ("exp", "softmax")
COMPT_NORMS = ("layer", "scale")
#: model.mol_features: molecule-level features joined before the head (molsam.chem.descriptors).
MOL_FEATURES = ("rdkit2d", "morgan_count")
OPTIMIZERS = ("adam", "sam", "asam", "graphsam", "samk", "looksam", "aesam", "rst")
#: "transformer": Vaswani et al.'s warm-up schedule, which the GraphSAM reference code gives its
#: Adam baseline (molsam.optim.schedules.TransformerLR).
SCHEDULES = ("noam", "constant", "transformer")
#: GraphSAM's perturbation: "paper" (the paper's equations) or "reference" (the reference code's
#: arithmetic, to reproduce and attribute its numbers; molsam.optim.graphsam_reference).
GRAPHSAM_VARIANTS = ("paper", "reference")
#: train.loss_weighting: "loss" back-propagates with the loss as weight (L * grad L), as the
#: GraphSAM reference code's closures do.
LOSS_WEIGHTINGS = ("none", "loss")
#: train.freeze when fine-tuning (molsam.train.finetune).
FREEZE = ("none", "encoder", "embeddings")
#: train.loss (same as molsam.train.losses.LOSSES; no torch import here): "mse" on standardized
#: targets, or "mve": a mean and a variance per regression target trained with the Gaussian NLL.
LOSSES = ("mse", "mve")
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


# --------------------------------------------------------------------------- value types
# Strict numbers: `dropout: true` is a mistake, not 1.0, and `epochs: 2.5` is not 2. Ints are
# accepted where a float is expected (and become floats). Bounds are annotated_types metadata, so
# pydantic checks them, the JSON Schema shows them, and error messages quote them.


def Number(  # noqa: N802 - a type factory, named like the types it returns
    ge: float | None = None, gt: float | None = None, le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A finite float (ints accepted) within the given bounds."""
    bounds = [b for b in (Ge(ge) if ge is not None else None, Gt(gt) if gt is not None else None,
                          Le(le) if le is not None else None, Lt(lt) if lt is not None else None)
              if b is not None]
    return Annotated[float, Strict(), AllowInfNan(False), *bounds]


def Integer(ge: int | None = None) -> Any:  # noqa: N802
    """An int (not a bool, not a float) >= ge."""
    return Annotated[int, Strict(), *([Ge(ge)] if ge is not None else [])]


def Choice(choices: tuple[str, ...]) -> Any:  # noqa: N802
    return Literal[choices]  # type: ignore[valid-type]


def _unique(values: tuple) -> tuple:
    dupes = sorted({x for x in values if values.count(x) > 1}, key=str)
    if dupes:
        raise PydanticCustomError("molsam", "{message}",
                                  {"message": f"duplicate entries {dupes} in {list(values)}"})
    return values


def _scalar_to_list(value: Any) -> Any:
    return value if isinstance(value, (list, tuple)) else [value]


def _split_sizes(value: Any, handler: Any) -> tuple:
    sizes = handler(value)  # each item checked first; messages quote the values as written
    if len(sizes) != 3:
        raise PydanticCustomError("molsam", "{message}", {
            "message": f"expected 3 fractions [train, val, test], got {list(value)}"})
    if abs(sum(sizes) - 1.0) > 1e-6:
        raise PydanticCustomError("molsam", "{message}", {"message": f"must sum to 1, got {list(value)}"})
    return sizes


def _auto_or_bool(value: Any, handler: Any) -> Any:
    if value == "auto" or isinstance(value, bool):
        return handler(value)
    raise PydanticCustomError("molsam", "{message}",
                              {"message": f"{value!r} is not one of auto, true, false"})


Text = Annotated[str, Strict(), Field(pattern=r"\S")]
AutoOrBool = Annotated[Union[Literal["auto"], Annotated[bool, Strict()]], WrapValidator(_auto_or_bool)]
Seeds = Annotated[tuple[Integer(0), ...], MinLen(1), AfterValidator(_unique),
                  Field(json_schema_extra={"uniqueItems": True})]
Columns = Annotated[tuple[Text, ...], MinLen(1), AfterValidator(_unique),
                    BeforeValidator(_scalar_to_list),
                    WithJsonSchema({"anyOf": [{"type": "string", "pattern": r"\S"}, {
                        "type": "array", "items": {"type": "string", "pattern": r"\S"},
                        "minItems": 1, "uniqueItems": True}]})]
Fractions = Annotated[tuple[Number(ge=0.0, le=1.0), ...], MinLen(1), WrapValidator(_split_sizes),
                      WithJsonSchema({"type": "array", "items": {"type": "number", "minimum": 0,
                                      "maximum": 1}, "minItems": 3, "maxItems": 3})]
Mapping = dict[Annotated[str, Strict()], Any]


class _Frozen(BaseModel):
    """Frozen, and unknown keys are errors. Assigning to a field raises FrozenInstanceError (an
    AttributeError, as for the frozen dataclasses recipes used to be)."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=False)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        # Callers written for the dataclass recipes keep working: dataclasses.fields, asdict and
        # replace (which calls cls(**changes), so a replaced recipe is validated again) see the
        # model's fields through a dataclass field table made by dataclasses itself.
        super().__pydantic_init_subclass__(**kwargs)
        table = dataclasses.make_dataclass(
            cls.__name__, [(name, Any, dataclasses.field(default=None)) for name in cls.model_fields],
            frozen=True)
        cls.__dataclass_fields__ = table.__dataclass_fields__  # type: ignore[attr-defined]

    def __setattr__(self, name: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}: recipes are frozen")

    def __delattr__(self, name: str) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}: recipes are frozen")


# --------------------------------------------------------------------------- schema


class DataConfig(_Frozen):
    """Where the molecules are. `path`: a CSV file or a named dataset (e.g. `bbbp`).

    target_columns None means inferred (molsam.data.targets: numeric or class-label columns, ID and
    name columns never, an error listing the candidates where it cannot tell); a single
    string is accepted as a one-column list. task None means inferred from the labels
    (molsam.data.targets): classification for 0/1 numbers, regression for other numbers,
    multiclass for text labels (classes sorted; `multiclass` also makes integer labels classes).

    delimiter, decimal: how a CSV/TSV file is split and its labels' decimal mark; None means
    detected from the header and first rows (molsam.data.dialect). sheet: the worksheet of an
    Excel workbook; None means the first (molsam.data.read_options).
    """

    path: Text
    smiles_column: Text = "smiles"
    target_columns: Columns | None = None
    id_column: Text | None = None
    task: Choice(TASKS) | None = None
    # Spellings of molsam.data.dialect.DELIMITER_NAMES and DECIMAL_NAMES (a tab: `tab`).
    delimiter: Choice((",", ";", "|", "tab", "\\t", "comma", "semicolon", "pipe")) | None = None
    decimal: Choice((".", ",", "point", "comma")) | None = None
    sheet: Text | None = None
    # Numeric columns of the file joined to the model's molecule-level features (e.g. an assay
    # temperature); predict and evaluate read the same columns from their input.
    feature_columns: Columns | None = None


class SplitConfig(_Frozen):
    """How rows are split into train/val/test (see DESIGN.md for the three scaffold variants)."""

    method: Choice(SPLIT_METHODS) = "scaffold"
    sizes: Fractions = (0.8, 0.1, 0.1)
    seed: Integer(0) = 0
    column: Text | None = None
    file: Text | None = None


class ModelConfig(_Frozen):
    """Model arguments; defaults equal GPSModel's (molsam.models.gps). `name: compt` selects
    CoMPT (molsam.models.compt), which also reads kernel, norm and head_layers and pools with
    `gru` or `mean`; it ignores pe_steps and attn_dropout."""

    name: Choice(MODEL_NAMES) = "gps"
    hidden: Integer(1) = 64
    layers: Integer(1) = 3
    heads: Integer(1) = 4
    dropout: Number(ge=0.0, lt=1.0) = 0.1
    pe_steps: Integer(0) = 16
    pooling: Choice(tuple(dict.fromkeys(POOLINGS + MODEL_POOLINGS["compt"]))) = "mean"
    attn_dropout: Number(ge=0.0, lt=1.0) = 0.0
    kernel: Choice(COMPT_KERNELS) = "exp"
    norm: Choice(COMPT_NORMS) = "layer"
    head_layers: Integer(1) = 2
    # rdkit2d: RDKit's 2-D descriptors; morgan_count: radius-2 Morgan counts (2,048 columns);
    # scaled on the training split and joined to the pooled graph representation.
    mol_features: tuple[Choice(MOL_FEATURES), ...] = ()


class OptimConfig(_Frozen):
    """Optimizer and schedules (docs/GRAPHSAM.md). `lr` is the peak learning rate of the Noam
    schedule (warm-up from init_lr over warmup_epochs, then exponential decay to final_lr).
    `extra` passes algorithm-specific keyword arguments through unchanged."""

    name: Choice(OPTIMIZERS) = "graphsam"
    lr: Number(gt=0.0) = 1e-3
    init_lr: Number(gt=0.0) = 1e-4
    final_lr: Number(gt=0.0) = 1e-4
    warmup_epochs: Number(ge=0.0) = 2.0
    schedule: Choice(SCHEDULES) = "noam"
    # Noam: epochs until final_lr is reached (then flat); None: train.epochs. The GraphSAM
    # reference code decays over 30 epochs and trains 150.
    decay_epochs: Integer(1) | None = None
    # Transformer schedule: lr = warmup_factor * hidden^-0.5 * min(t^-0.5, t * w^-1.5), t the
    # step (from 1), w = warmup_epochs * steps per epoch.
    warmup_factor: Number(gt=0.0) = 1.0
    weight_decay: Number(ge=0.0) = 0.0
    # Fine-tuning (train.init_from): the encoder's learning rate is lr * encoder_lr_scale.
    encoder_lr_scale: Number(gt=0.0) = 1.0
    # rho and rho_every: not the paper's 0.05 halved every epoch, which lost on bbbp's
    # validation (0.9487 against 0.9526, 5 seeds); rho 0.005 halved every 10 epochs had the best
    # GraphSAM validation score on 5 of the 6 paper datasets (docs/RESULTS.md, issue 9).
    rho: Number(ge=0.0) = 0.005
    beta: Number(ge=0.0, le=1.0) = 0.99
    gamma: Number(gt=0.0, le=1.0) = 0.5
    rho_every: Integer(1) = 10
    rho_schedule: Choice(RHO_SCHEDULES) = "auto"
    perturb: Choice(PERTURB) = "all"
    reanchor_every: Integer(1) = 1
    variant: Choice(GRAPHSAM_VARIANTS) = "paper"
    radius: Number(ge=0.0) = 0.05
    k: Integer(1) | None = None
    alpha: Number() | None = None
    extra: Mapping = Field(default_factory=dict)


class TrainConfig(_Frozen):
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
    which molecules share a batch, so results differ from an unsorted run).
    devices: processes `molsam train` launches through torchrun (one per GPU, or gloo processes
    on CPUs) when not already started by torchrun; batch_size is the global batch over them.
    loss: regression only. mse: squared error on standardized targets. mve: mean-variance
    estimation (Nix & Weigend 1994): the model predicts a mean and a variance per target and
    trains on their Gaussian negative log-likelihood; metrics and early stopping stay on the
    mean, and predictions carry a sigma."""

    epochs: Integer(1) = 30
    batch_size: Integer(1) = 32
    patience: Integer(1) | None = None
    seeds: Seeds = (0,)
    device: Choice(DEVICES) = "auto"
    precision: Choice(PRECISIONS) = "auto"
    metric: Choice(METRICS) | None = None
    log_every: Integer(1) = 50
    workers: Integer(0) | None = None
    threads: Integer(1) | None = None
    log_sam_cosine: Annotated[bool, Strict()] = False
    deterministic: Annotated[bool, Strict()] = False
    static_shapes: AutoOrBool = "auto"
    sort_by_size: Annotated[bool, Strict()] = False
    devices: Integer(1) = 1
    loss_weighting: Choice(LOSS_WEIGHTINGS) = "none"
    # Fine-tuning: start from a trained model's encoder (a checkpoint, or a run directory: the
    # replicate with the same seed); freeze none, the encoder or its input embeddings.
    init_from: Text | None = None
    freeze: Choice(FREEZE) = "none"
    loss: Choice(LOSSES) = "mse"


SECTIONS: dict[str, type[_Frozen]] = {
    "data": DataConfig,
    "split": SplitConfig,
    "model": ModelConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
}


def _field_type(section: str, name: str) -> Any:
    """The annotated type of one recipe key (bounds and strictness included)."""
    info = SECTIONS[section].model_fields[name]
    return Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation


def _base_type(tp: Any) -> Any:
    """int, float, str, tuple, dict or Literal[...] behind Annotated and Optional wrappers."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


# --------------------------------------------------------------------------- tune: search space

#: Sections and keys a search never changes: the split and the objective stay fixed so that every
#: trial is scored on the same validation molecules by the same metric (and test stays unseen).
TUNE_FIXED = ("data", "split", "train.metric", "train.seeds")
RANGE_KEYS = ("low", "high", "log", "step")


def tunable_keys() -> list[str]:
    """Every dotted recipe key a `tune:` section may search."""
    return [f"{section}.{name}" for section, cls in SECTIONS.items() if section not in TUNE_FIXED
            for name in cls.model_fields if f"{section}.{name}" not in TUNE_FIXED]


_Bound = Annotated[Any, WithJsonSchema({"type": "number"})]  # checked against the key's own type


class SearchRange(_Frozen):
    """A numeric range searched for one recipe key (Optuna's suggest_int / suggest_float).

    low and high must be values the key accepts; `step` quantizes the range, `log` samples it on
    a log scale (the two exclude each other). `integer` follows the key's type (model.layers is an
    int): the schema sets it, recipes do not.
    """

    low: _Bound
    high: _Bound
    log: Annotated[bool, Strict()] = False
    step: Annotated[Any, WithJsonSchema({"type": "number", "exclusiveMinimum": 0})] = None
    _integer: bool = PrivateAttr(default=False)

    @property
    def integer(self) -> bool:
        return self._integer

    @classmethod
    def of(cls, low: Any, high: Any, *, log: bool = False, step: Any = None,
           integer: bool = False) -> "SearchRange":
        spec = cls(low=low, high=high, log=log, step=step)
        spec.__pydantic_private__["_integer"] = integer
        return spec


class SearchChoices(_Frozen):
    """A list of values searched for one recipe key (Optuna's suggest_categorical)."""

    choices: tuple


def _spec_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return "range"
    if isinstance(value, (list, tuple)):
        return "choices"
    return None


_SpecInput = Annotated[
    Union[Annotated[SearchRange, Tag("range")],
          Annotated[tuple[Annotated[Any, WithJsonSchema({"type": ["number", "string", "boolean",
                                                                  "null"]})], ...], Tag("choices")]],
    Discriminator(_spec_kind, custom_error_type="tune_spec",
                  custom_error_message="expected a range or a list of choices"),
]


def _molsam_error(key: str, message: str) -> PydanticCustomError:
    return PydanticCustomError("molsam", "{message}", {"key": key, "message": message})


def _check_value(key: str, tp: Any, value: Any) -> Any:
    """Validate `value` as recipe key type `tp`; a failure becomes a molsam error naming `key`."""
    try:
        return TypeAdapter(tp).validate_python(value)
    except ValidationError as error:
        first = error.errors()[0]
        raise _molsam_error(key, _describe(first, tp)) from None


def _resolve_spec(key: str, section: str, name: str, spec: Any) -> SearchRange | SearchChoices:
    """Check one searched key's range or choices against the key's own type."""
    where = f"tune.{key}"
    tp = _field_type(section, name)
    if isinstance(spec, tuple):
        if not spec:
            raise _molsam_error(where, "expected a non-empty list of choices, got []")
        for i, item in enumerate(spec):
            if item is not None and not isinstance(item, (bool, int, float, str)):
                raise _molsam_error(f"{where}[{i}]", f"a choice must be a single value, got {item!r}")
        items = tuple(_check_value(f"{where}[{i}]", tp, item) for i, item in enumerate(spec))
        if len(set(items)) != len(items):
            raise _molsam_error(where, f"duplicate choices in {list(spec)}")
        return SearchChoices(choices=items)
    base = _base_type(tp)
    if base not in (int, float):
        shown = {k: v for k, v in spec.model_dump().items() if k in spec.model_fields_set}
        raise _molsam_error(where, f"{shown!r}: a range needs a numeric key; give a list of choices")
    bounds = {}
    for bound in ("low", "high"):
        raw = getattr(spec, bound)
        if raw is None:
            raise _molsam_error(f"{where}.{bound}", "expected a number, got None")
        bounds[bound] = _check_value(f"{where}.{bound}", tp, raw)
    if bounds["low"] > bounds["high"]:
        raise _molsam_error(where, f"low {spec.low!r} is above high {spec.high!r}")
    step = spec.step
    if step is not None:
        step = _check_value(f"{where}.step", Integer(1) if base is int else Number(gt=0.0), step)
        if spec.log:
            raise _molsam_error(where, "log and step cannot be combined")
    if spec.log and bounds["low"] <= 0:
        raise _molsam_error(f"{where}.low", f"a log range needs low > 0, got {spec.low!r}")
    return SearchRange.of(bounds["low"], bounds["high"], log=spec.log, step=step,
                          integer=base is int)


#: Pruners `molsam tune` offers (tune.pruner.name); molsam.tune.build_pruner says why these.
PRUNERS = ("median", "successive_halving", "none")


class PrunerConfig(_Frozen):
    """`tune.pruner`: how a search stops bad trials early (molsam.tune.build_pruner).

    `median` (Optuna's MedianPruner): a trial stops when its best validation score so far is
    worse than the median of completed trials at the same epoch, once `startup_trials` trials
    have completed. `successive_halving` (Optuna's SuccessiveHalvingPruner, ASHA): a trial
    continues past epochs warmup_epochs, warmup_epochs * r, ... only if it is in the best 1/r of
    the trials that reached that epoch (r = reduction_factor); no start-up trials. `none`: never.
    No pruner stops a trial during its first `warmup_epochs` epochs (the learning-rate warm-up
    says little about the end).
    """

    name: Choice(PRUNERS) = "median"
    warmup_epochs: Integer(0) = 5
    startup_trials: Integer(0) = 4
    reduction_factor: Integer(2) = 3

    @model_validator(mode="after")
    def _keys_of_the_pruner(self) -> "PrunerConfig":
        own = {"startup_trials": "median", "reduction_factor": "successive_halving"}
        for key, pruner in own.items():
            if key in self.model_fields_set and self.name != pruner:
                raise _molsam_error(f"tune.pruner.{key}", f"only the {pruner} pruner has it "
                                                          f"(tune.pruner.name is {self.name!r})")
        if self.name == "none" and "warmup_epochs" in self.model_fields_set:
            raise _molsam_error("tune.pruner.warmup_epochs", "the none pruner never prunes")
        return self


class _TuneBase(_Frozen):
    """The `tune:` section: {dotted recipe key: {low, high[, log][, step]} or [choices]}, and
    optionally `pruner:` (a setting of the search, not a searched key: it has no dot)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=False,
                              title="TuneSpace")

    @model_validator(mode="before")
    @classmethod
    def _not_empty(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data:
            raise _molsam_error("tune", "expected recipe keys to search, got {} (leave tune out "
                                        "for the default space)")
        for key, value in data.items() if isinstance(data, dict) else ():
            if not isinstance(key, str):
                raise _molsam_error("tune", f"keys must be strings, got {key!r}")
            if value is None and key in cls._aliases():
                raise _molsam_error(f"tune.{key}", "expected {low: ..., high: ...} or a list of "
                                                   "choices, got None")
        return data

    @classmethod
    def _aliases(cls) -> set[str]:
        return {info.alias for info in cls.model_fields.values()}

    def _searched(self) -> list[tuple[str, str]]:
        """(field name, dotted key) of the keys this space searches, in schema order (a set's
        order would change with the hash seed, and with it the sampler's draws)."""
        return [(name, info.alias) for name, info in type(self).model_fields.items()
                if name not in TUNE_SETTINGS and name in self.model_fields_set
                and getattr(self, name) is not None]

    @model_validator(mode="after")
    def _against_key_types(self) -> "_TuneBase":
        resolved = {}
        for name, key in self._searched():
            section, field = key.split(".")
            spec = getattr(self, name)
            # An instance that is validated again (dataclasses.replace of a recipe) holds
            # resolved specs already; ranges re-resolve to themselves.
            if not isinstance(spec, SearchChoices):
                spec = _resolve_spec(key, section, field, spec)
            resolved[name] = spec
        for name, spec in resolved.items():
            self.__dict__[name] = spec  # normalizes before anyone sees the model; frozen after
        return self

    def as_dict(self) -> dict[str, SearchRange | SearchChoices]:
        """{dotted key: range or choices} of the searched keys."""
        return {key: getattr(self, name) for name, key in self._searched()}


#: Keys of the tune section that configure the search instead of naming a searched key.
TUNE_SETTINGS = ("pruner",)

TuneSpace = create_model(
    "TuneSpace",
    __base__=_TuneBase,
    pruner=(PrunerConfig | None, None),
    **{key.replace(".", "__"): (_SpecInput | None, Field(None, alias=key))
       for key in tunable_keys()},
)


class Recipe(_Frozen):
    """A whole recipe. Build with `load_recipe` or `recipe_from_dict`, which validate.
    `tune` is `molsam tune`'s search space (None: molsam.tune.DEFAULT_SPACE); training ignores it."""

    data: DataConfig
    split: SplitConfig = Field(default_factory=SplitConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tune: TuneSpace | None = None  # type: ignore[valid-type]

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        # `optim:` with nothing under it is YAML's None: the section's defaults.
        if isinstance(data, dict):
            data = {k: ({} if v is None and k in SECTIONS else v) for k, v in data.items()}
            data.setdefault("data", {})
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "Recipe":
        model, split, data, train = self.model, self.split, self.data, self.train
        if model.hidden % model.heads != 0:
            valid = [h for h in range(1, model.hidden + 1) if model.hidden % h == 0]
            raise _molsam_error("model.heads", f"{model.heads} does not divide model.hidden="
                                f"{model.hidden}; valid: {', '.join(map(str, valid))}")
        allowed = MODEL_POOLINGS[model.name]
        if model.pooling not in allowed:
            raise _molsam_error("model.pooling", f"{model.pooling!r} is not a {model.name} "
                                f"pooling; valid: {', '.join(allowed)}")
        overlap = set(data.feature_columns or ()) & (
            set(data.target_columns or ()) | {data.smiles_column})
        if overlap:
            raise _molsam_error("data.feature_columns", f"{sorted(overlap)[0]!r} is also the "
                                "SMILES column or a target")
        if len(set(model.mol_features)) != len(model.mol_features):
            raise _molsam_error("model.mol_features", f"duplicate entries in "
                                f"{list(model.mol_features)}")
        if model.name != "compt":
            for key in COMPT_KEYS:
                if key in model.model_fields_set:
                    raise _molsam_error(f"model.{key}", "only model.name compt reads it "
                                        f"(model.name is {model.name!r})")
        if self.optim.variant == "reference" and self.optim.name != "graphsam":
            raise _molsam_error("optim.variant", "only graphsam has a reference variant "
                                f"(optim.name is {self.optim.name!r})")
        if "radius" in self.optim.model_fields_set and self.optim.variant != "reference":
            raise _molsam_error("optim.radius", "only the reference GraphSAM variant clips to a "
                                "radius (set optim.variant: reference)")
        if train.init_from is None:
            for key, value in (("train.freeze", train.freeze != "none"),
                               ("optim.encoder_lr_scale", self.optim.encoder_lr_scale != 1.0)):
                if value:
                    raise _molsam_error(key, "only applies when fine-tuning (set train.init_from)")
        if train.loss_weighting == "loss" and train.static_shapes is True:
            raise _molsam_error("train.static_shapes", "the padded static-shape step "
                                "back-propagates the plain loss; train.loss_weighting loss "
                                "trains eagerly (set it to auto or false)")
        if model.name == "compt" and train.static_shapes is True:
            raise _molsam_error("train.static_shapes", "the padded static-shape step is built "
                                "for GPS; CoMPT trains eagerly (set it to auto or false)")
        if train.log_sam_cosine and self.optim.name != "graphsam":
            raise _molsam_error("train.log_sam_cosine", f"only graphsam has an estimate to compare "
                                f"with SAM's direction (optim.name is {self.optim.name!r})")
        if train.loss == "mve" and data.task not in (None, "regression"):
            raise _molsam_error("train.loss", f"mve predicts a mean and a variance of regression "
                                f"targets (data.task is {data.task!r}); use mse")
        if train.loss == "mve" and train.loss_weighting == "loss":
            raise _molsam_error("train.loss", "mve's Gaussian NLL can be negative, and "
                                "train.loss_weighting: loss would then reverse its gradient "
                                "(set train.loss_weighting: none)")
        for method in ("column", "file"):
            if split.method == method and getattr(split, method) is None:
                raise _molsam_error(f"split.{method}", f"required when split.method is {method!r}")
        if train.metric is not None and data.task is not None:
            valid = TASK_METRICS[data.task]
            if train.metric not in valid:
                raise _molsam_error("train.metric", f"{train.metric!r} does not apply to "
                                    f"{data.task}; valid: {', '.join(valid)}")
        return self


def recipe_json_schema() -> dict:
    """The recipe schema as JSON Schema (draft 2020-12), for editors and other tools."""
    schema = Recipe.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "molsam recipe"
    return schema


# --------------------------------------------------------------------------- error messages


def _show(value: Any) -> str:
    return repr(value)


def _fail(key: str, message: str) -> ConfigError:
    return ConfigError(f"{key}: {message}")


def _unknown_key(key: str, name: str, valid: list[str]) -> ConfigError:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(valid)}"
    return ConfigError(f"{key}: unknown key ({hint})")


def _wanted(tp: Any) -> str:
    """'in [0, 1)', '> 0', '>= 1' from a type's annotated bounds."""
    tp = _unwrap_optional(tp)
    low = high = None
    low_open = high_open = False
    for meta in typing.get_args(tp)[1:] if typing.get_origin(tp) is Annotated else ():
        if isinstance(meta, Ge):
            low = meta.ge
        elif isinstance(meta, Gt):
            low, low_open = meta.gt, True
        elif isinstance(meta, Le):
            high = meta.le
        elif isinstance(meta, Lt):
            high, high_open = meta.lt, True
    if high is None:
        return f"> {low:g}" if low_open else f">= {low:g}"
    lo = "-inf" if low is None else f"{low:g}"
    return f"in {'(' if low_open else '['}{lo}, {high:g}{')' if high_open else ']'}"


def _unwrap_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _strip(tp: Any) -> Any:
    """The type under Annotated and Optional wrappers (bounds stay on the returned type's args)."""
    tp = _unwrap_optional(tp)
    inner = typing.get_args(tp)[0] if typing.get_origin(tp) is Annotated else tp
    return _unwrap_optional(inner)


def _type_at(loc: tuple) -> tuple[Any, type | None]:
    """(the annotated type at an error location, the model class that holds its last key)."""
    tp: Any = Recipe
    owner: type | None = None
    for part in loc:
        inner = _strip(tp)
        if typing.get_origin(inner) in (Union, types.UnionType):
            # a tagged union (tune specs): the model member for a key, the tuple for an index
            members = [_strip(m) for m in typing.get_args(inner)]
            inner = next((m for m in members if (typing.get_origin(m) is tuple) ==
                          isinstance(part, int)), inner)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            owner = inner
            fields = {(f.alias or n): f for n, f in inner.model_fields.items()}
            if part not in fields:
                return None, owner
            info = fields[part]
            tp = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        elif isinstance(part, int) and typing.get_origin(inner) is tuple:
            tp, owner = typing.get_args(inner)[0], None
        else:
            return tp, owner
    return tp, owner


def _key_of(loc: tuple) -> str:
    key = ""
    for part in loc:
        if part in ("range", "choices", "[key]"):
            continue  # tagged-union branch names and dict-key markers are not recipe keys
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key


def _describe(error: dict, tp: Any) -> str:
    """One pydantic error as molsam's message (without the key)."""
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    if kind == "molsam":
        return ctx["message"]
    if kind in ("float_type", "float_parsing"):
        return f"expected a number, got {_show(value)}"
    if kind == "finite_number":
        return f"expected a finite number, got {_show(value)}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected an integer, got {_show(value)}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        if _base_type(tp) is int:
            return f"expected an integer {_wanted(tp)}, got {value}"
        return f"expected a number {_wanted(tp)}, got {_show(value)}"
    if kind == "string_type":
        return f"expected a string, got {_show(value)}"
    if kind == "string_pattern_mismatch":
        return "expected a non-empty string, got ''"
    if kind == "literal_error":
        choices = typing.get_args(_base_type(tp))
        return f"{_show(value)} is not one of {', '.join(map(str, choices))}"
    if kind in ("tuple_type", "list_type"):
        return f"expected a list, got {_show(value)}"
    if kind == "too_short":
        return "expected a non-empty list, got []"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"expected a mapping, got {_show(value)}"
    if kind == "bool_type":
        return f"expected true or false, got {_show(value)}"
    return f"{error['msg']}, got {_show(value)}"


def _error_order(error: dict) -> tuple[int, int]:
    """Report problems in recipe order: unknown sections first, then section by section, and in
    a section its unknown keys before the rest (a typo explains a "missing" key)."""
    loc = tuple(error["loc"])
    order = [*SECTIONS, "tune"]
    if not loc or loc[0] not in order:
        return (-1, 0)
    return (order.index(loc[0]), 0 if error["type"] == "extra_forbidden" else 1)


def _config_error(error: ValidationError, source: str) -> ConfigError:
    """The first problem pydantic found, as one line naming the dotted key."""
    first = min(error.errors(), key=_error_order)
    loc, kind = tuple(first["loc"]), first["type"]
    ctx = first.get("ctx") or {}
    if kind == "molsam" and ctx.get("key"):
        return _fail(ctx["key"], ctx["message"])
    key = _key_of(loc)
    if kind == "tune_spec":
        return _fail(key, "expected {low: ..., high: ...} or a list of choices, got "
                          f"{_show(first.get('input'))}")
    if not loc:
        return ConfigError(f"{source}: a recipe must be a mapping of sections, got "
                           f"{_show(first.get('input'))}")
    if kind == "extra_forbidden":
        name = str(loc[-1])
        if len(loc) == 1:
            return _unknown_key(name, name, [*SECTIONS, "tune"])
        if loc[0] == "tune" and len(loc) == 2:
            section = name.split(".")[0]
            if name in TUNE_FIXED or (section in TUNE_FIXED and name.count(".") == 1
                                      and name.split(".")[1] in SECTIONS[section].model_fields):
                return _fail(key, "cannot be searched (data, split, train.metric and train.seeds "
                                  "stay fixed so that every trial is scored on the same "
                                  "validation set)")
            return _unknown_key(key, name, [*tunable_keys(), *TUNE_SETTINGS])
        _, owner = _type_at(tuple(p for p in loc if p not in ("range", "choices")))
        valid = [(f.alias or n) for n, f in owner.model_fields.items()] if owner else []
        return _unknown_key(key, name, valid)
    if kind == "missing":
        if loc == ("data", "path"):
            return _fail("data.path", "required key is missing (e.g. data: {path: my.csv})")
        if loc[0] == "tune" and loc[-1] in ("low", "high"):
            return _fail(key, "required key is missing (e.g. {low: 0.01, high: 0.1})")
        return _fail(key, "required key is missing")
    if "[key]" in loc:
        key = _key_of(loc[: loc.index("[key]") - 1])
        return _fail(key, f"keys must be strings, got {_show(first.get('input'))}")
    tp, _ = _type_at(tuple(p for p in loc if p not in ("range", "choices")))
    return _fail(key, _describe(first, tp))


# --------------------------------------------------------------------------- tune helpers


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
    try:
        recipe = Recipe.model_validate(d)
    except ValidationError as error:
        raise _config_error(error, source) from None
    resolved = _resolve_data_path(recipe.data.path, None if base_dir is None else Path(base_dir))
    if resolved != recipe.data.path:
        recipe = recipe.model_copy(update={"data": recipe.data.model_copy(update={"path": resolved})})
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
    names = list(SECTIONS[section].model_fields)
    if parts[1] not in names:
        raise _unknown_key(f"{section}.{parts[1]}", parts[1], names)
    if len(parts) > 2 and typing.get_origin(_base_type(_field_type(section, parts[1]))) is not dict:
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
        if parts[0] == "tune" and len(parts) > 2 and parts[1] not in TUNE_SETTINGS:
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


#: Keys added after recipes were first saved in runs, tune studies and checkpoints: written out
#: only when they differ from their defaults, so the resolved form of every recipe that does
#: not use them stays what it was (a continued tune study or benchmark grid still matches).
LATER_KEYS = {
    "data": ("delimiter", "decimal", "sheet", "feature_columns"),
    "model": ("name", *COMPT_KEYS, "mol_features"),
    "optim": ("decay_epochs", "warmup_factor", "variant", "radius", "encoder_lr_scale"),
    "train": ("loss_weighting", "loss", "init_from", "freeze"),
}


def _section_to_dict(section: Any) -> dict:
    """One section as a dict of plain builtins (tuples become lists); LATER_KEYS at their
    defaults are left out."""
    cls = type(section)
    later = next((keys for name, keys in LATER_KEYS.items() if SECTIONS[name] is cls), ())
    return {name: _plain(getattr(section, name)) for name, info in cls.model_fields.items()
            if name not in later or getattr(section, name) != info.get_default(
                call_default_factory=True)}


def recipe_to_dict(recipe: Recipe) -> dict:
    """The fully resolved recipe as plain builtins: `recipe_from_dict(recipe_to_dict(r)) == r`.
    A `tune:` section is included only when the recipe has one."""
    out = {name: _section_to_dict(getattr(recipe, name)) for name in SECTIONS}
    if recipe.tune is not None:
        out["tune"] = tune_to_dict(recipe.tune.as_dict())
        pruner = recipe.tune.pruner
        if pruner is not None:  # the keys as written (others belong to other pruners)
            out["tune"]["pruner"] = {k: getattr(pruner, k) for k in type(pruner).model_fields
                                     if k == "name" or k in pruner.model_fields_set}
    return out


def save_recipe(recipe: Recipe, path: str | Path) -> None:
    """Write the fully resolved recipe as YAML (atomically: temp file + rename)."""
    path = Path(path)
    from molsam.outputs import naming  # a full disk: an OSError naming `path`

    text = yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False, default_flow_style=None)
    with naming(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with naming(path, tmp):
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
