"""GraphSAM: sharpness-aware minimization at close to the cost of the base optimizer.

Wang, Zhou, Liu, Wang, Wang, "Efficient Sharpness-Aware Minimization for Molecular Graph
Transformer Models", ICLR 2024, arXiv 2406.13137 (see docs/GRAPHSAM.md for the choices fixed
here and the reference-code behaviours deliberately not copied).

SAM spends a second forward/backward pass per step on the perturbation gradient g_t = ∇L(θ_t).
GraphSAM observes that g_t changes slowly and that the updating gradient ω_t of one step points
roughly where the next perturbation gradient will, so it replaces g_t by a running estimate e_t
of past (normalized) updating gradients. Each step:

    ε_t = ρ · e_t / ‖e_t‖₂                             (global norm)
    ω_t = ∇L_B(θ_t + ε_t)                              (the step's only pass)
    θ_{t+1} = base_optimizer_step(θ_t, ω_t)
    e_{t+1} = β · e_t + (1 − β) · ω_t / ‖ω_t‖₂

Re-anchoring (the first step ever, and the first step after `reanchor()`): one extra pass at θ_t
gives the exact g and resets e ← g / ‖g‖₂ (`anchor="unit"`, the default) or e ← g
(`anchor="raw"`, the reference code's unnormalized anchor). The trainer calls `reanchor()` at
the start of every K-th epoch, so an epoch of n batches costs n + 1 passes (SAM: 2n).
"""

from __future__ import annotations

from typing import Any

import torch

from molsam.optim._base import (
    Closure,
    OptimConfigError,
    ParamsT,
    Perturbation,
    SharpnessAwareOptimizer,
    check_nonnegative,
    check_unit_interval,
    grads_by_group,
    materialize,
    sam_direction,
    unit_direction,
)

ANCHORS = ("unit", "raw")


class GraphSAM(SharpnessAwareOptimizer):
    """GraphSAM around a base optimizer (Adam by default).

    Args:
        params: parameters or param-group dicts.
        base_optimizer: the optimizer class that takes the step (built inside, shares groups).
        rho: perturbation radius ρ (`group["rho"]`; a schedule such as
            `molsam.optim.schedules.rho_at` may set it per epoch).
        beta: moving-average factor β of the estimate, in [0, 1) (`group["beta"]`).
        adaptive: ASAM-style scaling: ε = ρ · T²e / ‖T e‖ with T = |w| + η (biases: 1).
        anchor: "unit" (e ← g/‖g‖, paper-faithful) or "raw" (e ← g, as the reference code).
        **base_kwargs: passed to `base_optimizer`.

    State: `self.state[p]["e"]` (same shape, dtype and device as p) for every parameter that
    has had a gradient; the pending-reanchor flag and step count are saved by `state_dict()`.

    `step(closure)` calls the closure once (twice on a re-anchor step), zeroing the gradients
    before each call, and returns the loss at the perturbed point. No host synchronization.
    """

    def __init__(
        self,
        params: ParamsT,
        base_optimizer: type[torch.optim.Optimizer] = torch.optim.Adam,
        *,
        rho: float = 0.05,
        beta: float = 0.99,
        adaptive: bool = False,
        anchor: str = "unit",
        **base_kwargs: Any,
    ) -> None:
        check_nonnegative("rho", rho)
        check_unit_interval("beta", beta)
        if anchor not in ANCHORS:
            raise OptimConfigError(f"anchor must be one of {list(ANCHORS)}, got {anchor!r}")
        super().__init__(params, base_optimizer, {"rho": rho, "beta": beta}, base_kwargs)
        self.adaptive = bool(adaptive)
        self.anchor = anchor
        # The very first step always anchors: there is no estimate yet.
        self._counters["reanchor_pending"] = True

    def reanchor(self) -> None:
        """Recompute the exact perturbation gradient at the start of the next step."""
        self._counters["reanchor_pending"] = True

    @property
    def reanchor_pending(self) -> bool:
        return bool(self._counters["reanchor_pending"])

    def _anchor(self, closure: Closure | None) -> None:
        """Extra pass at θ: e ← g/‖g‖ (or g) for every parameter that has a gradient."""
        self._fresh_pass(closure)
        params, grads = grads_by_group(self.param_groups)
        if self.anchor == "unit":
            estimates = materialize(unit_direction(grads))
        else:
            estimates = [torch._foreach_clone(gs) if gs else [] for gs in grads]
        for ps, es in zip(params, estimates):
            for p, e in zip(ps, es):
                self.state[p]["e"] = e
        self._counters["reanchor_pending"] = False

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Any:  # type: ignore[override]
        if self._counters["reanchor_pending"]:
            self._anchor(closure)

        # 1. ε = ρ e/‖e‖ over the parameters that have an estimate.
        params = [[p for p in g["params"] if "e" in self.state[p]] for g in self.param_groups]
        estimates = [[self.state[p]["e"] for p in ps] for ps in params]
        direction = sam_direction(
            params, estimates, self.adaptive, self._asam_weights(params))

        # 2.-3. ω at θ + ε, restore θ (base step below, after the estimate is updated).
        perturbation = Perturbation(self.param_groups, params, direction)
        loss = self._fresh_pass(closure)
        perturbation.restore()

        # 4. e ← β e + (1 − β) ω/‖ω‖ = lerp(e, ω/‖ω‖, 1 − β), for the parameters that got a
        # gradient in this pass. Done before the base step, so no base optimizer can have
        # modified .grad yet. ‖ω‖ stays a 0-dim device tensor: no host sync.
        w_params, w_grads = grads_by_group(self.param_groups)
        w_units = materialize(unit_direction(w_grads))
        for group, ps, us in zip(self.param_groups, w_params, w_units):
            if not ps:
                continue
            es = []
            for p in ps:
                st = self.state[p]
                if "e" not in st:  # first gradient for this parameter: start from zero
                    st["e"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                es.append(st["e"])
            torch._foreach_lerp_(es, us, 1.0 - group["beta"])

        self.base_optimizer.step()
        self._counters["steps"] += 1
        return loss
