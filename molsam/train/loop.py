"""One replicate of training: epochs of GraphSAM (or any molsam optimizer) steps, validation,
best-epoch selection, early stopping, checkpoints, and exact resume.

Speed rules kept here: batches are vectorized gathers from a store that lives on the training
device; the loss is accumulated on the device and read back only every `log_every` steps and at
epoch end (no host sync per step); validation gathers predictions on the device and syncs once.

Reproducibility: all randomness comes from `seed` (model init, dropout, shuffling). Resuming from
`last.pt` restores weights, optimizer state (base optimizer included), LR scheduler, every RNG and
the early-stopping counters at the end of an epoch, so a resumed run ends where an uninterrupted
one would.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from molsam.config import Recipe
from molsam.data.batching import BatchSource, GraphBatch
from molsam.data.splits import SplitIndices
from molsam.devices import resolve_precision
from molsam.errors import CheckpointError
from molsam.outputs import naming
from molsam.chem.spec import featurizer_spec, molecule_feature_extras
from molsam.models import build_model, featurizer_options
from molsam.optim import build_optimizer, reanchor, valid_keywords
from molsam.data.buckets import size_sorted_order
from molsam.optim.placement import settle_optimizer_state
from molsam.optim.schedules import (
    NoamLR,
    TransformerLR,
    reference_decay,
    rho_at,
    rho_schedule_is_step,
    set_group_value,
    set_rho,
)
from molsam.train.distributed import Distributed
from molsam.train.checkpoint import (
    build_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    training_state,
)
from molsam.train.calibration import (
    Outputs,
    calibration_record,
    fit_entry,
    outputs_from_raw,
)
from molsam.train.checkpoint import write_calibration, write_domain
from molsam.train.finetune import checkpoint_for_seed, freeze, load_encoder, trainable_groups
from molsam.train.inference import predict_raw, to_output_units
from molsam.train.losses import fit_scaler, masked_loss, outputs_per_target
from molsam.train.static import CAPTURABLE_OPTIMIZERS, StaticSteps, use_static_shapes
from molsam.train.metrics import default_metric, is_better, metric_names, task_metrics


#: Optimizer keywords that come straight from `optim:` when the algorithm accepts them.
_ALGORITHM_KEYS = ("rho", "beta", "k", "alpha", "radius")


@dataclass
class EpochRecord:
    """One row of metrics.csv."""

    epoch: int
    train_loss: float
    lr: float
    rho: float
    seconds: float
    graphs_per_s: float
    val: dict = field(default_factory=dict)
    test: dict = field(default_factory=dict)
    diagnostics: dict = field(default_factory=dict)


#: metrics.csv columns of GraphSAM's SAM-direction diagnostic (train.log_sam_cosine).
DIAGNOSTIC_COLUMNS = ("sam_cos_mean", "sam_cos_min", "e_norm_mean", "g_norm_mean")


@dataclass
class ReplicateResult:
    seed: int
    best_epoch: int
    best_val: float | None
    val: dict
    test: dict
    epochs_run: int
    train_seconds: float
    graphs_per_s: float


def seed_everything(seed: int) -> np.random.Generator:
    """The one seed path: torch (CPU and CUDA), Python, numpy; returns the shuffling generator."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    return np.random.default_rng(seed)


def make_optimizer(
    recipe: Recipe, model: torch.nn.Module, steps_per_epoch: int = 1
) -> torch.optim.Optimizer:
    """build_optimizer with the recipe's keys that this algorithm accepts (plus `optim.extra`).

    Algorithms with a schedule over the whole run (AE-SAM's threshold, RST's probability) get
    `total_steps = train.epochs * steps_per_epoch` unless `optim.extra` sets it. Parameters are
    passed with their names, so ASAM tells weights from biases as its authors' code does.
    """
    o = recipe.optim
    name = optimizer_name(recipe)
    accepted = set(valid_keywords(name))
    kwargs = {"lr": o.lr, "weight_decay": o.weight_decay}
    for key in _ALGORITHM_KEYS:
        value = getattr(o, key)
        if key in accepted and value is not None:
            kwargs[key] = value
    if "total_steps" in accepted:
        kwargs["total_steps"] = recipe.train.epochs * steps_per_epoch
    if recipe.train.log_sam_cosine:
        kwargs["track_sam_cosine"] = True
    if "loss_weighted" in accepted:
        kwargs["loss_weighted"] = recipe.train.loss_weighting == "loss"
    kwargs.update(o.extra)
    groups = trainable_groups(model, parameter_groups(model, o.perturb), o.encoder_lr_scale)
    for group in groups:  # the encoder's groups when fine-tuning with optim.encoder_lr_scale
        if "lr_scale" in group:
            group["lr"] = o.lr * group["lr_scale"]
    return build_optimizer(name, groups, **kwargs)


