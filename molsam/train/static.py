"""Static-shape training steps: padded batches, and on CUDA one captured graph per bucket.

An eager step of molsam's model at drug-like sizes is a few hundred small kernel launches; on a
GPU the launches, not the arithmetic, set the pace. With every batch padded to one of a few
shapes (molsam.data.buckets), the whole step (forward, backward, the optimizer's perturbation and
restore, GraphSAM's moving average, Adam) is captured once per shape as a CUDA graph
(torch.cuda.graph) and replayed: one launch per step.

What capture requires, and how it is met here:
- Adam with `capturable=True` (its step counters and bias corrections stay on the device) and the
  learning rate and rho as 0-dim device tensors that schedules fill in place (a Python float
  would be baked into the graph at capture).
- No host sync and no Python branch on tensor values in the step: molsam's optimizers keep norms
  as device tensors; a GraphSAM re-anchor step (a branch on a host flag, once per K epochs) and
  the first steps of each shape run eagerly; `train.log_sam_cosine` (which times itself) and
  optimizers with host-side per-step schedules (samk, looksam, aesam, rst) are not captured.
- Inputs at fixed addresses: each shape owns static input buffers that a batch is copied into.
- Host-side counters the optimizer updates in Python (SAM-type `_counters`, e.g. `steps`) do not
  run on replay: their change during capture is recorded and applied after every replay.
- Autocast's weight-cast cache is disabled inside captured regions (torch's requirement).
- All shapes of one trainer share one graph memory pool, so memory is that of the largest
  step, not the sum over shapes. That is safe because nothing a graph leaves behind is read by
  another one: each step recreates the gradients (zero_grad(set_to_none=True) inside the graph),
  its loss is copied out right after the replay, and optimizer state (Adam's moments and step,
  GraphSAM's estimate) is created by eager steps before any capture, outside the pool; a capture
  that would create optimizer state is refused.

On the CPU the padded step runs eagerly (same loss and gradients as the unpadded one; see
tests/unit/test_static_shapes.py), on finer bucket rules than CUDA's with the self-attention in
two groups where that pays (molsam.data.buckets: why each rule). Measured (bbbp store,
recipes/bbbp.yaml's model: hidden 64 x 3 layers, 4 heads, dropout 0.1, GraphSAM, fp32, one
thread; process CPU time, 32 steps per configuration interleaved batch by batch, same batches;
ratio = eager time / padded time, spread = min-max over 4 runs of 8 steps):

    python benchmarks/padding_cost.py --store STORE --batch-sizes 32 128 --steps 32 \
        --clock process [--sort-by-size on]

    batch  sort_by_size  CPU rules           CUDA set on the CPU   attention pairs (CPU rules)
    32     off           1.16x (1.12-1.22)   0.89x (0.86-0.93)     0.42x eager's
    128    off           1.42x (1.36-1.49)   0.85x (0.80-0.91)     0.29x eager's
    32     on            0.94x (0.90-0.99)   0.91x (0.88-0.93)     1.45x eager's
    128    on            0.98x (0.92-1.02)   0.87x (0.81-0.94)     1.64x eager's

The CPU rules in one attention group (before the grouping) measured 1.00x (0.96-1.02) at batch
32 and 1.01x at 128 (unsorted): padding buys nothing on the CPU; the gain is the grouped
attention, which only a padded batch has (its layout is chosen on the host from the molecule
sizes). Size-sorted batches leave it nothing to gain, and there the padded step is 2-6% slower
than eager (L rounded up to 16 on tight batches, the padding graph's row; molsam.data.buckets).

`train.static_shapes: auto` nonetheless stays eager on the CPU (use_static_shapes): the padded
step draws dropout masks over other shapes and sums in another order, so a CPU run's numbers
would change from one molsam version to the next, and resumable benchmark grids already half
run eagerly (docs/RESULTS.md) would mix two kinds of step. `true` takes the faster step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor

from molsam.data.batching import BatchSource, GraphBatch
from molsam.data.buckets import Buckets, BucketShape, gather_padded
from molsam.optim.placement import settle_optimizer_state
from molsam.train.losses import masked_loss

log = logging.getLogger(__name__)

#: Algorithms whose step has no host-side schedule, so one captured graph serves every step.
CAPTURABLE_OPTIMIZERS = ("adam", "sam", "asam", "graphsam")
#: Eager steps of a shape before it is captured (torch's advice: warm up on a side stream).
WARMUP_STEPS = 2


def use_static_shapes(setting: str | bool, device: torch.device) -> bool:
    """`train.static_shapes`: true/false, or "auto" (padded and captured on CUDA only).

    On the CPU the padded step is faster on shuffled batches (1.16x at batch 32, 1.42x at 128
    on BBBP; with train.sort_by_size 0.94-0.98x; module docstring) but gives other numbers than
    the eager step (dropout masks over other shapes, another summation order), so "auto" keeps
    the CPU's eager step: a recipe's results do not change under a user, nor inside a benchmark
    grid resumed cell by cell. `true` opts in."""
    if setting == "auto":
        return device.type == "cuda"
    return bool(setting)


@dataclass
class _Captured:
    graph: "torch.cuda.CUDAGraph"
    batch: GraphBatch  # static input buffers
    targets: Tensor
    loss: Tensor  # static output
    counter_delta: dict


class StaticSteps:
    """Training steps on bucketed static shapes for one trainer.

    Args:
        model, optimizer, scheduler: as the trainer built them; with `capture` on CUDA the
            optimizer is made capturable here (settle_optimizer_state: capturable Adam, lr and
            rho as device tensors).
        task: "classification", "regression" or "multiclass" (the masked loss; multiclass
            with `num_classes`, classes per target).
        source: the store on the training device; targets: float32 [G_store, T] on the device.
        batch_size: the trainer's batch size (the graphs of every shape derive from it).
        autocast_dtype: torch.bfloat16 or None.
        capture: replay CUDA graphs (CUDA only); False runs the padded step eagerly.
        can_capture_now: called before each step; False forces an eager step (e.g. a GraphSAM
            re-anchor is pending).
        loss: train.loss, "mse" or "mve" (molsam.train.losses.masked_loss).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler,
        task: str,
        source: BatchSource,
        targets: Tensor,
        batch_size: int,
        autocast_dtype: torch.dtype | None,
        capture: bool,
        can_capture_now: Callable[[], bool] = lambda: True,
        num_classes: list[int] | None = None,
        loss: str = "mse",
    ) -> None:
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.task, self.source, self.targets = task, source, targets
        self.num_classes = num_classes
        self.loss = loss
        self.buckets = Buckets.for_device(batch_size, source.device)
        self.autocast_dtype = autocast_dtype
        self.capture = capture and source.device.type == "cuda"
        self.can_capture_now = can_capture_now
        self.graphs: dict[BucketShape, _Captured] = {}
        self.warm: dict[BucketShape, int] = {}
        self.shapes_seen: set[BucketShape] = set()
        #: Steps run so far by replaying a graph, and eagerly (warm-up, re-anchor, CPU).
        self.replayed = 0
        self.eager = 0
        self._side = torch.cuda.Stream(source.device) if self.capture else None
        self._pool = None  # shared by every shape's graph (see the module docstring)
        if self.capture:
            settle_optimizer_state(optimizer, capturable=True)

    # ------------------------------------------------------------------------------- step
    def _step(self, batch: GraphBatch, targets: Tensor, capturing: bool) -> Tensor:
        """zero_grad + optimizer.step(closure) on a padded batch; returns the loss tensor."""
        cast = nullcontext()
        if self.autocast_dtype is not None:
            # Autocast caches weight casts across calls; a captured graph must not (torch).
            cast = torch.autocast(batch.atom_codes.device.type, dtype=self.autocast_dtype,
                                  cache_enabled=not capturing)

        def closure() -> Tensor:
            with cast:
                output = self.model(batch)
            loss = masked_loss(output.float(), targets, self.task, self.num_classes,
                               loss=self.loss)
            loss.backward()
            return loss

        self.optimizer.zero_grad(set_to_none=True)
        return self.optimizer.step(closure).detach()

    def step(self, index: np.ndarray, index_on_device: Tensor) -> Tensor:
        """One training step on molecules `index` (host) / `index_on_device`; returns the loss
        (0-dim device tensor, not synchronized)."""
        batch, targets, shape = gather_padded(
            self.source, self.buckets, index, index_on_device, self.targets)
        self.shapes_seen.add(shape)
        if not self.capture or not self.can_capture_now():
            loss = self._step(batch, targets, capturing=False)
            self.eager += 1
        elif shape in self.graphs:
            loss = self._replay(self.graphs[shape], batch, targets)
        elif self.warm.get(shape, 0) < WARMUP_STEPS:
            loss = self._warm_step(shape, batch, targets)
            self.eager += 1
        else:
            self.graphs[shape] = captured = self._capture(batch, targets)
            loss = self._replay(captured, batch, targets)
        if self.scheduler is not None:
            self.scheduler.step()
        return loss

    # ----------------------------------------------------------------------------- CUDA
    def _warm_step(self, shape: BucketShape, batch: GraphBatch, targets: Tensor) -> Tensor:
        """An eager step on a side stream (torch's recipe before capturing a shape)."""
        side, current = self._side, torch.cuda.current_stream()
        side.wait_stream(current)
        with torch.cuda.stream(side):
            loss = self._step(batch, targets, capturing=False)
        current.wait_stream(side)
        self.warm[shape] = self.warm.get(shape, 0) + 1
        return loss

    def _capture(self, batch: GraphBatch, targets: Tensor) -> _Captured:
        """Record the step on static copies of the inputs. Recording runs no kernels, so the
        parameters do not move here; the caller replays the graph for this batch."""
        static = _clone_batch(batch)
        static_targets = targets.clone()
        counters = getattr(self.optimizer, "_counters", {})
        before = dict(counters)
        state_before = _state_entries(self.optimizer)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        # Gradients are re-created inside the graph (in its memory pool), as in torch's
        # whole-network capture example.
        self.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph, pool=self._pool):
            loss = self._step(static, static_targets, capturing=True)
        if self._pool is None:
            self._pool = graph.pool()
        if _state_entries(self.optimizer) != state_before:
            raise RuntimeError(
                "optimizer state was created inside a CUDA graph capture (a parameter got its "
                "first gradient there); its memory would be shared with other shapes' graphs"
            )
        delta = {}
        for key, value in counters.items():
            if isinstance(value, int) and not isinstance(value, bool):
                delta[key] = value - before.get(key, 0)
            elif value != before.get(key):
                raise RuntimeError(f"optimizer counter {key!r} changed during capture")
        counters.update(before)  # recording is not a step; replays apply the delta
        log.debug("captured a CUDA graph for a new batch shape")
        return _Captured(graph, static, static_targets, loss, delta)

    def _replay(self, captured: _Captured, batch: GraphBatch, targets: Tensor) -> Tensor:
        for f in fields(GraphBatch):
            value = getattr(batch, f.name)
            if isinstance(value, Tensor):
                getattr(captured.batch, f.name).copy_(value)
        captured.targets.copy_(targets)
        captured.graph.replay()
        self.replayed += 1
        counters = getattr(self.optimizer, "_counters", None)
        if counters is not None:
            for key, change in captured.counter_delta.items():
                counters[key] += change
        # The static output is overwritten by the next replay: hand out a copy.
        return captured.loss.clone()


def _state_entries(optimizer: torch.optim.Optimizer) -> int:
    """Number of per-parameter state tensors of the optimizer and its base optimizer."""
    total = 0
    for opt in {id(o): o for o in (optimizer, getattr(optimizer, "base_optimizer", optimizer))
                }.values():
        total += sum(len(s) for s in opt.state.values())
    return total


def _clone_batch(batch: GraphBatch) -> GraphBatch:
    moved = {}
    for f in fields(GraphBatch):
        value = getattr(batch, f.name)
        moved[f.name] = value.clone() if isinstance(value, Tensor) else value
    return GraphBatch(**moved)
