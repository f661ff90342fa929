"""Device and precision choices shared by training, evaluation and prediction."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

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


#: Intra-op threads for CPU training when the recipe does not say. Measured on 2 cores with
#: molsam's models (benchmarks/train_throughput.py): 2 threads were never faster than 1; 1.2x
#: slower with OMP_WAIT_POLICY=PASSIVE and 3-19x slower while another process used a core
#: (OpenMP barriers spin). One thread also makes CPU results independent of the core count.
DEFAULT_CPU_THREADS = 1


@contextmanager
def cpu_threads(device: torch.device, threads: int) -> Iterator[None]:
    """Run a block with `threads` torch intra-op threads when on the CPU, then restore the
    previous setting (the library never leaves process-wide state changed behind it)."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


#: cuBLAS needs a fixed workspace to be deterministic (NVIDIA's cuBLAS docs, "Results
#: reproducibility"); this is the smaller of the two documented settings.
CUBLAS_WORKSPACE = ":4096:8"


@contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """Within the block, torch uses only deterministic kernels when `enabled` (and refuses ops
    that have none), then the previous setting is restored.

    Why it matters on CUDA: `index_add_` (message passing, pooling) and the backward of
    `index_select` accumulate with atomics by default, so two runs with the same seed differ in
    the last bits and then drift apart. On the CPU molsam's kernels are deterministic anyway (same
    seed, same numbers on the same machine). CUBLAS_WORKSPACE_CONFIG is set when unset; cuBLAS
    reads it when it creates its handle, so it takes effect only if this is the process's first
    CUDA work (set it in the environment to be sure).
    """
    if not enabled:
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    before = torch.are_deterministic_algorithms_enabled()
    before_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=before_warn)
