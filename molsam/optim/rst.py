"""RST: randomized sharpness-aware training.

Zhao, Zhang, Hu, "Randomized Sharpness-Aware Training: Boosting Computational Efficiency in
Deep Learning", 2022, arXiv 2203.09962 (also published as SS-SAM). At every step a Bernoulli draw
with a scheduled probability p_t picks a SAM step (two passes) or a plain step (one pass):

    g = ∇L_B(θ)                                         (pass 1)
    p_t = p_start + (p_end − p_start) · min(t / total_steps, 1)
    with probability p_t:  SAM step (pass 2 at θ + ρ g/‖g‖);  else: plain step with g

Expected cost: (1 + p) passes per step. The paper's schedules include constant and linear ones;
both are covered (p_start = p_end is constant).

Host synchronization: none on the device. The draw uses a dedicated CPU `torch.Generator`
(seeded by `seed`; its state is saved by `state_dict()` as a uint8 tensor), so the decision is
made on the host without reading anything back from an accelerator.
"""

from __future__ import annotations

from typing import Any

import torch

from molsam.optim._base import (
    Closure,
    OptimConfigError,
    ParamsT,
    SharpnessAwareOptimizer,
    check_nonnegative,
    check_unit_interval,
    grads_by_group,
    sam_direction,
)


class RST(SharpnessAwareOptimizer):
    """Randomized SAM-or-plain steps around a base optimizer.

    Args:
        params: parameters or param-group dicts.
        base_optimizer: the optimizer class that takes the step (built inside, shares groups).
        rho: perturbation radius of the SAM steps (`group["rho"]`).
        p_start, p_end: SAM probability at step 0 and at `total_steps`, in [0, 1].
        total_steps: length of the linear schedule; needed only when p_start != p_end.
        seed: seed of the optimizer's own generator (independent of torch's global RNG, so
            dropout and data order are not disturbed).
        adaptive: ASAM's scale-invariant perturbation on SAM steps.
        **base_kwargs: passed to `base_optimizer`.

    `step(closure)` returns the loss at the perturbed point on SAM steps, at θ otherwise.
    """

    def __init__(
        self,
        params: ParamsT,
        base_optimizer: type[torch.optim.Optimizer] = torch.optim.Adam,
        *,
        rho: float = 0.05,
        p_start: float = 0.5,
        p_end: float | None = None,
        total_steps: int | None = None,
        seed: int = 0,
        adaptive: bool = False,
        **base_kwargs: Any,
    ) -> None:
        check_nonnegative("rho", rho)
        p_end = p_start if p_end is None else p_end
        check_unit_interval("p_start", p_start, closed_right=True)
        check_unit_interval("p_end", p_end, closed_right=True)
        if p_start != p_end and (
            not isinstance(total_steps, int) or isinstance(total_steps, bool) or total_steps < 1
        ):
            raise OptimConfigError(
                f"total_steps must be an integer >= 1 when p_start != p_end, got {total_steps!r}"
            )
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise OptimConfigError(f"seed must be an integer, got {seed!r}")
        super().__init__(params, base_optimizer, {"rho": rho}, base_kwargs)
        self.p_start = float(p_start)
        self.p_end = float(p_end)
        self.total_steps = total_steps
        self.adaptive = bool(adaptive)
        self._generator = torch.Generator(device="cpu")
        self._generator.manual_seed(seed)
        self._counters["sam_steps"] = 0

    def probability_at(self, step: int) -> float:
        """p_t of the linear schedule (held at p_end after total_steps)."""
        if self.total_steps is None:
            return self.p_start
        frac = min(step / self.total_steps, 1.0)
        return self.p_start + (self.p_end - self.p_start) * frac

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Any:  # type: ignore[override]
        c = self._counters
        # Draw first, on the host: the draw sequence does not depend on the data.
        u = torch.rand((), generator=self._generator).item()  # CPU tensor: no device sync
        loss = self._fresh_pass(closure)
        if u < self.probability_at(c["steps"]):
            params, grads = grads_by_group(self.param_groups)
            directions = sam_direction(params, grads, self.adaptive, self._asam_weights(params))
            loss = self._sam_update(closure, params, directions)
            c["sam_steps"] += 1
        else:
            self.base_optimizer.step()
        c["steps"] += 1
        return loss

    def _extra_state(self) -> dict[str, Any]:
        out = super()._extra_state()
        out["rng_state"] = self._generator.get_state()
        return out

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        extra = dict(extra)
        rng = extra.pop("rng_state", None)
        if rng is None:
            raise OptimConfigError("RST.load_state_dict: state dict lacks the generator state")
        super()._load_extra_state(extra)
        self._generator.set_state(rng.to("cpu", torch.uint8))
