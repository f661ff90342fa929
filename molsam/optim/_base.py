"""Shared machinery of the sharpness-aware wrappers in molsam.optim.

Every wrapper is a `torch.optim.Optimizer` that builds its base optimizer (Adam by default) inside
itself and shares the base optimizer's `param_groups` (the same dict objects), so LR schedulers,
`lr` edits and per-epoch `rho` edits reach both. Hyper-parameters (`rho`, `beta`, ...) live in the
param groups. Per-parameter buffers live in `self.state[p]` (saved by `Optimizer.state_dict`);
host-side counters live in `self._counters`, and `state_dict()` adds them together with the base
optimizer's own state dict, so a resumed run continues bit for bit.

The helpers below are the vector algebra every algorithm shares. They work on lists of tensors
with multi-tensor `torch._foreach_*` kernels and never read a value back to the host: global norms
stay 0-dim device tensors and divisions are guarded with a clamp instead of a Python branch.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from molsam.errors import ConfigError

Closure = Callable[[], Any]
ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]]

# Smallest norm we divide by. A zero gradient then gives a zero direction (and a zero
# perturbation) instead of NaN, without a data-dependent Python branch (which would sync).
_NORM_FLOOR = 1e-12


class OptimConfigError(ConfigError, ValueError):
    """A bad optimizer name, keyword or hyper-parameter value.

    A `ConfigError` (so the CLI prints one line) and a `ValueError` (the exception type
    `torch.optim` raises for bad hyper-parameters, so code written against torch catches it).
    """


# --------------------------------------------------------------------------------------------
# validation


def check_nonnegative(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
            or value < 0:
        raise OptimConfigError(f"{name} must be a finite number >= 0, got {value!r}")


def check_unit_interval(name: str, value: float, *, closed_right: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and 0.0 <= value and (value <= 1.0 if closed_right else value < 1.0)
    if not ok:
        bracket = "]" if closed_right else ")"
        raise OptimConfigError(f"{name} must be in [0, 1{bracket}, got {value!r}")


def check_positive_int(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise OptimConfigError(f"{name} must be an integer >= 1, got {value!r}")


def check_base_optimizer(base_optimizer: Any) -> None:
    if not (inspect.isclass(base_optimizer) and issubclass(base_optimizer, torch.optim.Optimizer)):
        raise OptimConfigError(
            f"base_optimizer must be a torch.optim.Optimizer subclass, got {base_optimizer!r}"
        )


# --------------------------------------------------------------------------------------------
# vector algebra on lists of tensors (one list = the parameters of one param group)


def global_norm(tensors: list[Tensor], device: torch.device | None = None) -> Tensor:
    """L2 norm over all tensors together, as a 0-dim tensor on the device (no host sync)."""
    if not tensors:
        return torch.zeros((), device=device)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))


def inv_norm(norm: Tensor) -> Tensor:
    """1 / max(norm, floor): a zero vector stays zero after scaling, instead of becoming NaN."""
    return norm.clamp(min=_NORM_FLOOR).reciprocal()


def grads_by_group(
    param_groups: list[dict[str, Any]],
) -> tuple[list[list[Tensor]], list[list[Tensor]]]:
    """Per param group: the parameters that have a `.grad` now, and those gradients.

    Parameters without a gradient in this pass (unused branch, frozen) are left out of every norm
    and perturbation; they are simply not in the lists. So is every parameter of a group with
    `perturb=False` (e.g. biases and LayerNorm gains, which several SAM variants do not perturb):
    the base optimizer still steps them with their plain gradient.
    """
    params: list[list[Tensor]] = []
    grads: list[list[Tensor]] = []
    for group in param_groups:
        if not group.get("perturb", True):
            params.append([])
            grads.append([])
            continue
        ps = [p for p in group["params"] if p.grad is not None]
        params.append(ps)
        grads.append([p.grad for p in ps])
    return params, grads


def flat(lists: list[list[Tensor]]) -> list[Tensor]:
    return [t for sub in lists for t in sub]


def first_device(param_groups: list[dict[str, Any]]) -> torch.device:
    for group in param_groups:
        for p in group["params"]:
            return p.device
    return torch.device("cpu")


Direction = tuple[list[list[Tensor]], Tensor]


def unit_direction(grads: list[list[Tensor]]) -> Direction:
    """(g, 1/‖g‖): the direction g/‖g‖ kept unscaled (global norm over all groups).

    The scale stays a separate 0-dim tensor so the caller folds ρ into it and touches the
    tensors once (ε = g · (ρ/‖g‖)); no copy of g is made here.
    """
    return grads, inv_norm(global_norm(flat(grads)))


#: ASAM's η: T = |w| + η keeps a zero weight's neighbourhood from collapsing to a point
#: (Kwon et al., ICML 2021, Sec. 4; η = 0.01 in the authors' code, SamsungLabs/ASAM asam.py).
ASAM_ETA = 0.01


def is_weight(name: str | None, param: Tensor) -> bool:
    """Whether ASAM scales `param` by |w| + η (a weight) or leaves it unscaled (T = 1, a bias).

    The authors' code decides by name (`'weight' in name`: linear, embedding and norm weights);
    without a name (parameters passed without `named_parameters()`), a tensor of two or more
    dimensions counts as a weight and a vector as a bias.
    """
    if name is not None:
        return "weight" in name
    return param.dim() >= 2


def asam_direction(
    params: list[list[Tensor]],
    grads: list[list[Tensor]],
    weights: list[list[bool]] | None = None,
    eta: float = ASAM_ETA,
) -> Direction:
    """(T²g, 1/‖T g‖): ASAM's ascent direction (Kwon et al., ICML 2021, arXiv 2102.11600).

    T is element-wise: |w| + η for a weight, 1 for a bias, as in the authors' code
    (SamsungLabs/ASAM, `ascent_step`). Scaling by |w| makes the neighbourhood invariant to
    rescaling weights (and layers); η keeps zero weights perturbable; biases are not rescaled.

    Args:
        params, grads: per param group, the parameters and their gradients (same shapes).
        weights: per group, one flag per parameter (see `is_weight`); None: by dimension.
    Returns:
        New tensors (never the gradients themselves) and a 0-dim scale on their device.
    """
    if weights is None:
        weights = [[is_weight(None, p) for p in ps] for ps in params]
    vectors: list[list[Tensor]] = []
    scales: list[list[Tensor]] = []  # T of the weights, per group, to apply a second time
    for ps, gs, flags in zip(params, grads, weights):
        at = [i for i, w in enumerate(flags) if w]
        t = torch._foreach_abs([ps[i] for i in at]) if at else []
        if t:
            torch._foreach_add_(t, eta)
        t_g = torch._foreach_mul([gs[i] for i in at], t) if at else []
        rest = [i for i, w in enumerate(flags) if not w]
        # Biases: T = 1, so T g = g; cloned so callers may keep the direction (SAM-k does).
        plain = torch._foreach_mul([gs[i] for i in rest], 1.0) if rest else []
        merged: list[Tensor] = [None] * len(gs)  # type: ignore[list-item]
        for i, v in zip(at, t_g):
            merged[i] = v
        for i, v in zip(rest, plain):
            merged[i] = v
        vectors.append(merged)
        scales.append(t)
    scale = inv_norm(global_norm(flat(vectors)))
    for vs, flags, t in zip(vectors, weights, scales):
        if t:
            t_g = [v for v, w in zip(vs, flags) if w]
            torch._foreach_mul_(t_g, t)  # T² g = T (T g), in the T g buffers
    return vectors, scale


def sam_direction(
    params: list[list[Tensor]],
    grads: list[list[Tensor]],
    adaptive: bool,
    weights: list[list[bool]] | None = None,
) -> Direction:
    """SAM's (or ASAM's) unit ascent direction for these gradients, as (vectors, scale).

    `weights` (ASAM only): which parameters are weights (see `asam_direction`).
    """
    return asam_direction(params, grads, weights) if adaptive else unit_direction(grads)


def materialize(direction: Direction) -> list[list[Tensor]]:
    """The direction as new tensors (vectors · scale), for algorithms that store it."""
    vectors, scale = direction
    return [torch._foreach_mul(vs, scale) if vs else [] for vs in vectors]


class Perturbation:
    """θ ← θ + ρ·d for the given parameters, undone by `restore()` (θ ← θ − ρ·d).

    ε is kept so restoring is one subtraction, as in the reference algorithms. In floating point
    (θ + ε) − ε may differ from θ by one unit in the last place; an exact copy-back would cost a
    parameter-sized clone and a copy per step (three passes over the weights instead of two) for
    a difference far below any optimizer step. At ρ = 0, ε is exactly zero and θ is untouched.
    """

    __slots__ = ("params", "eps")

    def __init__(
        self,
        param_groups: list[dict[str, Any]],
        params: list[list[Tensor]],
        direction: Direction,
    ) -> None:
        vectors, scale = direction
        self.params: list[Tensor] = []
        self.eps: list[Tensor] = []
        for group, ps, vs in zip(param_groups, params, vectors):
            if ps:
                # ρ is read from the group at every step, so a schedule may change it per epoch.
                # ρ/‖d‖ is one 0-dim tensor: no host sync.
                eps = torch._foreach_mul(vs, scale * group["rho"])
                torch._foreach_add_(ps, eps)
                self.params.extend(ps)
                self.eps.extend(eps)

    def restore(self) -> None:
        if self.params:
            torch._foreach_sub_(self.params, self.eps)


# --------------------------------------------------------------------------------------------
# the wrapper base class


class SharpnessAwareOptimizer(torch.optim.Optimizer):
    """Base class: builds the base optimizer, shares its param groups, saves everything.

    Subclasses implement `step(closure)` and list their host-side counters in `_counters`.
    """

    def __init__(
        self,
        params: ParamsT,
        base_optimizer: type[torch.optim.Optimizer],
        defaults: dict[str, Any],
        base_kwargs: dict[str, Any],
    ) -> None:
        check_base_optimizer(base_optimizer)
        super().__init__(params, {**defaults, **base_kwargs})
        # The base optimizer adds its own defaults to the same group dicts; from here on
        # wrapper and base see one set of groups (an `lr` or `rho` edit reaches both).
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)
        self._counters: dict[str, Any] = {"steps": 0}
        # ASAM's weight/bias roles, by name when built from `model.named_parameters()`.
        self._weight_flags: dict[int, bool] = {}
        for group in self.param_groups:
            names = group.get("param_names") or [None] * len(group["params"])
            for p, name in zip(group["params"], names):
                self._weight_flags[id(p)] = is_weight(name, p)

    def _asam_weights(self, params: list[list[Tensor]]) -> list[list[bool]]:
        """Per group, `is_weight` of each of `params` (for `sam_direction`)."""
        flags = self._weight_flags
        return [[flags[id(p)] if id(p) in flags else is_weight(None, p) for p in ps]
                for ps in params]

    # -- the trainer-facing extras ------------------------------------------------------------

    def reanchor(self) -> None:
        """No-op for algorithms without a reusable perturbation estimate."""

    @property
    def steps(self) -> int:
        """Number of completed `step` calls."""
        return int(self._counters["steps"])

    def _run(self, closure: Closure | None) -> Any:
        if closure is None:
            raise OptimConfigError(
                f"{type(self).__name__}.step needs a closure that runs forward and backward "
                "and returns the loss (it evaluates the loss at more than one point)"
            )
        # Optimizer.step runs under no_grad; the closure must build a graph.
        with torch.enable_grad():
            return closure()

    def _fresh_pass(self, closure: Closure | None) -> Any:
        """Zero the gradients, then forward + backward once."""
        self.zero_grad(set_to_none=True)
        return self._run(closure)

    def _sam_update(
        self,
        closure: Closure | None,
        params: list[list[Tensor]],
        direction: Direction,
    ) -> Any:
        """Perturb along the unit `direction` by ρ, take the gradient there, restore, base step."""
        perturbation = Perturbation(self.param_groups, params, direction)
        loss = self._fresh_pass(closure)
        perturbation.restore()
        self.base_optimizer.step()
        return loss

    # -- checkpointing ------------------------------------------------------------------------

    def _extra_state(self) -> dict[str, Any]:
        # Tensors are cloned: a saved dict must not change when training continues.
        return {k: v.clone() if isinstance(v, Tensor) else v for k, v in self._counters.items()}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        device = first_device(self.param_groups)
        for key, value in extra.items():
            self._counters[key] = value.to(device).clone() if isinstance(value, Tensor) else value

    def state_dict(self) -> dict[str, Any]:
        """Per-parameter buffers, param groups, the base optimizer's state and the counters."""
        out = super().state_dict()
        out["base_optimizer"] = self.base_optimizer.state_dict()
        out["molsam"] = self._extra_state()
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        missing = [k for k in ("base_optimizer", "molsam") if k not in state_dict]
        if missing:
            raise OptimConfigError(
                f"{type(self).__name__}.load_state_dict: state dict lacks {missing} "
                "(was it saved by a different optimizer?)"
            )
        own = {k: v for k, v in state_dict.items() if k not in ("base_optimizer", "molsam")}
        super().load_state_dict(own)
        self.base_optimizer.load_state_dict(state_dict["base_optimizer"])
        # Both loads build fresh group dicts: share the base optimizer's again.
        self.param_groups = self.base_optimizer.param_groups
        self._load_extra_state(state_dict["molsam"])

    def __repr__(self) -> str:
        group = self.param_groups[0] if self.param_groups else {}
        shown = ", ".join(f"{k}={group[k]!r}" for k in ("lr", "rho", "beta") if k in group)
        return f"{type(self).__name__}(base={type(self.base_optimizer).__name__}, {shown})"
