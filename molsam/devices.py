"""Device and precision choices shared by training, evaluation and prediction."""

from __future__ import annotations

import torch

from molsam.errors import ConfigError


def resolve_device(name: str = "auto", key: str = "--device") -> torch.device:
    """`auto` is cuda when available, else cpu; `cuda` without a GPU is a ConfigError naming
    `key` (the option or recipe key the value came from)."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{key}: {name!r} requested but no CUDA device is available")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{key}: {name!r} is not one of auto, cpu, cuda, cuda:N") from None


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: bf16 on GPUs that support it when `auto`, fp32 (None) on the CPU."""
    if name == "bf16":
        return torch.bfloat16
    if name == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None