def optimizer_name(recipe: Recipe) -> str:
    """The molsam.optim name a recipe trains with: optim.name, or "graphsam_reference" for
    GraphSAM's reference variant."""
    o = recipe.optim
    return "graphsam_reference" if o.name == "graphsam" and o.variant == "reference" else o.name


def model_from_recipe(recipe: Recipe, outputs: int, mol_features: int = 0) -> torch.nn.Module:
    """The model `recipe.model` describes, with `outputs` outputs (GPS or CoMPT) and
    `mol_features` molecule-level feature columns (model.mol_features' extras)."""
    m = recipe.model
    if m.name == "compt":
        config = {"name": "compt", "hidden": m.hidden, "layers": m.layers, "heads": m.heads,
                  "dropout": m.dropout, "kernel": m.kernel, "norm": m.norm,
                  "pooling": m.pooling, "head_layers": m.head_layers}
    else:
        config = {"hidden": m.hidden, "layers": m.layers, "heads": m.heads,
                  "dropout": m.dropout, "pe_steps": m.pe_steps, "pooling": m.pooling,
                  "attn_dropout": m.attn_dropout}
    if mol_features:
        config.update(mol_features=mol_features,
                      feature_extras=list(molecule_feature_extras(m.mol_features)))
    return build_model({**config, "num_tasks": outputs})


def epoch_rho(recipe: Recipe, epoch: int) -> tuple[float, float | None]:
    """(rho, radius) for `epoch`: GraphSAM's reference variant compounds both down
    (reference_decay); otherwise rho follows rho_at when its schedule applies and radius is
    None (no optimizer but the reference variant has one)."""
    o = recipe.optim
    if optimizer_name(recipe) == "graphsam_reference":
        factor = reference_decay(epoch, o.gamma, o.rho_every)
        return o.rho * factor, o.radius * factor
    if rho_schedule_is_step(o.rho_schedule, o.name):
        return rho_at(epoch, o.rho, o.gamma, o.rho_every), None
    return o.rho, None


def parameter_groups(model: torch.nn.Module, perturb: str) -> list[dict]:
    """One group of every parameter ("all"), or ("weights") the matrices of linear layers in
    one group and the rest (biases, LayerNorm gains and shifts, embedding tables) in a group with
    `perturb=False`, which sharpness-aware optimizers leave out of norms and perturbations
    (molsam.optim._base.grads_by_group) and the base optimizer steps as usual.

    Parameters go in as (name, tensor) pairs, so ASAM tells weights from biases by name."""
    named = list(model.named_parameters())
    if perturb == "all":
        return [{"params": named}]
    weights = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear)}
    perturbed = [(n, p) for n, p in named if id(p) in weights]
    kept = [(n, p) for n, p in named if id(p) not in weights]
    return [{"params": perturbed}, {"params": kept, "perturb": False}]


def warmup_epochs(recipe: Recipe) -> tuple[float, str | None]:
    """The Noam warm-up to use, and a message when the recipe's had to be shortened.

    A warm-up as long as the decay (training, unless optim.decay_epochs is set) or longer would
    leave no decay phase and, at the extreme, no step at the peak learning rate; it is cut to
    half of the epochs (a pure function of the recipe, so every replicate and a resumed run
    agree).
    """
    wanted, epochs = recipe.optim.warmup_epochs, recipe.optim.decay_epochs or recipe.train.epochs
    if wanted < epochs:
        return wanted, None
    used = epochs / 2
    return used, (
        f"optim.warmup_epochs={wanted:g} is not shorter than train.epochs={epochs}: "
        f"warming up over {used:g} epoch(s) instead (set optim.warmup_epochs below train.epochs "
        "to choose)"
    )


