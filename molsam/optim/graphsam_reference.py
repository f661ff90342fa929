"""GraphSAM as the reference code computes it, to reproduce and attribute the paper's numbers.

Not the paper's equations (molsam.optim.graphsam is): this is the arithmetic of `GraphSAM` in
the authors' `CoMPT-main/sam.py` run by its `train_graph.py` under torch 1.x, where the training
loop zeroes the gradients after every step. Per minibatch t of an epoch:

- t = 0 (the trainer's `reanchor()`): one pass at θ gives g = ∇L; the estimate is the raw
  gradient, e ← g, and the scale is s = ρ / (‖|θ| ⊙ g‖₂ + 1e-12) (ASAM's norm, global).
- t > 0: e ← β e + (1 − β) ω_{t−1} / ‖ω_{t−1} + 1e-8‖₂, the norm per tensor, with ω_{t−1} the
  previous updating gradient; the gradients the reference divides by were already zeroed, so
  s = ρ / 1e-12.
- Every tensor is perturbed by ε = θ² ⊙ e · s, clipped to `radius` in its own L2 norm; with
  s = ρ / 1e-12 the clip is always active, so each tensor moves by exactly `radius` along
  θ² ⊙ e, whatever ρ is.
- ω_t = the gradient at θ + ε; θ is restored and the base optimizer steps with ω_t.

ρ and radius decay by compounding (molsam.optim.schedules.reference_decay; the trainer sets both
per epoch). With `loss_weighted=True` the closure is expected to back-propagate with the loss as
weight (L · ∇L, `train.loss_weighting: loss`, as the reference's closures do); its anchor pass
was plain `loss.backward()`, so the anchor gradient is divided by L here to get ∇L back.

State per parameter: `e` (the estimate) and `omega` (the last updating gradient); host counters
and the base optimizer's state are saved by `state_dict()`, so a resumed run continues exactly.
"""

from __future__ import annotations

from typing import Any

import torch

from molsam.optim._base import (
    Closure,
    ParamsT,
    SharpnessAwareOptimizer,
    check_nonnegative,
    check_unit_interval,
    global_norm,
    grads_by_group,
)

#: The reference's stand-ins for a zero norm: `rho / (grad_norm + 1e-12)` and
#: `torch.norm(gs + 1e-8)`.
ZERO_NORM_EPS = 1e-12
DIRECTION_EPS = 1e-8


class GraphSAMReference(SharpnessAwareOptimizer):
    """The reference code's GraphSAM step (module docstring) around a base optimizer (Adam).

    Args:
        params: parameters or param-group dicts.
        base_optimizer: the optimizer class that takes the step (built inside, shares groups).
        rho: ρ (`group["rho"]`), radius: the per-tensor clip (`group["radius"]`); the trainer
            sets both every epoch.
        beta: the estimate's moving-average factor (the reference's `alpha`, 0.99).
        loss_weighted: the closure back-propagates L · ∇L (see module docstring).
        **base_kwargs: passed to `base_optimizer`.
    """

    def __init__(
        self,
        params: ParamsT,
        base_optimizer: type[torch.optim.Optimizer] = torch.optim.Adam,
        *,
        rho: float = 0.05,
        radius: float = 0.05,
        beta: float = 0.99,
        loss_weighted: bool = False,
        **base_kwargs: Any,
    ) -> None:
        check_nonnegative("rho", rho)
        check_nonnegative("radius", radius)
        check_unit_interval("beta", beta)
        super().__init__(params, base_optimizer,
                         {"rho": rho, "radius": radius, "beta": beta}, base_kwargs)
        self.loss_weighted = bool(loss_weighted)
        self._counters["reanchor_pending"] = True

    def reanchor(self) -> None:
        """The next step is an epoch's first: it takes the anchor pass."""
        self._counters["reanchor_pending"] = True

    @property
    def reanchor_pending(self) -> bool:
        return bool(self._counters["reanchor_pending"])

    def _anchor(self, closure: Closure | None) -> dict[int, torch.Tensor]:
        """e ← g (raw) for every parameter with a gradient; returns each group's scale s."""
        loss = self._fresh_pass(closure)
        params, grads = grads_by_group(self.param_groups)
        if self.loss_weighted:  # the closure gave L * grad L; the reference's anchor is grad L
            grads = [torch._foreach_div(gs, loss.detach()) if gs else [] for gs in grads]
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p].pop("e", None)
                self.state[p].pop("omega", None)
        for ps, gs in zip(params, grads):
            for p, g in zip(ps, gs):
                self.state[p]["e"] = g.clone()
        scaled = [torch.abs(p) * self.state[p]["e"] for ps in params for p in ps]
        norm = global_norm(scaled) if scaled else None
        self._counters["reanchor_pending"] = False
        return {id(g): g["rho"] / (norm + ZERO_NORM_EPS) for g in self.param_groups
                if norm is not None}

    def _advance_estimates(self) -> None:
        """e ← β e + (1 − β) ω / ‖ω + 1e-8‖ per tensor, from the last updating gradient."""
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                if "e" not in state or "omega" not in state:
                    continue
                omega = state["omega"]
                unit = omega / torch.linalg.vector_norm(omega + DIRECTION_EPS)
                state["e"].mul_(group["beta"]).add_(unit, alpha=1.0 - group["beta"])

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Any:  # type: ignore[override]
        if self._counters["reanchor_pending"]:
            scales = self._anchor(closure)
        else:
            self._advance_estimates()
            scales = {id(g): g["rho"] / ZERO_NORM_EPS for g in self.param_groups}
        saved: list[tuple[torch.Tensor, torch.Tensor]] = []  # (parameter, its value at θ)
        for group in self.param_groups:
            scale = scales.get(id(group))
            for p in group["params"]:
                if scale is None or "e" not in self.state[p]:
                    continue
                eps = p * p * self.state[p]["e"] * scale
                norm = torch.linalg.vector_norm(eps)
                # clip to `radius` in this tensor's norm, without a host sync
                shrink = torch.where(norm > group["radius"], group["radius"] / norm,
                                     torch.ones_like(norm))
                eps.mul_(shrink)
                saved.append((p, p.detach().clone()))
                p.add_(eps)
        loss = self._fresh_pass(closure)
        for p, original in saved:  # back to θ exactly, as the reference's p.data = saved copy
            p.copy_(original)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and "e" in self.state[p]:
                    self.state[p]["omega"] = p.grad.clone()
        self.base_optimizer.step()
        self._counters["steps"] += 1
        return loss
