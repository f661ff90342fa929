"""A loss over a whole data set as a function of the parameters, and its derivatives.

The measurements in molsam.analysis (rho-sharpness, Hessian spectrum, loss landscapes) only need
a `loss_fn`: a callable with no arguments that returns the full-data loss at the parameters'
current values, either as one scalar tensor or as an iterable of scalar tensors whose sum is the
loss (one per batch). The second form keeps one batch's autograd graph alive at a time, so the
gradient and Hessian-vector products of a loss over thousands of molecules fit in memory: they
are accumulated batch by batch (differentiation is linear in the terms).

Parameters are a list of tensors that the loss reads in place (a model's parameters); the
measurements move them and put back bitwise-identical values (`restored`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from molsam.data.batching import BatchSource
from molsam.errors import InputError
from molsam.predict import padded_batches
from molsam.train.losses import masked_loss

#: () -> scalar tensor, or an iterable of scalar tensors that sum to the loss.
LossFn = Callable[[], "Tensor | Iterable[Tensor]"]
Vector = list[Tensor]


def terms(loss_fn: LossFn) -> Iterator[Tensor]:
    """The scalar terms of the loss at the current parameters (a lone tensor is one term)."""
    value = loss_fn()
    if isinstance(value, Tensor):
        yield value
    else:
        yield from value


def loss_value(loss_fn: LossFn) -> float:
    """The loss (float64 sum of its terms), without building a graph."""
    with torch.no_grad():
        return sum(float(t) for t in terms(loss_fn))


def gradient(loss_fn: LossFn, params: Sequence[Tensor]) -> tuple[float, Vector]:
    """The loss and its gradient (one tensor per parameter, zeros where a parameter is unused),
    from one forward and backward pass per term."""
    grads = [torch.zeros_like(p) for p in params]
    total = 0.0
    for term in terms(loss_fn):
        total += float(term.detach())
        if term.requires_grad:
            torch._foreach_add_(grads, torch.autograd.grad(term, params, materialize_grads=True))
    return total, grads


def hessian_vector_product(loss_fn: LossFn, params: Sequence[Tensor], vector: Vector) -> Vector:
    """H v by double backward (Pearlmutter, "Fast Exact Multiplication by the Hessian", Neural
    Computation 1994): the gradient of <grad L, v>, one term at a time."""
    return hessian_vector_products(loss_fn, params, [vector])[0]


def hessian_vector_products(
    loss_fn: LossFn, params: Sequence[Tensor], vectors: Sequence[Vector]
) -> list[Vector]:
    """H v for several v at once: each term's forward pass and differentiable gradient are built
    once and differentiated once per vector (retaining that graph), which saves about 40% per
    product over separate calls on molsam's models.

    Attention runs on PyTorch's math kernel here: the fused CPU (flash) kernel has no
    derivative of its backward, and the math kernel computes the same function.
    """
    outs = [[torch.zeros_like(p) for p in params] for _ in vectors]
    with sdpa_kernel(SDPBackend.MATH):
        for term in terms(loss_fn):
            if not term.requires_grad:
                continue
            grads = torch.autograd.grad(term, params, create_graph=True, materialize_grads=True)
            for k, (vector, out) in enumerate(zip(vectors, outs)):
                dot = sum((g * v).sum() for g, v in zip(grads, vector))
                if dot.requires_grad:  # false only for a loss that is linear in every parameter
                    torch._foreach_add_(out, torch.autograd.grad(
                        dot, params, retain_graph=k < len(vectors) - 1, materialize_grads=True))
    return outs


# ------------------------------------------------------------------------------- vectors
def dot(a: Vector, b: Vector) -> float:
    """<a, b> over all parameters (float64 on the host)."""
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b)))


def norm(a: Vector) -> float:
    """Global L2 norm over all parameters, as molsam.optim's perturbations use."""
    return dot(a, a) ** 0.5


def scaled(a: Vector, factor: float) -> Vector:
    return torch._foreach_mul(a, factor)


def random_normal(params: Sequence[Tensor], generator: torch.Generator) -> Vector:
    """Standard normal entries shaped like `params`, drawn on the CPU from `generator` (so the
    same seed gives the same vector on any device), then moved to each parameter's device."""
    return [
        torch.randn(p.shape, generator=generator, dtype=torch.float32).to(p.device, p.dtype)
        for p in params
    ]