def make_scheduler(
    recipe: Recipe, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The recipe's learning-rate schedule (None: a constant lr). Noam decays over
    optim.decay_epochs (train.epochs when unset), then stays at final_lr."""
    o, epochs = recipe.optim, recipe.train.epochs
    scales = [group.get("lr_scale", 1.0) for group in optimizer.param_groups]
    if o.schedule == "noam":
        return NoamLR(
            optimizer, warmup_epochs=warmup_epochs(recipe)[0],
            total_epochs=o.decay_epochs or epochs, steps_per_epoch=steps_per_epoch,
            init_lr=[o.init_lr * s for s in scales], max_lr=[o.lr * s for s in scales],
            final_lr=[o.final_lr * s for s in scales],
        )
    if o.schedule == "transformer":
        return TransformerLR(optimizer, factor=o.warmup_factor, d_model=recipe.model.hidden,
                             warmup_epochs=o.warmup_epochs, steps_per_epoch=steps_per_epoch)
    return None


class ReplicateTrainer:
    """Trains one model with one seed on a fixed split; writes into `out_dir`:

    best.pt (weights of the best validation epoch, inference-only), last.pt (end of the latest
    epoch, with everything needed to resume), metrics.csv (one row per epoch).
    """

    def __init__(
        self,
        recipe: Recipe,
        recipe_dict: dict,
        source: BatchSource,
        split: SplitIndices,
        *,
        task: str,
        target_names: list[str],
        seed: int,
        out_dir: Path,
        device: torch.device,
        on_progress: Callable[[dict], None] | None = None,
        classes: list[list[str]] | None = None,
        dist: Distributed | None = None,
        domain: dict | None = None,
    ) -> None:
        self.recipe, self.recipe_dict = recipe, recipe_dict
        #: The training split's packed fingerprints (molsam.train.domain.training_domain),
        #: stored in best.pt at the end (predict's applicability domain); None: none stored.
        self.domain = domain
        # One process unless torchrun started several (molsam.train.distributed): then this
        # rank trains on its part of each global batch and only rank 0 writes files.
        self.dist = dist or Distributed()
        self.source, self.split = source, split
        self.task, self.target_names = task, target_names
        # Multiclass: target t owns len(classes[t]) logits; other tasks: one output per target.
        self.classes = classes if task == "multiclass" else None
        self.num_classes = None if self.classes is None else [len(c) for c in self.classes]
        # train.loss mve: a mean and a variance parameter per regression target
        # (molsam.train.losses.split_mve), the same GPS or CoMPT with 2T outputs.
        self.loss = recipe.train.loss
        outputs = (len(target_names) * outputs_per_target(self.loss) if self.num_classes is None
                   else sum(self.num_classes))
        #: best.pt's outputs on the validation split and their labels (after fit(); None
        #: without a validation split): what its calibration was fitted on.
        self.val_outputs: tuple[Outputs, np.ndarray] | None = None
        self.seed, self.out_dir, self.device = seed, Path(out_dir), device
        self.on_progress = on_progress or (lambda info: None)
        self.metric = recipe.train.metric or default_metric(task)
        self.autocast_dtype = resolve_precision(recipe.train.precision, device)

        labels = source.y.cpu().numpy()
        self.scaler = fit_scaler(labels[split.train]) if task == "regression" else None
        # Standardized training targets live on the device next to the store.
        scaled = labels if self.scaler is None else (labels - self.scaler["mean"]) / self.scaler["std"]
        self.targets = torch.as_tensor(np.asarray(scaled, dtype=np.float32), device=device)
        self.present = ~np.isnan(labels)  # [G, T] host copy: label counts per global batch

        self.rng = seed_everything(seed)
        features = 0 if source.mol_features is None else int(source.mol_features.shape[1])
        self.model = model_from_recipe(recipe, outputs, features).to(device)
        if features:  # scaled with the training split's statistics, kept in the weights
            self.model.feature_scaler.fit(source.mol_features[
                torch.as_tensor(split.train, device=source.device)].cpu().numpy())
        if recipe.train.init_from is not None:
            self.init_from = checkpoint_for_seed(recipe.train.init_from, seed)
            self.head_reused = load_encoder(
                self.model, self.init_from, featurizer_spec(*featurizer_options(self.model)),
                target_names, task, self.loss)
            freeze(self.model, recipe.train.freeze)
        self.loss_weighted = recipe.train.loss_weighting == "loss"
        self.dist.broadcast_parameters(self.model)
        #: Adam with capturable=True (device-side step counters), for CUDA-graph steps.
        self.capturable = False
        t = recipe.train
        self.steps_per_epoch = max(1, math.ceil(len(split.train) / t.batch_size))
        self.optimizer = make_optimizer(recipe, self.model, self.steps_per_epoch)
        self.scheduler = make_scheduler(recipe, self.optimizer, self.steps_per_epoch)
        # Static shapes (molsam.train.static): padded batches, CUDA graphs on CUDA.
        self.static: StaticSteps | None = None
        # Not combined with data parallelism yet: a multi-process run takes the eager step,
        # whose closure all-reduces the gradients (molsam.train.distributed).
        # CoMPT's batches carry distance matrices the padded buckets do not lay out, and the
        # static step's closure back-propagates the plain loss: both train eagerly.
        if (use_static_shapes(t.static_shapes, device) and not self.dist.enabled
                and recipe.model.name == "gps" and not self.loss_weighted):
            # optimizer_name: GraphSAM's reference variant keeps rho and radius as host floats
            # that a captured graph would freeze, so it is not in CAPTURABLE_OPTIMIZERS.
            capture = (device.type == "cuda" and optimizer_name(recipe) in CAPTURABLE_OPTIMIZERS
                       and not t.log_sam_cosine)
            self.capturable = capture
            self.static = StaticSteps(
                self.model, self.optimizer, self.scheduler, task, source, self.targets,
                t.batch_size, self.autocast_dtype, capture,
                # A GraphSAM re-anchor (one extra pass, once per K epochs) runs eagerly.
                can_capture_now=lambda: not getattr(self.optimizer, "reanchor_pending", False),
                num_classes=self.num_classes, loss=self.loss,
            )
        self.start_epoch = 0
        self.last_epoch = -1
        self.best_val: float | None = None
        self.best_epoch = -1
        self.bad_epochs = 0
        self.finished = False

    # ------------------------------------------------------------------------------ state
    def _early_stopping(self) -> dict:
        return {
            "best": self.best_val, "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs, "finished": self.finished,
        }

    def _checkpoint(self, epoch: int, with_training_state: bool) -> dict:
        training = None
        if with_training_state:
            training = training_state(
                self.optimizer, self.scheduler, self._early_stopping(), self.rng
            )
        return build_checkpoint(
            self.model, target_names=self.target_names, task=self.task,
            recipe=self.recipe_dict, split_seed=self.recipe.split.seed, seed=self.seed,
            epoch=epoch, best_metric=self.best_val, metric=self.metric,
            scaler=self.scaler, training=training, classes=self.classes, loss=self.loss,
        )

    def resume(self, path: Path) -> None:
        """Continue from `last.pt`: everything as it was at the end of its epoch."""
        # Read onto the CPU: load_state_dict copies weights to the model's device and torch's
        # optimizers move moments to each parameter's device but keep Adam's `step` counters
        # where they were loaded. Counters loaded onto CUDA (map_location=device) would make a
        # non-capturable Adam call .item() on them twice per parameter per step (a host sync
        # each); with capturable=True torch itself moves them to the device.
        ckpt = load_checkpoint(path, map_location="cpu")
        state = ckpt.get("training_state")
        if not state:
            raise CheckpointError(f"{path}: holds no training state; it cannot be resumed")
        if ckpt["seed"] != self.seed:
            raise CheckpointError(f"{path}: was trained with seed {ckpt['seed']}, not {self.seed}")
        # A last.pt copied from another run would load if its shapes happened to fit, and train
        # the wrong outputs on: its targets, task and model must be this run's.
        for key, ours in (("target_names", list(self.target_names)), ("task", self.task),
                          ("model_config", self.model.config())):
            if ckpt[key] != ours:
                raise CheckpointError(
                    f"{path}: {key} {ckpt[key]!r} is not this run's {ours!r}; "
                    "this last.pt belongs to another run and cannot be resumed here"
                )
        self.model.load_state_dict(ckpt["model_state"])
        self.optimizer.load_state_dict(state["optimizer"])
        settle_optimizer_state(self.optimizer, capturable=self.capturable)
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        restore_rng_state(state["rng"], self.rng)
        stop = state["early_stopping"]
        self.best_val, self.best_epoch = stop["best"], stop["best_epoch"]
        self.bad_epochs, self.finished = stop["bad_epochs"], stop["finished"]
        self.last_epoch = ckpt["epoch"]
        self.start_epoch = ckpt["epoch"] + 1
        if self.dist.is_main:
            _truncate_metrics(self.out_dir / "metrics.csv", self.start_epoch)

    # ------------------------------------------------------------------------------ steps
    def _autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _train_step(
        self, batch: GraphBatch, targets: torch.Tensor, denominator: torch.Tensor | None = None
    ) -> torch.Tensor:
        """One optimizer step; `denominator`: labels in the global batch (data-parallel runs)."""
        def closure() -> torch.Tensor:
            with self._autocast():
                output = self.model(batch)
            loss = masked_loss(output.float(), targets, self.task, self.num_classes, denominator,
                               loss=self.loss)
            # train.loss_weighting "loss": the gradient is L * grad L, as the GraphSAM reference
            # code's closures compute it (`loss.backward(loss)`).
            loss.backward(loss.detach() if self.loss_weighted else None)
            # Inside the closure: every backward pass (SAM's two, GraphSAM's re-anchor) is
            # summed over ranks before the optimizer reads a gradient. No-op for one process.
            return self.dist.all_reduce_gradients(self.model.parameters(), loss)

        # torch's Adam does not zero gradients itself; molsam's wrappers also zero before
        # every closure call, so this is harmless for them.
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.optimizer.step(closure)
        if self.scheduler is not None:
            self.scheduler.step()
        return loss.detach()

    def _evaluate(self, indices: np.ndarray) -> dict:
        if len(indices) == 0:
            return {}
        # fp32, as `molsam evaluate` and `molsam predict` score checkpoints: the best epoch is
        # chosen on the same numbers a user will see (autocast is for the training step only).
        # Each rank scores its part; every rank gets all of them (same metrics everywhere).
        raw = predict_raw(self.model, self.source, self.dist.part(indices), batch_size=256)
        raw = self.dist.gather_parts(raw, len(indices)).cpu().numpy()
        predictions = to_output_units(raw, self.task, self.scaler, self.num_classes)
        labels = self.source.y[torch.as_tensor(indices, device=self.device)].cpu().numpy()
        return task_metrics(labels, predictions, self.task, self.target_names,
                            classes=self.classes)

    # ------------------------------------------------------------------------------ epochs
    def fit(self) -> ReplicateResult:
        """Train until the last epoch or early stop; returns the best epoch's scores."""
        t, o = self.recipe.train, self.recipe.optim
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.start_epoch == 0:
            # last.pt exists from the start: an interrupt at any point leaves a resumable run.
            self._save("last.pt", -1, True)
        train_index = self.split.train
        for epoch in range(self.start_epoch, t.epochs):
            if self.finished:
                break
            started = time.perf_counter()
            self.model.train()
            rho, radius = epoch_rho(self.recipe, epoch)
            set_rho(self.optimizer, rho)
            if radius is not None:
                set_group_value(self.optimizer, "radius", radius)
            if epoch % o.reanchor_every == 0:
                reanchor(self.optimizer)
            order = train_index[self.rng.permutation(len(train_index))]
            if t.sort_by_size:
                order = size_sorted_order(order, self.source.atom_counts_host, t.batch_size,
                                          self.rng)
            order_on_device = self.source.upload_order(order)  # one copy per epoch
            denominators = self._start_parallel_epoch(epoch, order)
            loss_sum = torch.zeros((), device=self.device)
            for step, start in enumerate(range(0, len(order), t.batch_size)):
                if self.static is not None:
                    index = order[start : start + t.batch_size]
                    loss_sum += self.static.step(index, order_on_device[start : start + t.batch_size])
                else:
                    # This rank's rows of the global batch (all of them for one process).
                    lo, hi, counted = self.dist.train_bounds(min(t.batch_size, len(order) - start))
                    index = order[start + lo : start + hi]
                    batch = self.source.gather(index, order_on_device[start + lo : start + hi])
                    targets = self.targets[batch.index]
                    if not counted:  # a rank left without molecules: labels masked, zero grads
                        targets = torch.full_like(targets, float("nan"))
                    loss_sum += self._train_step(
                        batch, targets, None if denominators is None else denominators[step])
                if (step + 1) % t.log_every == 0:  # the only host sync inside an epoch
                    self.on_progress({"seed": self.seed, "epoch": epoch, "step": step + 1,
                                      "steps": self.steps_per_epoch,
                                      "loss": float(loss_sum) / (step + 1)})
            train_loss = float(loss_sum) / self.steps_per_epoch
            diagnostics = _pop_diagnostics(self.optimizer)
            # The diagnostic's extra passes are not training cost.
            seconds = time.perf_counter() - started - diagnostics.pop("diag_seconds", 0.0)
            record = EpochRecord(
                epoch=epoch, train_loss=train_loss, lr=float(self.optimizer.param_groups[0]["lr"]),
                rho=rho, seconds=seconds, graphs_per_s=len(order) / seconds,
                val=self._evaluate(self.split.val), test=self._evaluate(self.split.test),
                diagnostics=diagnostics,
            )
            self._after_epoch(record)
        self.finished = True
        self._save("last.pt", self.last_epoch, True)
        return self._result()

    def _save(self, name: str, epoch: int, with_training_state: bool) -> None:
        """Write a checkpoint into out_dir; rank 0 alone writes in a data-parallel run."""
        if self.dist.is_main:
            save_checkpoint(self.out_dir / name, self._checkpoint(epoch, with_training_state))

    def _start_parallel_epoch(self, epoch: int, order: np.ndarray) -> torch.Tensor | None:
        """Data-parallel runs only (None otherwise): reseed dropout for (seed, epoch, rank) and
        return the label count of each global batch, float32 [steps] on the device."""
        if not self.dist.enabled:
            return None
        torch.manual_seed(self.dist.dropout_seed(self.seed, epoch))
        counts = self.dist.label_counts(self.present, order, self.recipe.train.batch_size)
        return torch.from_numpy(counts).to(self.device)

    def _after_epoch(self, record: EpochRecord) -> None:
        val_score = record.val["mean"].get(self.metric) if record.val else None
        if val_score is None:
            # No validation set, or a metric undefined on it (a single class): until a real
            # score exists, the latest epoch counts as the best one.
            improved = self.best_val is None
        else:
            improved = is_better(self.metric, val_score, self.best_val)
        if improved:
            self.best_val, self.best_epoch, self.bad_epochs = val_score, record.epoch, 0
            self._save("best.pt", record.epoch, False)
        else:
            self.bad_epochs += 1
        patience = self.recipe.train.patience
        if patience is not None and self.bad_epochs >= patience:
            self.finished = True
        self.last_epoch = record.epoch
        if self.dist.is_main:
            _append_metrics(self.out_dir / "metrics.csv", record, self.task,
                            self.recipe.train.log_sam_cosine)
        self._save("last.pt", record.epoch, True)
        self.on_progress({
            "seed": self.seed, "epoch": record.epoch, "epochs": self.recipe.train.epochs,
            "loss": record.train_loss, "metric": self.metric, "val": val_score,
            "test": (record.test.get("mean", {}) or {}).get(self.metric),
            "seconds": record.seconds, "graphs_per_s": record.graphs_per_s,
            "best": record.epoch == self.best_epoch, "done_epoch": True,
        })

    def _result(self) -> ReplicateResult:
        """Scores of best.pt on val and test (reloaded, so they are exactly what was saved)."""
        self.dist.barrier()  # rank 0 has written best.pt and metrics.csv
        best = load_checkpoint(self.out_dir / "best.pt", map_location=self.device)
        self.model.load_state_dict(best["model_state"])
        self._calibrate()
        if self.domain is not None and self.dist.is_main:
            write_domain(self.out_dir / "best.pt", self.domain)
        rows = _read_metrics(self.out_dir / "metrics.csv")
        seconds = sum(float(r["seconds"]) for r in rows)
        graphs = sum(float(r["graphs_per_s"]) * float(r["seconds"]) for r in rows)
        return ReplicateResult(
            seed=self.seed, best_epoch=self.best_epoch, best_val=self.best_val,
            val=self._evaluate(self.split.val), test=self._evaluate(self.split.test),
            epochs_run=len(rows), train_seconds=seconds,
            graphs_per_s=graphs / seconds if seconds else 0.0,
        )


    def _calibrate(self) -> None:
        """Fit calibration on the validation split with best.pt's weights (already loaded)
        and store it in best.pt under "calibration" (molsam.train.calibration): temperature
        and isotonic scaling for classification, z-scaling of an MVE sigma and 90%
        split-conformal intervals for regression. Every rank predicts its part; rank 0
        writes."""
        indices = self.split.val
        if len(indices) == 0:
            return
        raw = predict_raw(self.model, self.source, self.dist.part(indices), batch_size=256)
        raw = self.dist.gather_parts(raw, len(indices)).cpu().numpy()
        outputs = outputs_from_raw(raw, self.task, self.scaler, self.num_classes, self.loss)
        labels = self.source.y[torch.as_tensor(indices, device=self.device)].cpu().numpy()
        self.val_outputs = (outputs, labels)
        if self.dist.is_main:
            entry = fit_entry(outputs, labels, self.task, self.num_classes,
                              data=str(self.recipe.data.path), split="val")
            write_calibration(self.out_dir / "best.pt", calibration_record(entry))


def _pop_diagnostics(optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's per-epoch diagnostics (GraphSAM's SAM cosine), {} for the others."""
    pop = getattr(optimizer, "pop_diagnostics", None)
    return pop() if callable(pop) else {}


# ---------------------------------------------------------------------------- metrics.csv
def _metric_columns(task: str) -> list[str]:
    names = metric_names(task)
    return [f"val_{m}" for m in names] + [f"test_{m}" for m in names]


def _append_metrics(path: Path, record: EpochRecord, task: str, diagnostics: bool) -> None:
    """One row; `diagnostics` (train.log_sam_cosine) adds the DIAGNOSTIC_COLUMNS."""
    columns = ["epoch", "train_loss", *_metric_columns(task), "lr", "rho", "seconds",
               "graphs_per_s"]
    if diagnostics:
        columns += list(DIAGNOSTIC_COLUMNS)
    row = {"epoch": record.epoch, "train_loss": f"{record.train_loss:.6g}",
           "lr": f"{record.lr:.6g}", "rho": f"{record.rho:.6g}",
           "seconds": f"{record.seconds:.4f}", "graphs_per_s": f"{record.graphs_per_s:.1f}"}
    for part, scores in (("val", record.val), ("test", record.test)):
        for name in metric_names(task):
            value = (scores.get("mean") or {}).get(name) if scores else None
            row[f"{part}_{name}"] = "" if value is None else f"{value:.6g}"
    for name in DIAGNOSTIC_COLUMNS if diagnostics else ():
        value = record.diagnostics.get(name)
        row[name] = "" if value is None else f"{value:.6g}"
    new = not path.exists()
    size = 0 if new else path.stat().st_size
    with naming(path):  # a full disk: an OSError naming metrics.csv, and no half row left
        try:
            with open(path, "a", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=columns)
                if new:
                    writer.writeheader()
                writer.writerow(row)
        except OSError:
            with contextlib.suppress(OSError):
                os.truncate(path, size)
            raise


def _read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _truncate_metrics(path: Path, epochs: int) -> None:
    """Keep the rows of epochs < `epochs` (a resumed run rewrites the epochs after last.pt)."""
    if not path.exists():
        return
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    kept = [rows[0]] + [r for r in rows[1:] if int(r[0]) < epochs]
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(kept)
