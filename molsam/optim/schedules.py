"""Learning-rate and perturbation-radius schedules: small pure functions, plus one LR scheduler.

- `rho_at`: GraphSAM's gradient-ball schedule ρ_k = ρ₀ · γ^⌊k/λ⌋ (Wang et al., ICLR 2024,
  arXiv 2406.13137). A pure function of the epoch: it never compounds (the reference code
  multiplies the current ρ every epoch, which gives ρ₀ · γ^(k(k+1)/2)).
- `noam_lr` / `NoamLR`: the learning-rate schedule the GraphSAM paper trains with, as in
  chemprop's NoamLR: linear warm-up from init_lr to max_lr, then exponential decay that reaches
  final_lr at the last step. Step-based (one scheduler step per optimizer step).
- `transformer_lr` / `TransformerLR`: Vaswani et al.'s warm-up schedule ("Attention Is All You
  Need", NeurIPS 2017, eq. 3), which the GraphSAM reference code gives its Adam baseline
  (its `ScheduledOptim`) while SAM and GraphSAM get Noam.
- `reference_decay`: the compounding ρ (and radius) decay of the GraphSAM reference code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.optim.lr_scheduler import LRScheduler

from molsam.optim._base import OptimConfigError


def rho_at(epoch: int, rho0: float, gamma: float = 0.5, every: int = 1) -> float:
    """ρ for `epoch` (0-based): rho0 · gamma ** (epoch // every). Pure; never compounds."""
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise OptimConfigError(f"every must be an integer >= 1, got {every!r}")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise OptimConfigError(f"epoch must be an integer >= 0, got {epoch!r}")
    if not (isinstance(rho0, (int, float)) and math.isfinite(rho0) and rho0 >= 0):
        raise OptimConfigError(f"rho0 must be a finite number >= 0, got {rho0!r}")
    if not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma >= 0):
        raise OptimConfigError(f"gamma must be a finite number >= 0, got {gamma!r}")
    return rho0 * gamma ** (epoch // every)


def rho_schedule_is_step(schedule: str, optimizer_name: str) -> bool:
    """Whether `rho_at`'s decay applies: "step" always, "constant" never, "auto" for graphsam
    only (its paper's schedule; SAM and the other baselines keep a constant radius, as in
    their own papers, so a comparison does not hand them GraphSAM's decay)."""
    if schedule not in ("auto", "step", "constant"):
        raise OptimConfigError(f"rho schedule must be auto, step or constant, got {schedule!r}")
    return schedule == "step" or (schedule == "auto" and optimizer_name == "graphsam")


def reference_decay(epoch: int, gamma: float = 0.5, every: int = 1) -> float:
    """The factor the GraphSAM reference code has multiplied ρ and radius by at `epoch`.

    It multiplies the current values by gamma ** (k / every) at every epoch k divisible by
    `every`, so by epoch k the factor is gamma ** (M (M + 1) / 2), M = k // every (with gamma 0.5
    and every 1: 1, 0.5, 0.125, 0.0156, ~1e-3 at epochs 0-4). Pure (molsam computes it from the
    epoch; the reference keeps the running product).
    """
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise OptimConfigError(f"every must be an integer >= 1, got {every!r}")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise OptimConfigError(f"epoch must be an integer >= 0, got {epoch!r}")
    m = epoch // every
    return gamma ** (m * (m + 1) / 2)


def set_group_value(optimizer: torch.optim.Optimizer, key: str, value: float) -> None:
    """Write `value` into every param group that has `key` (e.g. the reference's radius)."""
    for group in optimizer.param_groups:
        if key in group:
            group[key] = value


def set_rho(optimizer: torch.optim.Optimizer, rho: float) -> None:
    """Write ρ into every param group that has one (a no-op for plain optimizers such as Adam)."""
    for group in optimizer.param_groups:
        if "rho" in group:
            if isinstance(group["rho"], torch.Tensor):
                group["rho"].fill_(rho)  # a captured CUDA graph reads this tensor at replay
            else:
                group["rho"] = rho


def _check_noam(warmup_steps: int, total_steps: int, lrs: dict[str, float]) -> None:
    if not isinstance(warmup_steps, int) or isinstance(warmup_steps, bool) or warmup_steps < 0:
        raise OptimConfigError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}")
    if not isinstance(total_steps, int) or isinstance(total_steps, bool) \
            or total_steps < max(warmup_steps, 1):
        raise OptimConfigError(
            f"total_steps must be an integer >= max(warmup_steps, 1) = {max(warmup_steps, 1)}, "
            f"got {total_steps!r}"
        )
    for name, value in lrs.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise OptimConfigError(f"{name} must be a finite number > 0, got {value!r}")


def noam_lr(
    step: int,
    *,
    warmup_steps: int,
    total_steps: int,
    init_lr: float,
    max_lr: float,
    final_lr: float,
) -> float:
    """Noam learning rate at optimizer step `step` (0-based), as chemprop's NoamLR.

    step ≤ warmup_steps:  init_lr + (max_lr − init_lr) · step / warmup_steps
    after:                max_lr · γ^(step − warmup_steps),
                          γ = (final_lr / max_lr) ^ (1 / (total_steps − warmup_steps))
    step ≥ total_steps:   final_lr
    So: init_lr at step 0, max_lr at the end of warm-up, final_lr at the last step.
    """
    _check_noam(warmup_steps, total_steps,
                {"init_lr": init_lr, "max_lr": max_lr, "final_lr": final_lr})
    if step < 0:
        raise OptimConfigError(f"step must be >= 0, got {step!r}")
    if step <= warmup_steps and warmup_steps > 0:
        return init_lr + (max_lr - init_lr) * step / warmup_steps
    if step >= total_steps:
        return final_lr
    decay_steps = total_steps - warmup_steps
    gamma = (final_lr / max_lr) ** (1.0 / decay_steps)
    return max_lr * gamma ** (step - warmup_steps)


