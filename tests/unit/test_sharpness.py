"""molsam.analysis.sharpness against closed forms on a quadratic L(x) = 0.5 x^T A x + b^T x
(Hessian A): top eigenvalue, Hutchinson trace (plain and deflated), rho-sharpness (0.5 rho^2
lambda_max at a minimum; the trust-region maximum with a gradient), landscapes; and on a tiny
GPS model: the batched full-data loss equals the one-batch loss, H v is symmetric and matches
finite differences of gradients, every measurement restores the weights bitwise, and a
checkpoint is measured on its own standardized training loss."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from molsam.analysis.landscape import filter_normalized_direction, loss_landscape_1d, \
    loss_landscape_2d
from molsam.analysis.objective import dataset_loss, gradient, hessian_vector_product, \
    loss_value, trainable
from molsam.analysis.sharpness import hessian_trace, measure, measure_checkpoint, \
    rho_sharpness, top_hessian_eigenvalue
from molsam.data.store import GraphStore
from molsam.models import GPSModel
from molsam.train.losses import masked_loss
from tests.unit.test_predict import PE_STEPS, SMILES, labels, make_run

N = 7


def spd(eigenvalues, seed=0) -> torch.Tensor:
    """Q diag(eigenvalues) Q^T with a seeded random orthogonal Q (float64)."""
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), dtype=torch.float64,
                                       generator=torch.Generator().manual_seed(seed)))
    return q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T


class Quadratic:
    """0.5 x^T A x + b^T x over two parameter tensors (shapes [3] and [2, 2]: 7 numbers), its
    loss given as two terms (the quadratic and the linear part), as a batched loss is."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor | None = None, x0=None) -> None:
        self.a, self.b = a, torch.zeros(N, dtype=torch.float64) if b is None else b
        x0 = torch.zeros(N, dtype=torch.float64) if x0 is None else x0
        self.params = [x0[:3].clone().requires_grad_(), x0[3:].reshape(2, 2).clone()
                       .requires_grad_()]

    def x(self) -> torch.Tensor:
        return torch.cat([self.params[0], self.params[1].reshape(-1)])

    def loss_fn(self):
        x = self.x()
        yield 0.5 * x @ self.a @ x
        yield self.b @ x

    def value(self, x: torch.Tensor) -> float:
        return float(0.5 * x @ self.a @ x + self.b @ x)


def trust_region_max(q: Quadratic, rho: float) -> float:
    """max_{||e|| <= rho} g^T e + 0.5 e^T A e (A positive definite, g != 0): e = (mu I - A)^-1 g
    with mu > lambda_max chosen so that ||e|| = rho (bisection on the secular equation)."""
    x0 = q.x().detach()
    g = q.a @ x0 + q.b
    top = float(torch.linalg.eigvalsh(q.a)[-1])
    lo, hi = top + 1e-12, top + float(g.norm()) / rho + 1.0
    eye = torch.eye(N, dtype=torch.float64)
    for _ in range(200):
        mu = 0.5 * (lo + hi)
        if float(torch.linalg.solve(mu * eye - q.a, g).norm()) > rho:
            lo = mu
        else:
            hi = mu
    e = torch.linalg.solve(hi * eye - q.a, g)
    return float(g @ e + 0.5 * e @ q.a @ e)


def test_top_eigenvalue_of_a_quadratic():
    q = Quadratic(spd([6.0, 3.0, 2.0, 1.0, 0.5, 0.2, 0.1]), x0=torch.ones(N, dtype=torch.float64))
    result = top_hessian_eigenvalue(q.loss_fn, q.params, iters=300, tol=1e-10, seed=3)
    assert result["eigenvalue"] == pytest.approx(6.0, rel=1e-8)
    assert result["converged"] and 2 < result["iterations"] < 300
    assert len(result["history"]) == result["iterations"]
    u = torch.cat([result["vector"][0], result["vector"][1].reshape(-1)])
    assert float(u @ q.a @ u) == pytest.approx(result["eigenvalue"], rel=1e-12)  # exact pair
    # A budget too small to converge is reported as such.
    short = top_hessian_eigenvalue(q.loss_fn, q.params, iters=2, tol=1e-12, seed=3)
    assert short["iterations"] == 2 and not short["converged"]


def test_largest_eigenvalue_when_a_negative_one_dominates():
    q = Quadratic(spd([-9.0, 4.0, 2.0, 1.0, 0.5, -1.0, 0.1], seed=1))
    result = top_hessian_eigenvalue(q.loss_fn, q.params, iters=500, tol=1e-10, seed=0)
    assert result["dominant"] == pytest.approx(-9.0, rel=1e-6)
    assert result["eigenvalue"] == pytest.approx(4.0, rel=1e-6)