def random_rademacher(params: Sequence[Tensor], generator: torch.Generator) -> Vector:
    """Entries +1 or -1 with equal probability, shaped like `params` (drawn on the CPU)."""
    return [
        (torch.randint(0, 2, p.shape, generator=generator) * 2 - 1).to(p.device, p.dtype)
        for p in params
    ]


def generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(int(seed))


# ---------------------------------------------------------------------------- parameters
@contextmanager
def restored(params: Sequence[Tensor]) -> Iterator[Vector]:
    """Yield copies of the parameters' values and write them back on exit (also on error), so
    a measurement leaves the model bitwise as it found it: w + e - e is not w in floating point,
    so perturbations are always set as origin + e (`set_offset`), never added up."""
    origin = [p.detach().clone() for p in params]
    try:
        yield origin
    finally:
        with torch.no_grad():
            torch._foreach_copy_(list(params), origin)


def set_offset(params: Sequence[Tensor], origin: Vector, offset: Vector) -> None:
    """params <- origin + offset."""
    with torch.no_grad():
        torch._foreach_copy_(list(params), torch._foreach_add(origin, offset))


def trainable(model: nn.Module) -> list[Tensor]:
    """The parameters the optimizers train (requires_grad), in the model's order."""
    return [p for p in model.parameters() if p.requires_grad]


# ----------------------------------------------------------------------------- data loss
def dataset_loss(
    model: nn.Module,
    source: BatchSource,
    indices: np.ndarray,
    targets: np.ndarray | Tensor,
    task: str,
    batch_size: int = 512,
    num_classes: list[int] | None = None,
) -> LossFn:
    """The training objective of `model` over molecules `indices` of `source`, as a LossFn.

    The loss is molsam.train.losses.masked_loss over all of them: the mean over present labels
    of BCE-with-logits (classification) or MSE on standardized targets (regression; pass
    targets standardized with the checkpoint's scaler). Each term is one batch's masked mean
    times its share of the present labels, so the terms sum to exactly that full-data mean.

    The model is put in eval mode (dropout off: a deterministic function of the weights).
    Batches are gathered once, here, and reused by every call; molecules are grouped by size
    (molsam.predict.padded_batches) so the dense attention layout carries little padding.

    Args:
        targets: float [len(indices), T] labels of those molecules, row i for indices[i]
            (NaN = missing; standardized for regression).
        batch_size: molecules per term; large batches are faster on a CPU (fewer, bigger ops).
        num_classes: classes per target, for a multiclass model (class-index targets).
    Raises:
        InputError: no label present among `indices`.
    """
    indices = np.asarray(indices, dtype=np.int64)
    if not isinstance(targets, Tensor):
        targets = torch.from_numpy(np.asarray(targets, dtype=np.float32))
    targets = targets.to(source.device, torch.float32)
    if targets.ndim != 2 or targets.shape[0] != len(indices):
        raise ValueError(f"targets: expected [{len(indices)}, T], got {list(targets.shape)}")
    # Size order (stable): similar sizes share a batch, so little attention padding.
    order = np.argsort(source.atom_counts_host[indices], kind="stable")
    present = (~torch.isnan(targets)).sum(1).cpu().numpy()[order]
    total = int(present.sum())
    if total == 0:
        raise InputError(f"no labels among the {len(indices)} molecules to measure the loss on")
    batches = []
    for lo, hi in padded_batches(source.atom_counts_host[indices[order]], batch_size):
        rows = torch.as_tensor(order[lo:hi], device=source.device)
        batches.append((source.gather(indices[order[lo:hi]]), targets[rows],
                        float(present[lo:hi].sum()) / total))
    model.eval()

    def loss_fn() -> Iterator[Tensor]:
        for batch, y, share in batches:
            output = model(batch)  # at least float32 (a half-precision model is cast up)
            output = output.to(torch.promote_types(output.dtype, torch.float32))
            yield masked_loss(output, y.to(output.dtype), task, num_classes) * share

    return loss_fn
