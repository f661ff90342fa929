"""Data-parallel training over the processes torchrun starts (one per GPU; gloo on CPUs).

    torchrun --nproc-per-node N -m molsam train recipe.yaml     # one node, N GPUs
    torchrun --nnodes M --node-rank R --rdzv-endpoint HOST:PORT --nproc-per-node N \\
        -m molsam train recipe.yaml                              # M nodes
    molsam train recipe.yaml --devices N                         # launches the first for you

torchrun gives every process RANK, LOCAL_RANK, WORLD_SIZE and the rendezvous address in its
environment; `Distributed.from_environment` reads them and joins the process group (NCCL on
GPUs, gloo on CPUs). The trainer asks this module four things, and the optimizers never see it:

- which molecules are mine: `train.batch_size` is the GLOBAL batch. Every rank draws the same
  epoch permutation (same seed) and takes its contiguous part of each global batch, so the ranks'
  parts are disjoint and together are exactly the batch one process would have taken.
- the loss and its gradient: each rank sums its masked per-label losses and divides by the
  number of labels in the whole global batch (counted on the host from the permutation, no
  communication), then the gradients are summed over ranks inside the optimizer's closure
  (`all_reduce_gradients`). The sum of the ranks' gradients is then the gradient of the global
  batch's mean loss, the same as one process on the global batch (up to summation order), and
  every rank holds identical gradients at every closure call. That is what keeps SAM's and
  GraphSAM's perturbations, GraphSAM's moving average and the base optimizer's moments
  identical on every rank without ever synchronizing optimizer state (Li et al., "PyTorch
  Distributed: Experiences on Accelerating Data Parallel Training", VLDB 2020, for the
  all-reduce data-parallel scheme; here one flat all-reduce per closure call instead of DDP's
  bucketed hooks, because a sharpness-aware step runs backward more than once per step and
  must all-reduce after each, including GraphSAM's extra re-anchor pass).
- validation: each rank predicts a contiguous part of the molecules, the parts are gathered on
  every rank (so early stopping decides the same everywhere).
- who writes: rank 0 alone writes checkpoints, metrics, plots and summaries; the others wait at
  a barrier before reading what it wrote. Resuming reads last.pt on every rank, so the run
  directory must be on a file system every node sees.

Static shapes (molsam.train.static: padded buckets, CUDA graphs) are not combined with this yet:
a multi-process run takes the trainer's eager step.

Dropout: every rank would otherwise draw the same masks (same seed); in a multi-process run the
torch generator is reseeded at each epoch start from (seed, epoch, rank), which also keeps
resume exact. With one process nothing here changes what training computes.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from molsam.errors import ConfigError

log = logging.getLogger("molsam")

#: torchrun's environment variables (torch.distributed.run).
_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


@dataclass(frozen=True)
class Distributed:
    """This process's place in a data-parallel run; the default is one process (a no-op)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    # --------------------------------------------------------------------------------- set-up
    @classmethod
    def from_environment(cls) -> "Distributed":
        """RANK / LOCAL_RANK / WORLD_SIZE from torchrun; one process when they are absent."""
        values = {}
        for name in _ENV:
            text = os.environ.get(name)
            if text is None:
                continue
            try:
                values[name] = int(text)
            except ValueError:
                raise ConfigError(f"environment variable {name}={text!r}: expected an integer "
                                  "(set by torchrun)") from None
        if values.get("WORLD_SIZE", 1) <= 1:
            return cls()
        missing = [n for n in _ENV if n not in values]
        if missing:
            raise ConfigError(f"WORLD_SIZE={values['WORLD_SIZE']} but {', '.join(missing)} not "
                              "set: start multi-process training with torchrun")
        return cls(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"])

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """This rank's device: cuda:LOCAL_RANK when training on CUDA, else `device` as is."""
        if not self.enabled or device.type != "cuda":
            return device
        count = torch.cuda.device_count()
        if self.local_rank >= count:
            raise ConfigError(f"train.devices: local rank {self.local_rank} has no GPU "
                              f"({count} visible); start at most {count} processes per node")
        device = torch.device("cuda", self.local_rank)
        torch.cuda.set_device(device)
        return device

    def join(self, device: torch.device) -> None:
        """Join torchrun's process group (NCCL for CUDA, gloo for CPU) unless already in one."""
        if not self.enabled or dist.is_initialized():
            return
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend, timeout=timedelta(minutes=30),
            device_id=device if device.type == "cuda" else None,
        )
        if dist.get_world_size() != self.world_size or dist.get_rank() != self.rank:
            raise ConfigError("process group disagrees with RANK/WORLD_SIZE")

    def agree(self, value: object) -> object:
        """Rank 0's `value` on every rank (a picklable builtin, such as the run directory)."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (say, featurizing into the cache), then the others."""
        if self.enabled and not self.is_main:
            dist.barrier()
        yield
        if self.enabled and self.is_main:
            dist.barrier()

    # ------------------------------------------------------------------------------- sharding
    def part(self, index: np.ndarray) -> np.ndarray:
        """This rank's contiguous part of `index` (parts differ in length by at most one)."""
        if not self.enabled:
            return index
        return np.array_split(index, self.world_size)[self.rank]

    def part_sizes(self, total: int) -> list[int]:
        return [len(p) for p in np.array_split(np.arange(total), self.world_size)]

    def train_bounds(self, size: int) -> tuple[int, int, bool]:
        """(lo, hi, counted): this rank trains on rows lo:hi of a global batch of `size`
        molecules (`part`'s rows), and whether their labels count.

        A global batch smaller than the world leaves some ranks without a molecule; such a rank
        still runs forward and backward (every rank must join each all-reduce with gradients
        of the same parameters) on the batch's first molecule with its labels masked out, so
        its gradients are exact zeros.
        """
        if not self.enabled:
            return 0, size, True
        sizes = self.part_sizes(size)
        lo = sum(sizes[: self.rank])
        hi = lo + sizes[self.rank]
        return (lo, hi, True) if hi > lo else (0, 1, False)

    @staticmethod
    def label_counts(present: np.ndarray, order: np.ndarray, batch_size: int) -> np.ndarray:
        """Labels present in each global batch of an epoch: float32 [steps].

        present: bool [G, T] (label not NaN) of the whole store; order: the epoch's permutation.
        Every rank computes it from the same arrays: no communication.
        """
        per_molecule = present[order].sum(axis=1)
        starts = np.arange(0, len(order), batch_size)
        return np.add.reduceat(per_molecule, starts).astype(np.float32)

    def dropout_seed(self, seed: int, epoch: int) -> int:
        """torch seed of this rank's dropout masks in `epoch` (different per rank)."""
        return int(np.random.SeedSequence([seed, epoch, self.rank]).generate_state(1)[0])

    # ---------------------------------------------------------------------------- collectives
    def all_reduce_gradients(self, params: Sequence[Tensor], loss: Tensor) -> Tensor:
        """Sum `.grad` of `params` and `loss` over ranks, in place, with one all-reduce.

        Returns the summed loss (0-dim). Every rank must pass the same parameters with a
        gradient (the model is the same everywhere, so it does). No host sync.
        """
        if not self.enabled:
            return loss
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads]
                         + [loss.detach().reshape(1).to(grads[0].dtype)])
        dist.all_reduce(flat)
        torch._foreach_copy_(grads, [piece.view_as(g) for piece, g in
                                     zip(flat[:-1].split([g.numel() for g in grads]), grads)])
        return flat[-1]

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers on every rank (they agree already when every rank
        seeds the same way; this makes it a guarantee)."""
        if not self.enabled:
            return
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)

    def gather_parts(self, local: Tensor, total: int) -> Tensor:
        """Rows of every rank's part (`part` of `total` items), in order, on every rank.

        local: [n_rank, ...] -> [total, ...]. Parts are padded to one length for all_gather.
        """
        if not self.enabled:
            return local
        sizes = self.part_sizes(total)
        longest = max(sizes)
        padded = local.new_zeros((longest, *local.shape[1:]))
        padded[: len(local)] = local
        pieces = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(pieces, padded)
        return torch.cat([piece[:size] for piece, size in zip(pieces, sizes)])


def shutdown() -> None:
    """Leave the process group (the CLI calls it once training is over)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ----------------------------------------------------------------------------------- launch
def under_torchrun() -> bool:
    """True inside a process torchrun started (it sets LOCAL_RANK and WORLD_SIZE)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def launch(devices: int, argv: Sequence[str]) -> int:
    """Run `molsam ARGV` in `devices` processes on this machine through torchrun; its exit code.

    Equivalent to `torchrun --standalone --nproc-per-node DEVICES -m molsam ARGV` (the children
    see torchrun's environment and do not launch again).
    """
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={devices}", "-m", "molsam", *argv]
    log.info("launching %d processes: %s", devices, " ".join(command[1:]))
    return subprocess.call(command)