def test_hutchinson_trace_exact_for_a_diagonal_hessian():
    diagonal = [5.0, -2.0, 3.0, 0.5, 1.0, 7.0, -0.25]
    q = Quadratic(torch.diag(torch.tensor(diagonal, dtype=torch.float64)))
    result = hessian_trace(q.loss_fn, q.params, probes=5, seed=0)
    assert result["trace"] == pytest.approx(sum(diagonal), abs=1e-12)
    assert result["stderr"] == pytest.approx(0.0, abs=1e-12) and result["probes"] == 5


def test_hutchinson_trace_of_a_dense_hessian_and_its_standard_error():
    a = spd([6.0, 3.0, 2.0, 1.0, 0.5, 0.2, 0.1], seed=2)
    q = Quadratic(a)
    probes = 400
    result = hessian_trace(q.loss_fn, q.params, probes=probes, seed=0)
    true_trace = float(torch.trace(a))
    off_diagonal = float((a ** 2).sum() - (torch.diag(a) ** 2).sum())
    expected_stderr = (2 * off_diagonal / probes) ** 0.5  # Rademacher variance 2 sum_{i!=j} A_ij^2
    assert result["stderr"] == pytest.approx(expected_stderr, rel=0.25)
    assert abs(result["trace"] - true_trace) < 4 * result["stderr"]
    assert result["trace"] != pytest.approx(true_trace, abs=1e-9)  # random, not exact


def test_deflated_trace_is_unbiased_and_far_less_noisy_with_a_dominant_eigenvalue():
    a = spd([50.0, 1.0, 0.5, -0.5, 0.3, 0.2, 0.1], seed=4)
    q = Quadratic(a)
    top = top_hessian_eigenvalue(q.loss_fn, q.params, iters=200, tol=1e-12)
    plain = hessian_trace(q.loss_fn, q.params, probes=200, seed=1)
    deflated = hessian_trace(q.loss_fn, q.params, probes=200, seed=1,
                             deflate=(top["vector"], top["eigenvalue"]))
    true_trace = float(torch.trace(a))
    assert deflated["deflated"] and not plain["deflated"]
    assert abs(deflated["trace"] - true_trace) < 4 * deflated["stderr"]
    assert abs(plain["trace"] - true_trace) < 4 * plain["stderr"]
    assert deflated["stderr"] < plain["stderr"] / 10


def test_rho_sharpness_at_a_minimum_is_half_rho_squared_lambda_max():
    q = Quadratic(spd([4.0, 2.0, 1.0, 0.5, 0.3, 0.2, 0.1], seed=5))  # minimum at 0, g = 0
    rhos = [0.01, 0.1, 1.0]
    results = rho_sharpness(q.loss_fn, q.params, rhos, steps=80, seed=0)
    for rho, result in zip(rhos, results):
        assert result["rho"] == rho and result["loss"] == 0.0
        assert result["sharpness"] == pytest.approx(0.5 * rho ** 2 * 4.0, rel=1e-6)
        assert result["perturbed_loss"] == pytest.approx(result["sharpness"], rel=1e-12)
        assert len(result["ascent"]) == 80
        # Ascent never decreases on a convex loss (conditional-gradient steps), up to rounding:
        # once converged, successive values may differ in their last bits on another CPU.
        ascent = result["ascent"]
        assert all(b >= a - 1e-12 * max(1.0, abs(a)) for a, b in zip(ascent, ascent[1:]))


def test_rho_sharpness_with_a_gradient_is_the_trust_region_maximum():
    a = spd([5.0, 2.0, 1.0, 0.5, 0.3, 0.2, 0.1], seed=6)
    x0 = torch.linspace(-1, 1, N, dtype=torch.float64)
    q = Quadratic(a, b=torch.linspace(0.3, -0.2, N, dtype=torch.float64), x0=x0)
    g = a @ x0 + q.b
    for result in rho_sharpness(q.loss_fn, q.params, [0.05, 0.5, 2.0], steps=100):
        rho = result["rho"]
        assert result["loss"] == pytest.approx(q.value(x0), rel=1e-12)
        assert result["sharpness"] == pytest.approx(trust_region_max(q, rho), rel=1e-6)
        # Step 1 is SAM's: e = rho g / ||g||.
        e = rho * g / g.norm()
        assert result["sam_sharpness"] == pytest.approx(q.value(x0 + e) - q.value(x0), rel=1e-9)
        assert result["sharpness"] >= result["sam_sharpness"]
    zero = rho_sharpness(q.loss_fn, q.params, [0.0], steps=3)[0]
    assert zero["sharpness"] == 0.0 and zero["ascent"] == []