def _per_group(name: str, value: float | Sequence[float], n: int) -> list[float]:
    if isinstance(value, (int, float)):
        return [float(value)] * n
    values = list(value)
    if len(values) != n:
        raise OptimConfigError(f"{name}: got {len(values)} values for {n} param groups")
    return [float(v) for v in values]


class NoamLR(LRScheduler):
    """Noam schedule as a torch LR scheduler; call `scheduler.step()` after every optimizer step.

    Works on any optimizer, molsam's wrappers included (they share `param_groups` with their
    base optimizer, so the lr written here is the lr the base optimizer uses).

    Args:
        optimizer: the optimizer whose groups' `lr` is set.
        warmup_epochs: epochs of linear warm-up (may be fractional, e.g. 0.5).
        total_epochs: epochs of training; final_lr is reached at the last step.
        steps_per_epoch: optimizer steps per epoch (batches per epoch).
        init_lr, max_lr, final_lr: one value, or one per param group.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_epochs: float,
        total_epochs: int,
        steps_per_epoch: int,
        init_lr: float | Sequence[float],
        max_lr: float | Sequence[float],
        final_lr: float | Sequence[float],
        last_epoch: int = -1,
    ) -> None:
        if not isinstance(steps_per_epoch, int) or isinstance(steps_per_epoch, bool) \
                or steps_per_epoch < 1:
            raise OptimConfigError(
                f"steps_per_epoch must be an integer >= 1, got {steps_per_epoch!r}"
            )
        if not (isinstance(warmup_epochs, (int, float)) and warmup_epochs >= 0):
            raise OptimConfigError(f"warmup_epochs must be >= 0, got {warmup_epochs!r}")
        if not isinstance(total_epochs, int) or isinstance(total_epochs, bool) or total_epochs < 1:
            raise OptimConfigError(f"total_epochs must be an integer >= 1, got {total_epochs!r}")
        n = len(optimizer.param_groups)
        self.warmup_steps = int(round(warmup_epochs * steps_per_epoch))
        self.total_steps = total_epochs * steps_per_epoch
        self.init_lrs = _per_group("init_lr", init_lr, n)
        self.max_lrs = _per_group("max_lr", max_lr, n)
        self.final_lrs = _per_group("final_lr", final_lr, n)
        for i in range(n):  # validate once, here, rather than at the first step
            _check_noam(self.warmup_steps, self.total_steps, {
                "init_lr": self.init_lrs[i], "max_lr": self.max_lrs[i],
                "final_lr": self.final_lrs[i]})
        super().__init__(optimizer, last_epoch)

    def lr_at(self, step: int) -> list[float]:
        """Learning rate of every group at optimizer step `step` (pure)."""
        return [
            noam_lr(step, warmup_steps=self.warmup_steps, total_steps=self.total_steps,
                    init_lr=a, max_lr=b, final_lr=c)
            for a, b, c in zip(self.init_lrs, self.max_lrs, self.final_lrs)
        ]

    def get_lr(self) -> list[float]:  # type: ignore[override]
        # `last_epoch` counts scheduler steps, i.e. optimizer steps here.
        return self.lr_at(max(self.last_epoch, 0))



def transformer_lr(step: int, *, factor: float, d_model: int, warmup_steps: int) -> float:
    """factor * d_model^-0.5 * min(t^-0.5, t * warmup_steps^-1.5) with t = step + 1 (the
    reference counts steps from 1); peaks at t = warmup_steps."""
    if not isinstance(warmup_steps, int) or isinstance(warmup_steps, bool) or warmup_steps < 1:
        raise OptimConfigError(f"warmup_steps must be an integer >= 1, got {warmup_steps!r}")
    if step < 0:
        raise OptimConfigError(f"step must be >= 0, got {step!r}")
    t = step + 1
    return factor * d_model ** -0.5 * min(t ** -0.5, t * warmup_steps ** -1.5)


class TransformerLR(LRScheduler):
    """The transformer warm-up schedule (`transformer_lr`) as a torch LR scheduler; call
    `scheduler.step()` after every optimizer step. The lr in force for optimizer step t (from
    0) is transformer_lr(t), as the reference sets it just before each step.

    Args:
        optimizer: the optimizer whose groups' `lr` is set (the same lr for every group).
        factor: the reference's `warmup_factor` (per dataset, 0.1-0.2).
        d_model: the model width (256 in every CoMPT setting).
        warmup_epochs, steps_per_epoch: warm-up length (the reference: 30 epochs).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, factor: float, d_model: int,
                 warmup_epochs: float, steps_per_epoch: int, last_epoch: int = -1) -> None:
        if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor > 0):
            raise OptimConfigError(f"factor must be a finite number > 0, got {factor!r}")
        self.factor, self.d_model = float(factor), int(d_model)
        self.warmup_steps = max(1, int(round(warmup_epochs * steps_per_epoch)))
        super().__init__(optimizer, last_epoch)

    def lr_at(self, step: int) -> float:
        return transformer_lr(step, factor=self.factor, d_model=self.d_model,
                              warmup_steps=self.warmup_steps)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        # A group's `lr_scale` (the encoder's when fine-tuning) multiplies its learning rate.
        lr = self.lr_at(max(self.last_epoch, 0))
        return [lr * group.get("lr_scale", 1.0) for group in self.optimizer.param_groups]
