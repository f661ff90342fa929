"""SAM and ASAM.

SAM (Foret et al., "Sharpness-Aware Minimization for Efficiently Improving Generalization",
ICLR 2021, arXiv 2010.01412) minimizes the worst loss in an L2 ball of radius ρ around the
weights, to first order:

    g = ∇L_B(θ)                       (pass 1, at θ)
    ε = ρ · g / ‖g‖₂                   (global norm over all parameters with a gradient)
    ω = ∇L_B(θ + ε)                   (pass 2, at the perturbed point)
    θ ← base_optimizer_step(θ, ω)      (the base optimizer steps at θ, not at θ + ε)

ASAM (Kwon et al., "ASAM: Adaptive Sharpness-Aware Minimization for Scale-Invariant Learning of
Deep Neural Networks", ICML 2021, arXiv 2102.11600) replaces the ball by one scaled element-wise
by T: ε = ρ · T²g / ‖T g‖₂, which is invariant to rescaling the weights. As in the authors' code
(SamsungLabs/ASAM, `ascent_step`), T = |w| + η with η = 0.01 for weights and T = 1 for biases
(`molsam.optim._base.asam_direction`); weights and biases are told apart by name when the
optimizer is built from `model.named_parameters()` (`'weight' in name`, as that code does), else by
dimension (a vector is a bias).

Two forward/backward passes per step.
"""

from __future__ import annotations

from typing import Any

import torch

from molsam.optim._base import (
    Closure,
    ParamsT,
    SharpnessAwareOptimizer,
    check_nonnegative,
    grads_by_group,
    sam_direction,
)


class SAM(SharpnessAwareOptimizer):
    """Sharpness-aware minimization around a base optimizer (ASAM with `adaptive=True`).

    Args:
        params: parameters or param-group dicts, as for any torch optimizer.
        base_optimizer: the optimizer class that takes the actual step (built inside, shares
            the param groups).
        rho: radius of the neighbourhood (`group["rho"]`, may be changed between steps).
        adaptive: ASAM's scale-invariant neighbourhood (one choice for all groups: the norm
            is global).
        **base_kwargs: passed to `base_optimizer` (lr, betas, weight_decay, ...).

    `step(closure)`: the closure runs forward and backward and returns the loss; the optimizer
    zeroes the gradients before each call. Returns the loss at the perturbed point.
    """

    def __init__(
        self,
        params: ParamsT,
        base_optimizer: type[torch.optim.Optimizer] = torch.optim.Adam,
        *,
        rho: float = 0.05,
        adaptive: bool = False,
        **base_kwargs: Any,
    ) -> None:
        check_nonnegative("rho", rho)
        super().__init__(params, base_optimizer, {"rho": rho}, base_kwargs)
        self.adaptive = bool(adaptive)

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Any:  # type: ignore[override]
        self._fresh_pass(closure)
        params, grads = grads_by_group(self.param_groups)
        directions = sam_direction(params, grads, self.adaptive, self._asam_weights(params))
        loss = self._sam_update(closure, params, directions)
        self._counters["steps"] += 1
        return loss
