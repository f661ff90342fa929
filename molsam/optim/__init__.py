"""Optimizers: GraphSAM and the sharpness-aware baselines of its paper, one file each.

Every algorithm is a `torch.optim.Optimizer` that wraps a base optimizer (Adam by default),
shares its param groups, keeps `rho` (and `beta`) in the groups, takes `step(closure)` with a
closure that runs forward and backward and returns the loss, and saves everything (the base
optimizer's state included) in `state_dict()`.

    opt = build_optimizer("graphsam", model.parameters(), lr=1e-3, rho=0.05, beta=0.99)
    for epoch in range(epochs):
        set_rho(opt, rho_at(epoch, 0.05, gamma=0.5, every=1))
        reanchor(opt)                      # no-op for optimizers without the concept
        for batch in loader:
            def closure():
                loss = loss_fn(model(batch), batch.y)
                loss.backward()
                return loss
            loss = opt.step(closure)
            scheduler.step()               # e.g. NoamLR, one step per optimizer step
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any

import torch

from molsam.optim._base import OptimConfigError, ParamsT, SharpnessAwareOptimizer
from molsam.optim.aesam import AESAM
from molsam.optim.graphsam import GraphSAM
from molsam.optim.graphsam_reference import GraphSAMReference
from molsam.optim.looksam import LookSAM
from molsam.optim.rst import RST
from molsam.optim.sam import SAM
from molsam.optim.samk import SAMK
from molsam.optim.schedules import NoamLR, noam_lr, rho_at, set_rho


def asam(
    params: ParamsT,
    base_optimizer: type[torch.optim.Optimizer] = torch.optim.Adam,
    *,
    rho: float = 0.5,
    **base_kwargs: Any,
) -> SAM:
    """ASAM (Kwon et al., ICML 2021): `SAM(adaptive=True)`.

    The default radius is larger than SAM's because ASAM's ball is relative to |w| + η
    (the ASAM paper uses ρ = 0.5 to 1.0).
    """
    return SAM(params, base_optimizer, rho=rho, adaptive=True, **base_kwargs)


#: name -> class or factory; each takes (params, **kwargs).
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "sam": SAM,
    "asam": asam,
    "graphsam": GraphSAM,
    # The reference code's arithmetic (recipes: optim.name graphsam, optim.variant reference).
    "graphsam_reference": GraphSAMReference,
    "samk": SAMK,
    "looksam": LookSAM,
    "aesam": AESAM,
    "rst": RST,
}

#: Base optimizers accepted by name in `build_optimizer(..., base_optimizer="adamw")`.
BASE_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
}

_SKIP = {"self", "params"}


def _keywords(fn: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """Named parameters of a constructor or factory (not self/params/*args/**kwargs)."""
    target = fn.__init__ if inspect.isclass(fn) else fn
    return {
        name: p for name, p in inspect.signature(target).parameters.items()
        if name not in _SKIP and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def valid_keywords(name: str, base_optimizer: type[torch.optim.Optimizer] = torch.optim.Adam
                   ) -> list[str]:
    """Every keyword `build_optimizer(name, ...)` accepts (the base optimizer's included)."""
    factory = _lookup(name)
    if factory is torch.optim.Adam:
        return sorted(_keywords(torch.optim.Adam))
    own = set(_keywords(factory))
    return sorted(own | set(_keywords(base_optimizer)))


def _lookup(name: str) -> Callable[..., torch.optim.Optimizer]:
    key = name.lower() if isinstance(name, str) else name
    if key not in OPTIMIZERS:
        hint = difflib.get_close_matches(str(name).lower(), OPTIMIZERS, n=1)
        maybe = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise OptimConfigError(
            f"optimizer: unknown name {name!r}{maybe}; valid names: {sorted(OPTIMIZERS)}"
        )
    return OPTIMIZERS[key]


def build_optimizer(name: str, params: ParamsT, **kwargs: Any) -> torch.optim.Optimizer:
    """Build optimizer `name` (a key of OPTIMIZERS) over `params`.

    Keywords are the algorithm's own (rho, beta, k, alpha, ...; see each class) plus the base
    optimizer's (lr, betas, weight_decay, ...). `base_optimizer` may be a torch optimizer class
    or one of BASE_OPTIMIZERS' names. Unknown names and keywords raise `OptimConfigError`
    (a `ConfigError` and a `ValueError`) listing the valid choices; nothing is silently ignored
    (e.g. `rho` for "adam" is an error).
    """
    factory = _lookup(name)
    key = name.lower()
    base = kwargs.get("base_optimizer", torch.optim.Adam)
    if factory is not torch.optim.Adam and isinstance(base, str):
        if base.lower() not in BASE_OPTIMIZERS:
            raise OptimConfigError(
                f"{key}.base_optimizer: unknown {base!r}; valid: {sorted(BASE_OPTIMIZERS)}"
            )
        base = BASE_OPTIMIZERS[base.lower()]
        kwargs["base_optimizer"] = base
    if factory is not torch.optim.Adam and not (
        inspect.isclass(base) and issubclass(base, torch.optim.Optimizer)
    ):
        raise OptimConfigError(
            f"{key}.base_optimizer: expected a torch.optim.Optimizer class or one of "
            f"{sorted(BASE_OPTIMIZERS)}, got {base!r}"
        )
    valid = valid_keywords(key, base if factory is not torch.optim.Adam else torch.optim.Adam)
    for kw in kwargs:
        if kw not in valid:
            hint = difflib.get_close_matches(kw, valid, n=1)
            maybe = f" (did you mean {hint[0]!r}?)" if hint else ""
            extra = " (adam is not sharpness-aware)" if key == "adam" and kw in (
                "rho", "beta", "adaptive") else ""
            raise OptimConfigError(
                f"{key}.{kw}: unknown keyword{maybe}{extra}; valid keywords: {valid}"
            )
    missing = [n for n, p in _keywords(factory).items()
               if p.default is inspect.Parameter.empty and n not in kwargs]
    if missing:
        raise OptimConfigError(f"{key}: missing required keyword(s) {missing}")
    return factory(params, **kwargs)


def is_sharpness_aware(optimizer: torch.optim.Optimizer) -> bool:
    """True for molsam's wrappers (their `step` needs a closure and may call it twice)."""
    return isinstance(optimizer, SharpnessAwareOptimizer)


def reanchor(optimizer: torch.optim.Optimizer) -> None:
    """Call `optimizer.reanchor()` if it has one (GraphSAM, SAM-k); otherwise do nothing.

    The trainer calls this at the start of every K-th epoch (K = 1 in the paper).
    """
    method = getattr(optimizer, "reanchor", None)
    if callable(method):
        method()


__all__ = [
    "AESAM",
    "BASE_OPTIMIZERS",
    "GraphSAM",
    "GraphSAMReference",
    "LookSAM",
    "NoamLR",
    "OPTIMIZERS",
    "OptimConfigError",
    "RST",
    "SAM",
    "SAMK",
    "SharpnessAwareOptimizer",
    "asam",
    "build_optimizer",
    "is_sharpness_aware",
    "noam_lr",
    "reanchor",
    "rho_at",
    "set_rho",
    "valid_keywords",
]
