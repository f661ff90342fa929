"""LookSAM: a full SAM step every k steps, the sharpness direction reused in between.

Liu, Mai, Chen, Hsieh, You, "Towards Efficient and Scalable Sharpness-Aware Minimization",
CVPR 2022, arXiv 2203.02714. The SAM gradient g_s = ∇L(θ + ρ g/‖g‖) splits into a part parallel
to the plain gradient g and a part g_v orthogonal to it; g_v changes slowly, so it is kept:

    every k-th step (2 passes):  g = ∇L_B(θ);  g_s = ∇L_B(θ + ρ g/‖g‖₂)
                                 g_v ← g_s − (⟨g, g_s⟩ / ‖g‖²) g;  step with g_s
    other steps (1 pass):        g = ∇L_B(θ);  step with g + α (‖g‖/‖g_v‖) g_v

Norms and the inner product are global over the parameters with a gradient. Settings of the
GraphSAM paper's comparison (Wang et al., ICLR 2024): k = 8, α = 0.2, ρ = 1e-4.
"""

from __future__ import annotations

from typing import Any

import torch

from molsam.optim._base import (
    Closure,
    ParamsT,
    Perturbation,
    SharpnessAwareOptimizer,
    check_nonnegative,
    check_positive_int,
    flat,
    global_norm,
    grads_by_group,
    inv_norm,
    sam_direction,
)


def _dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    """Global inner product as a 0-dim device tensor (torch has no foreach dot product)."""
    return torch.stack([t.sum() for t in torch._foreach_mul(a, b)]).sum()


class LookSAM(SharpnessAwareOptimizer):
    """LookSAM around a base optimizer.

    Args:
        params: parameters or param-group dicts.
        base_optimizer: the optimizer class that takes the step (built inside, shares groups).
        rho: perturbation radius of the SAM steps (`group["rho"]`).
        k: a SAM step every k steps (>= 1; k = 1 is SAM).
        alpha: weight α of the reused orthogonal component (>= 0).
        **base_kwargs: passed to `base_optimizer`.

    State: `self.state[p]["g_v"]`. `step(closure)` returns the loss at the perturbed point on
    SAM steps and at θ on the steps in between. No host synchronization.
    """

    def __init__(
        self,
        params: ParamsT,
        base_optimizer: type[torch.optim.Optimizer] = torch.optim.Adam,
        *,
        rho: float = 0.05,
        k: int = 8,
        alpha: float = 0.2,
        **base_kwargs: Any,
    ) -> None:
        check_nonnegative("rho", rho)
        check_positive_int("k", k)
        check_nonnegative("alpha", alpha)
        super().__init__(params, base_optimizer, {"rho": rho, "alpha": alpha}, base_kwargs)
        self.k = k

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Any:  # type: ignore[override]
        loss = self._fresh_pass(closure)
        params, grads = grads_by_group(self.param_groups)
        if self._counters["steps"] % self.k == 0:
            loss = self._sam_step(closure, params, grads)
        else:
            self._reuse_step(params, grads)
        self._counters["steps"] += 1
        return loss

    def _sam_step(
        self, closure: Closure | None, params: list[list[torch.Tensor]],
        grads: list[list[torch.Tensor]],
    ) -> Any:
        g = [torch._foreach_clone(gs) if gs else [] for gs in grads]  # .grad is reset below
        directions = sam_direction(params, g, adaptive=False)
        perturbation = Perturbation(self.param_groups, params, directions)
        loss = self._fresh_pass(closure)
        perturbation.restore()
        # g_v = g_s − (⟨g, g_s⟩/‖g‖²) g over the parameters that have both gradients.
        g_flat = flat(g)
        ps_flat = flat(params)
        both = [i for i, p in enumerate(ps_flat) if p.grad is not None]
        g_b = [g_flat[i] for i in both]
        gs_b = [ps_flat[i].grad for i in both]
        if both:
            coef = _dot(g_b, gs_b) * inv_norm(global_norm(g_b)).square()
            g_v = torch._foreach_sub(gs_b, torch._foreach_mul(g_b, coef))
            for i, v in zip(both, g_v):
                self.state[ps_flat[i]]["g_v"] = v
        self.base_optimizer.step()
        return loss

    def _reuse_step(
        self, params: list[list[torch.Tensor]], grads: list[list[torch.Tensor]]
    ) -> None:
        # ‖g‖ over all gradients of this pass, ‖g_v‖ over all stored components: both global.
        parts = []
        for group, ps, gs in zip(self.param_groups, params, grads):
            have = [i for i, p in enumerate(ps) if "g_v" in self.state[p]]
            parts.append((group, [gs[i] for i in have], [self.state[ps[i]]["g_v"] for i in have]))
        all_gv = [v for _, _, g_v in parts for v in g_v]
        if all_gv:
            ratio = global_norm(flat(grads)) * inv_norm(global_norm(all_gv))  # 0-dim, no sync
            for group, g_h, g_v in parts:
                if g_h:
                    torch._foreach_add_(g_h, torch._foreach_mul(g_v, ratio * group["alpha"]))
        self.base_optimizer.step()