def test_landscape_of_a_quadratic_along_given_directions():
    a = spd([3.0, 2.0, 1.0, 0.5, 0.3, 0.2, 0.1], seed=7)
    x0 = torch.linspace(-0.5, 0.5, N, dtype=torch.float64)
    q = Quadratic(a, b=torch.ones(N, dtype=torch.float64), x0=x0)
    gen = torch.Generator().manual_seed(0)
    d1 = [torch.randn(3, dtype=torch.float64, generator=gen),
          torch.randn(2, 2, dtype=torch.float64, generator=gen)]
    d2 = [torch.randn(3, dtype=torch.float64, generator=gen),
          torch.randn(2, 2, dtype=torch.float64, generator=gen)]
    flat = [torch.cat([d[0], d[1].reshape(-1)]) for d in (d1, d2)]
    one = loss_landscape_1d(q.loss_fn, q.params, [-1.0, 0.0, 0.5], direction=d1)
    for alpha, value in zip(one["alphas"], one["losses"]):
        assert value == pytest.approx(q.value(x0 + alpha * flat[0]), rel=1e-12)
    two = loss_landscape_2d(q.loss_fn, q.params, [-1.0, 1.0], [0.0, 0.25, 2.0],
                            directions=(d1, d2))
    assert np.shape(two["losses"]) == (2, 3)
    for i, alpha in enumerate(two["alphas"]):
        for j, beta in enumerate(two["betas"]):
            expected = q.value(x0 + alpha * flat[0] + beta * flat[1])
            assert two["losses"][i][j] == pytest.approx(expected, rel=1e-12)


def test_filter_normalized_direction_matches_each_filter_norm():
    model = GPSModel(2, hidden=8, layers=1, heads=2, pe_steps=PE_STEPS)
    params = trainable(model)
    direction = filter_normalized_direction(params, torch.Generator().manual_seed(0))
    copy = filter_normalized_direction(params, torch.Generator().manual_seed(0), one_dim="copy")
    assert any(p.dim() == 1 for p in params) and any(p.dim() == 2 for p in params)
    for p, d, c in zip(params, direction, copy):
        assert d.shape == p.shape
        if p.dim() == 1:  # biases and LayerNorm: not moved (or moved along themselves)
            assert torch.equal(d, torch.zeros_like(p)) and torch.equal(c, p.detach())
        else:  # one filter per row (Linear output unit, embedding code)
            torch.testing.assert_close(d.norm(dim=1), p.detach().norm(dim=1), rtol=1e-5, atol=1e-8)
            assert torch.equal(c, d)
    again = filter_normalized_direction(params, torch.Generator().manual_seed(0))
    assert all(torch.equal(x, y) for x, y in zip(direction, again))
    with pytest.raises(ValueError, match="one_dim: 'bias' is not one of zero, copy"):
        filter_normalized_direction(params, torch.Generator(), one_dim="bias")


# ----------------------------------------------------------------------- tiny GPS model
def tiny_problem(task="classification"):
    torch.manual_seed(0)
    model = GPSModel(1, hidden=8, layers=1, heads=2, pe_steps=PE_STEPS, dropout=0.3)
    store = GraphStore.from_smiles(SMILES, rwse_steps=PE_STEPS, workers=1)
    source = store.batch_source("cpu")
    y = labels(task)[:, None].copy()
    y[3, 0] = np.nan  # a missing label is masked, not counted
    indices = np.arange(2, len(SMILES))
    return model, source, indices, y[indices]


def test_batched_dataset_loss_equals_one_batch_loss_in_eval_mode():
    model, source, indices, y = tiny_problem()
    model.train()
    loss_fn = dataset_loss(model, source, indices, y, "classification", batch_size=4)
    assert not model.training  # dropout off
    whole = masked_loss(model(source.gather(indices)), torch.as_tensor(y, dtype=torch.float32),
                        "classification")
    assert loss_value(loss_fn) == pytest.approx(whole.item(), rel=1e-5)
    value, grads = gradient(loss_fn, trainable(model))
    reference = torch.autograd.grad(whole, trainable(model), materialize_grads=True)
    assert value == pytest.approx(whole.item(), rel=1e-5)
    for g, r in zip(grads, reference):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)


