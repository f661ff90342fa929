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
A parameter without a gradient in the anchor pass loses its estimate (docs/GRAPHSAM.md: such
parameters are left out of norms and perturbation), instead of keeping a stale direction.

Direction (`direction="opposite"`, not the paper's): ε_t = −ρ · e_t / ‖e_t‖₂, against the
estimate instead of along it, as Momentum-SAM perturbs against the momentum (Becker, Altrichter,
Schwenninger, "Momentum-SAM: Sharpness Aware Minimization without Computational Overhead",
arXiv 2401.12033). Tried because e_t's mean cosine with the exact SAM direction was negative on
bbbp; measured (docs/RESULTS.md, issue 9): it stays negative with the sign flipped, and it lost
on validation. The reason (benchmarks/graphsam_quadratic.py): with β = 0.99 and one anchor per
epoch, e_t barely moves, and training with a nearly fixed ε settles where ∇L(θ + ε) ≈ 0, so
∇L(θ) ≈ −Hε points against ε whatever its sign. Kept so those runs can be reproduced.

Diagnostic (`track_sam_cosine=True`, off by default; costs one more pass per step): before the
perturbed pass, the exact SAM perturbation gradient g_t = ∇L_B(θ_t) is computed as well, and
cos(ε_t, g_t) (the cosine of the perturbation actually applied: −cos(e_t, g_t) with
`direction="opposite"`), ‖e_t‖ and ‖g_t‖ are accumulated on the device (the paper's Fig. 3
evidence that the moving average tracks SAM). That pass runs under a forked RNG, so dropout
draws, and with them the whole training path, are the same with or without the diagnostic.
Anchor steps are not counted (there e_t = g_t/‖g_t‖ by construction). `pop_diagnostics()`
returns and resets them.
"""

from __future__ import annotations

import time
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
    first_device,
    global_norm,
    grads_by_group,
    materialize,
    sam_direction,
    unit_direction,
)

ANCHORS = ("unit", "raw")
#: which way ε points from θ: along the estimate (the paper's) or against it (Momentum-SAM's).
DIRECTIONS = ("estimate", "opposite")


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
        direction: "estimate" (ε = ρ e/‖e‖, the paper's) or "opposite" (ε = −ρ e/‖e‖; see the
            module docstring).
        track_sam_cosine: also compute the exact SAM direction every step and accumulate its
            cosine with the perturbation ε (diagnostic; one extra pass per step, see module
            docstring).
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
        direction: str = "estimate",
        track_sam_cosine: bool = False,
        **base_kwargs: Any,
    ) -> None:
        check_nonnegative("rho", rho)
        check_unit_interval("beta", beta)
        if anchor not in ANCHORS:
            raise OptimConfigError(f"anchor must be one of {list(ANCHORS)}, got {anchor!r}")
        if direction not in DIRECTIONS:
            raise OptimConfigError(
                f"direction must be one of {list(DIRECTIONS)}, got {direction!r}")
        super().__init__(params, base_optimizer, {"rho": rho, "beta": beta}, base_kwargs)
        self.adaptive = bool(adaptive)
        self.anchor = anchor
        self.direction = direction
        self.track_sam_cosine = bool(track_sam_cosine)
        # The very first step always anchors: there is no estimate yet.
        self._counters["reanchor_pending"] = True
        self._reset_diagnostics()

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
        anchored = {id(p) for ps in params for p in ps}
        for group in self.param_groups:
            for p in group["params"]:
                if id(p) not in anchored:  # no gradient at the anchor: no stale direction
                    self.state[p].pop("e", None)
        for ps, es in zip(params, estimates):
            for p, e in zip(ps, es):
                self.state[p]["e"] = e
        self._counters["reanchor_pending"] = False

    # -- diagnostic: how well does e track the exact SAM direction? ---------------------------

    def _reset_diagnostics(self) -> None:
        device = first_device(self.param_groups)
        self._diag = {
            "cos_sum": torch.zeros((), device=device),
            "cos_min": torch.full((), float("inf"), device=device),
            "e_norm_sum": torch.zeros((), device=device),
            "g_norm_sum": torch.zeros((), device=device),
        }
        self._diag_steps = 0
        self._diag_seconds = 0.0

    def _record_sam_cosine(
        self, closure: Closure | None, params: list[list[torch.Tensor]],
        estimates: list[list[torch.Tensor]],
    ) -> None:
        """One pass at θ (RNG forked) for g = ∇L(θ); accumulate cos(ε, g), ‖e‖, ‖g‖ on the device.

        Parameters without a gradient in this pass or without an estimate are left out of all
        three, as they are out of the perturbation.
        """
        device = first_device(self.param_groups)
        devices = [device] if device.type == "cuda" else []
        if devices:  # diagnostic mode only: time the extra pass alone, not queued work
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        with torch.random.fork_rng(devices=devices):
            self._fresh_pass(closure)
        es, gs = [], []
        for ps, group_es in zip(params, estimates):
            for p, e in zip(ps, group_es):
                if p.grad is not None:
                    es.append(e)
                    gs.append(p.grad)
        if es:
            dot = torch.stack([torch.sum(e * g) for e, g in zip(es, gs)]).sum()
            e_norm, g_norm = global_norm(es), global_norm(gs)
            cos = dot / (e_norm * g_norm).clamp(min=1e-12)
            if self.direction == "opposite":
                cos = -cos
            d = self._diag
            d["cos_sum"] += cos
            torch.minimum(d["cos_min"], cos, out=d["cos_min"])
            d["e_norm_sum"] += e_norm
            d["g_norm_sum"] += g_norm
            self._diag_steps += 1
        if devices:
            torch.cuda.synchronize(device)
        self._diag_seconds += time.perf_counter() - started

    def pop_diagnostics(self) -> dict[str, float]:
        """Means (and the minimum cosine) since the last call, as floats; resets them.

        Keys: sam_cos_mean, sam_cos_min, e_norm_mean, g_norm_mean, diag_steps, diag_seconds
        (the time the extra passes took, for the trainer to leave out of its timing).
        Empty when the diagnostic is off or no step was counted. One host sync per call.
        """
        n, seconds = self._diag_steps, self._diag_seconds
        out: dict[str, float] = {}
        if n:
            d = {k: float(v) for k, v in self._diag.items()}
            out = {"sam_cos_mean": d["cos_sum"] / n, "sam_cos_min": d["cos_min"],
                   "e_norm_mean": d["e_norm_sum"] / n, "g_norm_mean": d["g_norm_sum"] / n,
                   "diag_steps": n}
        if n or seconds:
            out["diag_seconds"] = seconds
        self._reset_diagnostics()
        return out

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Any:  # type: ignore[override]
        anchored = self._counters["reanchor_pending"]
        if anchored:
            self._anchor(closure)

        # 1. ε = ρ e/‖e‖ over the parameters that have an estimate.
        params = [[p for p in g["params"] if "e" in self.state[p]] for g in self.param_groups]
        estimates = [[self.state[p]["e"] for p in ps] for ps in params]
        if self.track_sam_cosine and not anchored:
            self._record_sam_cosine(closure, params, estimates)
        direction = sam_direction(
            params, estimates, self.adaptive, self._asam_weights(params))
        if self.direction == "opposite":
            vectors, scale = direction
            direction = (vectors, -scale)

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
