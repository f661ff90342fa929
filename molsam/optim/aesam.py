"""AE-SAM: a SAM step only where the loss surface looks sharp.

Jiang, Yang, Zhang, Kwok, "An Adaptive Policy to Employ Sharpness-Aware Minimization",
ICLR 2023, arXiv 2304.14647. The squared gradient norm ‖g‖² is large in sharp regions, so its
running mean μ and variance σ² (exponential moving averages with factor δ) decide each step:

    g = ∇L_B(θ)                                           (pass 1)
    μ ← δ μ + (1 − δ) ‖g‖²;   σ² ← δ σ² + (1 − δ)(‖g‖² − μ)²
    c_t = c_start + (c_end − c_start) · min(t / total_steps, 1)   (linear threshold schedule)
    if ‖g‖² ≥ μ + c_t σ:   SAM step (pass 2 at θ + ρ g/‖g‖)
    else:                  plain step with g

A growing c_t makes SAM steps rarer as training settles. Defaults δ = 0.9, (c_start, c_end) =
(−1, 1) follow the paper's settings (μ and σ² start at 0).

Host synchronization: the SAM-or-plain decision is a Python branch on a device value, so every
step reads one boolean back to the host. This is inherent to the algorithm (the alternative, two
passes always, would defeat its purpose).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from molsam.optim._base import (
    Closure,
    OptimConfigError,
    ParamsT,
    SharpnessAwareOptimizer,
    check_nonnegative,
    check_positive_int,
    check_unit_interval,
    first_device,
    flat,
    global_norm,
    grads_by_group,
    sam_direction,
)


class AESAM(SharpnessAwareOptimizer):
    """AE-SAM around a base optimizer.

    Args:
        params: parameters or param-group dicts.
        base_optimizer: the optimizer class that takes the step (built inside, shares groups).
        rho: perturbation radius of the SAM steps (`group["rho"]`).
        total_steps: T, the number of steps over which c_t moves from c_start to c_end.
        delta: moving-average factor δ of the ‖g‖² statistics, in [0, 1).
        c_start, c_end: the threshold schedule's end points (finite).
        adaptive: ASAM's scale-invariant perturbation on SAM steps.
        **base_kwargs: passed to `base_optimizer`.

    Counters saved by `state_dict()`: steps, sam_steps, and the running mean/variance (0-dim
    device tensors). `step(closure)` returns the loss at the perturbed point on SAM steps and
    at θ on plain steps.
    """

    def __init__(
        self,
        params: ParamsT,
        base_optimizer: type[torch.optim.Optimizer] = torch.optim.Adam,
        *,
        rho: float = 0.05,
        total_steps: int,
        delta: float = 0.9,
        c_start: float = -1.0,
        c_end: float = 1.0,
        adaptive: bool = False,
        **base_kwargs: Any,
    ) -> None:
        check_nonnegative("rho", rho)
        check_positive_int("total_steps", total_steps)
        check_unit_interval("delta", delta)
        for name, value in (("c_start", c_start), ("c_end", c_end)):
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise OptimConfigError(f"{name} must be a finite number, got {value!r}")
        super().__init__(params, base_optimizer, {"rho": rho}, base_kwargs)
        self.total_steps = total_steps
        self.delta = float(delta)
        self.c_start = float(c_start)
        self.c_end = float(c_end)
        self.adaptive = bool(adaptive)
        device = first_device(self.param_groups)
        self._counters["sam_steps"] = 0
        self._counters["sq_mean"] = torch.zeros((), device=device)
        self._counters["sq_var"] = torch.zeros((), device=device)

    def threshold_at(self, step: int) -> float:
        """c_t of the linear schedule (held at c_end after total_steps)."""
        frac = min(step / self.total_steps, 1.0)
        return self.c_start + (self.c_end - self.c_start) * frac

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Any:  # type: ignore[override]
        c = self._counters
        loss = self._fresh_pass(closure)
        params, grads = grads_by_group(self.param_groups)
        sq = global_norm(flat(grads)).square()
        d = self.delta
        # Out of place (new tensors): a state dict saved earlier keeps its values.
        mean = c["sq_mean"] * d + sq * (1.0 - d)
        var = c["sq_var"] * d + (sq - mean).square() * (1.0 - d)
        c["sq_mean"], c["sq_var"] = mean, var
        sharp = sq >= mean + self.threshold_at(c["steps"]) * var.sqrt()
        if bool(sharp):  # host sync: the algorithm's own decision (see module docstring)
            directions = sam_direction(params, grads, self.adaptive, self._asam_weights(params))
            loss = self._sam_update(closure, params, directions)
            c["sam_steps"] += 1
        else:
            self.base_optimizer.step()
        c["steps"] += 1
        return loss