def test_hessian_vector_product_is_symmetric_and_matches_gradient_differences():
    model, source, indices, y = tiny_problem("regression")
    model.double()
    loss_fn = dataset_loss(model, source, indices, (y - np.nanmean(y)) / np.nanstd(y), "regression", 8)
    params = trainable(model)
    gen = torch.Generator().manual_seed(1)
    u = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in params]
    v = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in params]
    hu, hv = (hessian_vector_product(loss_fn, params, w) for w in (u, v))

    def inner(a, b):
        return float(sum((x * z).sum() for x, z in zip(a, b)))

    assert inner(u, hv) == pytest.approx(inner(v, hu), rel=1e-8)
    eps = 1e-5
    with torch.no_grad():
        for p, w in zip(params, v):
            p.add_(w, alpha=eps)
    _, plus = gradient(loss_fn, params)
    with torch.no_grad():
        for p, w in zip(params, v):
            p.add_(w, alpha=-2 * eps)
    _, minus = gradient(loss_fn, params)
    difference = [(a - b) / (2 * eps) for a, b in zip(plus, minus)]
    assert inner(difference, u) == pytest.approx(inner(hv, u), rel=1e-4)


def test_every_measurement_restores_the_weights_bitwise_and_repeats_with_its_seed(tmp_path):
    model, source, indices, y = tiny_problem()
    loss_fn = dataset_loss(model, source, indices, y, "classification", batch_size=8)
    params = trainable(model)
    before = [p.detach().clone() for p in params]
    kwargs = dict(rhos=(0.01, 0.5), steps=2, iters=3, probes=2, seed=4,
                  alphas_1d=(-1.0, 0.0, 1.0), alphas_2d=(-1.0, 0.0, 1.0))
    first = measure(loss_fn, params, out_dir=tmp_path / "a", **kwargs)
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    second = measure(loss_fn, params, out_dir=tmp_path / "b", **kwargs)
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    for key in ("loss", "rho_sharpness", "top_eigenvalue", "trace"):
        assert first[key] == second[key]  # same seed, same machine: bitwise by design
    assert first["landscape"]["2d"] == second["landscape"]["2d"]
    other = measure(loss_fn, params, **{**kwargs, "seed": 5, "rhos": ()})
    assert other["trace"]["trace"] != first["trace"]["trace"]
    assert first["rho_sharpness"][1]["sharpness"] > first["rho_sharpness"][0]["sharpness"] > 0
    assert first["landscape"]["1d"]["losses"][1] == pytest.approx(first["loss"], rel=1e-6)
    json.dumps({k: v for k, v in first.items()})  # JSON-ready as returned
    for name in ("landscape_1d.csv", "landscape_1d.png", "landscape_2d.csv", "landscape_2d.png"):
        assert (tmp_path / "a" / name).stat().st_size > 0
    rows = (tmp_path / "a" / "landscape_2d.csv").read_text().splitlines()
    assert rows[0] == "alpha,beta,loss" and len(rows) == 10
    # A failing loss still leaves the weights as they were.

    def failing():
        for i, term in enumerate(loss_fn()):
            if i == 1:
                raise RuntimeError("boom")
            yield term

    with pytest.raises(RuntimeError, match="boom"):
        rho_sharpness(failing, params, [0.1])
    assert all(torch.equal(p, b) for p, b in zip(params, before))


def test_checkpoint_measured_on_its_standardized_training_loss(tmp_path):
    run, models = make_run(tmp_path / "run", "regression")
    result = measure_checkpoint(run / "seed_0" / "best.pt", rhos=(0.01,), landscape=False,
                                steps=2, iters=2, probes=2, workers=1)
    splits = json.loads((run / "splits.json").read_text())
    train = np.asarray(splits["train"]["indices"])
    y = labels("regression")
    scaled = (y[train] - y.astype(np.float32).mean()) / y.astype(np.float32).std()
    store = GraphStore.from_smiles([SMILES[i] for i in train], rwse_steps=PE_STEPS, workers=1)
    with torch.no_grad():
        out = models[0](store.batch_source("cpu").gather(np.arange(len(train))))
    expected = float(((out[:, 0].double() - torch.as_tensor(scaled)) ** 2).mean())
    assert result["split"] == "train" and result["n"] == len(train) == 16
    assert result["task"] == "regression" and result["loss"] == pytest.approx(expected, rel=1e-5)
    assert result["landscape"] is None and result["top_eigenvalue"]["iterations"] <= 2
    assert "vector" not in result["top_eigenvalue"] and result["trace"]["deflated"]
    val = measure_checkpoint(run / "seed_0" / "best.pt", split="val", rhos=(), iters=0,
                             probes=0, landscape=False, workers=1)
    assert val["n"] == 4 and val["rho_sharpness"] == [] and val["top_eigenvalue"] is None
