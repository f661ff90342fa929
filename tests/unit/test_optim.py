"""molsam.optim: the sharpness-aware wrappers against hand computations and plain Adam.

Every test uses a tiny seeded model on the CPU; the whole file runs in a few seconds.
"""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from molsam.errors import ConfigError
from molsam.optim import (
    AESAM,
    OPTIMIZERS,
    RST,
    SAM,
    SAMK,
    GraphSAM,
    LookSAM,
    build_optimizer,
    is_sharpness_aware,
    reanchor,
    set_rho,
)

WRAPPERS = [name for name in OPTIMIZERS if name != "adam"]
# Keywords some algorithms need (AE-SAM's threshold schedule has a length).
EXTRA = {"aesam": {"total_steps": 20}}


class Tiny(nn.Module):
    """5 -> 8 -> 1 MLP plus a parameter that never gets a gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(8, 5) * 0.5)
        self.b1 = nn.Parameter(torch.randn(8) * 0.1)
        self.w2 = nn.Parameter(torch.randn(1, 8) * 0.5)
        self.b2 = nn.Parameter(torch.zeros(1))
        self.unused = nn.Parameter(torch.randn(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tiny_forward([self.w1, self.b1, self.w2, self.b2], x)


def tiny_forward(ps: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    w1, b1, w2, b2 = ps
    return torch.tanh(x @ w1.T + b1) @ w2.T + b2


def make_model(seed: int = 0) -> Tiny:
    torch.manual_seed(seed)
    return Tiny()


def batches(n: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(16, 5, generator=gen)
        y = torch.sin(x.sum(dim=1, keepdim=True)) + 0.1 * torch.randn(16, 1, generator=gen)
        out.append((x, y))
    return out


def closure_for(model: nn.Module, batch, calls: list | None = None):
    x, y = batch

    def closure() -> torch.Tensor:
        if calls is not None:
            calls.append(1)
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        return loss

    return closure


def params_of(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def run(model: nn.Module, opt: torch.optim.Optimizer, data, calls: list | None = None) -> list:
    losses = []
    for batch in data:
        opt.zero_grad(set_to_none=True)  # torch Adam does not zero inside step; the wrappers do
        losses.append(opt.step(closure_for(model, batch, calls)))
    return losses


# ------------------------------------------------------------------------------------------
# rho = 0 is the base optimizer, bit for bit


@pytest.mark.parametrize("name", WRAPPERS)
def test_rho_zero_reproduces_adam_bitwise(name: str) -> None:
    data = batches(12)
    ref = make_model()
    adam = torch.optim.Adam(ref.parameters(), lr=1e-2)
    run(ref, adam, data)

    model = make_model()
    kwargs = dict(EXTRA.get(name, {}), rho=0.0, lr=1e-2)
    if name == "looksam":
        kwargs["alpha"] = 0.0  # its reuse term is a separate knob: at rho=0 g_v is rounding noise
    if name == "rst":
        kwargs["p_start"] = 0.5  # mixes SAM and plain steps
    opt = build_optimizer(name, model.parameters(), **kwargs)
    run(model, opt, data)
    for a, b in zip(params_of(ref), params_of(model)):
        assert torch.equal(a, b)
    # and the moments the base optimizer kept are the same too
    for p_ref, p in zip(ref.parameters(), model.parameters()):
        if p_ref in adam.state:
            assert torch.equal(adam.state[p_ref]["exp_avg"], opt.base_optimizer.state[p]["exp_avg"])


# ------------------------------------------------------------------------------------------
# SAM / ASAM on a hand-computed quadratic


def _quadratic_step(opt_cls, **kwargs):
    theta = [nn.Parameter(torch.tensor([3.0])), nn.Parameter(torch.tensor([4.0]))]
    seen = []

    def closure():
        seen.append([t.detach().clone() for t in theta])
        loss = 0.5 * (theta[0] ** 2 + theta[1] ** 2).sum()  # g = θ
        loss.backward()
        return loss

    opt = opt_cls(theta, torch.optim.SGD, lr=0.1, **kwargs)
    loss = opt.step(closure)
    return theta, seen, loss


def test_sam_perturbation_matches_hand_computation() -> None:
    theta, seen, loss = _quadratic_step(SAM, rho=0.5)
    # g = (3, 4), ||g|| = 5, eps = 0.5 * (0.6, 0.8) = (0.3, 0.4)
    assert len(seen) == 2
    assert torch.allclose(torch.cat(seen[0]), torch.tensor([3.0, 4.0]), atol=0, rtol=0)
    assert torch.allclose(torch.cat(seen[1]), torch.tensor([3.3, 4.4]), atol=1e-6, rtol=0)
    # SGD steps from θ (not θ + ε) with ω = ∇L(θ + ε) = (3.3, 4.4)
    assert torch.allclose(torch.cat([t.detach() for t in theta]),
                          torch.tensor([3.0 - 0.33, 4.0 - 0.44]), atol=1e-6, rtol=0)
    # the loss returned is the loss at the perturbed point
    assert loss.item() == pytest.approx(0.5 * (3.3**2 + 4.4**2), rel=1e-6)


def _asam_step(params: list[tuple[str, torch.Tensor]], named: bool = True) -> list[torch.Tensor]:
    """One ASAM step (SGD, rho 0.5) on L = ½‖θ‖² (so g = θ); returns θ + ε seen by pass 2."""
    seen = []
    tensors = [t for _, t in params]

    def closure():
        seen.append([t.detach().clone() for t in tensors])
        loss = 0.5 * sum((t**2).sum() for t in tensors)
        loss.backward()
        return loss

    opt = SAM(params if named else tensors, torch.optim.SGD, lr=0.1, rho=0.5, adaptive=True)
    opt.step(closure)
    return seen[1]


def test_asam_perturbation_matches_hand_computation() -> None:
    # The authors' code (SamsungLabs/ASAM): T = |w| + 0.01 for weights, T = 1 for biases.
    w = nn.Parameter(torch.tensor([[3.0, 0.0]]))
    b = nn.Parameter(torch.tensor([4.0]))
    seen = _asam_step([("lin.weight", w), ("lin.bias", b)])
    t = torch.tensor([3.01, 0.01])
    tg_w, tg_b = t * torch.tensor([3.0, 0.0]), torch.tensor([4.0])  # T g (g = θ)
    norm = math.sqrt(float((tg_w**2).sum()) + float((tg_b**2).sum()))
    assert torch.allclose(seen[0], torch.tensor([[3.0, 0.0]]) + 0.5 * t * tg_w / norm,
                          atol=1e-6, rtol=0)
    assert torch.allclose(seen[1], torch.tensor([4.0]) + 0.5 * tg_b / norm, atol=1e-6, rtol=0)


def test_asam_tells_weights_from_biases_by_name_else_by_dimension() -> None:
    # A 1-D parameter named like a weight (a LayerNorm gain) is scaled, as in the authors' code;
    # without names, a 1-D parameter counts as a bias (T = 1) and a matrix as a weight.
    def fresh():
        return nn.Parameter(torch.tensor([2.0])), nn.Parameter(torch.tensor([[5.0]]))

    gain, mat = fresh()
    by_name = _asam_step([("norm.weight", gain), ("lin.weight", mat)])
    t = torch.tensor([2.01, 5.01])
    tg = t * torch.tensor([2.0, 5.0])
    expected = torch.tensor([2.0, 5.0]) + 0.5 * t * tg / tg.norm()
    assert torch.allclose(torch.cat([x.flatten() for x in by_name]), expected, atol=1e-6)

    gain, mat = fresh()
    by_dim = _asam_step([("a", gain), ("b", mat)], named=False)
    tg = torch.tensor([2.0, 5.01 * 5.0])  # the vector unscaled, the matrix by |w| + η
    expected = torch.tensor([2.0, 5.0]) + 0.5 * torch.tensor([1.0, 5.01]) * tg / tg.norm()
    assert torch.allclose(torch.cat([x.flatten() for x in by_dim]), expected, atol=1e-6)


def test_samk_with_k1_is_sam_bitwise() -> None:
    data = batches(6)
    m1, m2 = make_model(), make_model()
    run(m1, SAM(m1.parameters(), lr=1e-2, rho=0.1), data)
    run(m2, SAMK(m2.parameters(), lr=1e-2, rho=0.1, k=1), data)
    for a, b in zip(params_of(m1), params_of(m2)):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------
# GraphSAM against a per-tensor loop written from the paper's equations


def _grad_at(ps: list[torch.Tensor], batch) -> tuple[list[torch.Tensor], torch.Tensor]:
    x, y = batch
    leaves = [p.detach().clone().requires_grad_(True) for p in ps]
    loss = ((tiny_forward(leaves, x) - y) ** 2).mean()
    return list(torch.autograd.grad(loss, leaves)), loss.detach()


def _norm(ts: list[torch.Tensor]) -> torch.Tensor:
    return torch.sqrt(sum((t.double() ** 2).sum() for t in ts)).float()


@pytest.mark.parametrize("anchor", ["unit", "raw"])
def test_graphsam_matches_equations_over_steps_with_reanchor(anchor: str) -> None:
    rho, beta, lr, steps, reanchor_at = 0.2, 0.9, 1e-2, 12, 6
    data = batches(steps)

    model = make_model()
    opt = GraphSAM(model.parameters(), rho=rho, beta=beta, lr=lr, anchor=anchor)
    seen: list[list[torch.Tensor]] = []
    got_e = []
    for t, (x, y) in enumerate(data):
        if t == reanchor_at:
            opt.reanchor()

        def closure(x=x, y=y):
            seen.append([p.detach().clone() for p in model.parameters()][:4])
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            return loss

        opt.step(closure)
        got_e.append([opt.state[p]["e"].clone() for p in list(model.parameters())[:4]])
    assert "e" not in opt.state[model.unused]  # never had a gradient

    # reference: plain tensors, one loop per tensor, the equations of the GraphSAM paper
    ref = make_model()
    theta = [p.detach().clone() for p in list(ref.parameters())[:4]]
    ref_params = [nn.Parameter(t.clone()) for t in theta]
    adam = torch.optim.Adam(ref_params, lr=lr)
    e: list[torch.Tensor] = []
    points = []
    for t, batch in enumerate(data):
        theta = [p.detach().clone() for p in ref_params]
        if t in (0, reanchor_at):
            g, _ = _grad_at(theta, batch)
            points.append(theta)
            n = _norm(g)
            e = [gi / n for gi in g] if anchor == "unit" else [gi.clone() for gi in g]
        ne = _norm(e)
        perturbed = [th + rho * ei / ne for th, ei in zip(theta, e)]
        points.append(perturbed)
        w, _ = _grad_at(perturbed, batch)
        nw = _norm(w)
        e = [beta * ei + (1 - beta) * wi / nw for ei, wi in zip(e, w)]
        for p, wi in zip(ref_params, w):
            p.grad = wi
        adam.step()
        for a, b in zip(got_e[t], e):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), f"estimate differs at step {t}"

    assert len(seen) == len(points) == steps + 2
    for t, (a_list, b_list) in enumerate(zip(seen, points)):
        for a, b in zip(a_list, b_list):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), f"evaluation point {t} differs"
    for a, b in zip(list(model.parameters())[:4], ref_params):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_graphsam_perturbation_has_radius_rho() -> None:
    model = make_model()
    opt = GraphSAM(model.parameters(), rho=0.3, lr=1e-2)
    seen = []
    for batch in batches(4):
        theta = params_of(model)[:4]

        def closure(batch=batch, theta=theta):
            now = [p.detach() for p in list(model.parameters())[:4]]
            seen.append(_norm([a - b for a, b in zip(now, theta)]).item())
            return closure_for(model, batch)()

        opt.step(closure)
    # anchor pass at θ (0), then ε with ‖ε‖ = ρ at every step
    assert seen[0] == 0.0
    assert seen[1:] == pytest.approx([0.3] * 4, rel=1e-5)


def test_graphsam_opposite_direction_perturbs_against_the_estimate() -> None:
    """direction="opposite": the perturbed pass runs at θ − ρ e/‖e‖ instead of θ + ρ e/‖e‖."""
    steps = {}
    for direction in ("estimate", "opposite"):
        model = make_model()
        theta = params_of(model)[:4]
        opt = GraphSAM(model.parameters(), rho=0.3, lr=1e-2, direction=direction)
        seen = []

        def closure(batch=batches(1)[0], model=model, seen=seen):
            seen.append([p.detach().clone() for p in list(model.parameters())[:4]])
            return closure_for(model, batch)()

        opt.step(closure)  # the anchor pass at θ (e = g/‖g‖), then the perturbed pass
        assert all(torch.equal(a, b) for a, b in zip(seen[0], theta))
        steps[direction] = [a - b for a, b in zip(seen[1], theta)]
    for along, against in zip(steps["estimate"], steps["opposite"]):
        torch.testing.assert_close(against, -along)
    assert float(_norm(steps["opposite"])) == pytest.approx(0.3, rel=1e-5)


def test_unknown_graphsam_direction_is_rejected() -> None:
    with pytest.raises(ValueError, match="direction.*'backwards'"):
        GraphSAM(make_model().parameters(), direction="backwards")


# ------------------------------------------------------------------------------------------
# closure calls


def test_graphsam_calls_closure_once_per_step_twice_on_reanchor() -> None:
    model = make_model()
    opt = GraphSAM(model.parameters(), lr=1e-2)
    per_step = []
    for t, batch in enumerate(batches(8)):
        if t == 5:
            reanchor(opt)
        calls: list = []
        opt.step(closure_for(model, batch, calls))
        per_step.append(len(calls))
    assert per_step == [2, 1, 1, 1, 1, 2, 1, 1]


@pytest.mark.parametrize(
    ("opt_cls", "kwargs", "expected"),
    [
        (SAM, {}, [2] * 7),
        (SAMK, {"k": 3}, [2, 1, 1, 2, 1, 1, 2]),
        (LookSAM, {"k": 3}, [2, 1, 1, 2, 1, 1, 2]),
        (RST, {"p_start": 0.0}, [1] * 7),
        (RST, {"p_start": 1.0}, [2] * 7),
        (AESAM, {"total_steps": 7, "c_start": 1e6, "c_end": 1e6}, [1] * 7),
        (AESAM, {"total_steps": 7, "c_start": -1e6, "c_end": -1e6}, [2] * 7),
    ],
)
def test_closure_call_counts(opt_cls, kwargs, expected) -> None:
    model = make_model()
    opt = opt_cls(model.parameters(), lr=1e-2, **kwargs)
    per_step = []
    for batch in batches(len(expected)):
        calls: list = []
        opt.step(closure_for(model, batch, calls))
        per_step.append(len(calls))
    assert per_step == expected


def test_samk_reanchor_gives_sam_one() -> None:
    model = make_model()
    opt = SAMK(model.parameters(), lr=1e-2, k=10**9)
    per_step = []
    for t, batch in enumerate(batches(6)):
        if t % 3 == 0:  # "epoch" start
            opt.reanchor()
        calls: list = []
        opt.step(closure_for(model, batch, calls))
        per_step.append(len(calls))
    assert per_step == [2, 1, 1, 2, 1, 1]


# ------------------------------------------------------------------------------------------
# gradients set to None, parameters without gradients


@pytest.mark.parametrize("name", WRAPPERS)
def test_none_grads_and_unused_parameters(name: str) -> None:
    torch.manual_seed(0)
    model = make_model()
    extra = nn.Parameter(torch.ones(5))  # used only on odd steps
    opt = build_optimizer(name, list(model.parameters()) + [extra], lr=1e-2,
                          **EXTRA.get(name, {}))
    unused_before = model.unused.detach().clone()
    for t, (x, y) in enumerate(batches(8)):
        opt.zero_grad(set_to_none=True)

        def closure(x=x, y=y, t=t):
            out = model(x)
            if t % 2:
                out = out + (x * extra).sum(dim=1, keepdim=True) * 0.01
            loss = ((out - y) ** 2).mean()
            loss.backward()
            return loss

        loss = opt.step(closure)
        assert torch.isfinite(loss)
    assert torch.equal(model.unused.detach(), unused_before)
    assert not opt.base_optimizer.state.get(model.unused)  # the base optimizer never saw it
    assert not torch.equal(extra.detach(), torch.ones(5))
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ------------------------------------------------------------------------------------------
# checkpointing: save -> load -> continue equals an uninterrupted run, bit for bit


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_state_dict_resume_is_bitwise(name: str) -> None:
    data = batches(12)
    kwargs = dict(EXTRA.get(name, {}), lr=1e-2)
    if name != "adam":
        kwargs["rho"] = 0.1
    if name in ("samk", "looksam"):
        kwargs["k"] = 4  # the anchor/SAM step falls after the resume point

    model = make_model()
    opt = build_optimizer(name, model.parameters(), **kwargs)
    run(model, opt, data[:5])
    reanchor(opt)  # a pending re-anchor must survive the round trip
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    run(model, opt, data[5:])
    uninterrupted = params_of(model)

    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)  # a checkpoint holds tensors and builtins only
    model2 = make_model(seed=123)
    opt2 = build_optimizer(name, model2.parameters(), **dict(kwargs, lr=0.5))
    model2.load_state_dict(ckpt["model"])
    opt2.load_state_dict(ckpt["opt"])
    assert opt2.param_groups[0]["lr"] == 1e-2
    if is_sharpness_aware(opt2):
        assert opt2.param_groups is opt2.base_optimizer.param_groups
        assert opt2.steps == 5
    run(model2, opt2, data[5:])
    for a, b in zip(uninterrupted, params_of(model2)):
        assert torch.equal(a, b)


def test_state_dict_carries_base_moments_and_estimate() -> None:
    model = make_model()
    opt = GraphSAM(model.parameters(), lr=1e-2)
    run(model, opt, batches(3))
    sd = opt.state_dict()
    assert "exp_avg" in next(iter(sd["base_optimizer"]["state"].values()))
    assert any("e" in s for s in sd["state"].values())
    assert sd["molsam"]["steps"] == 3 and sd["molsam"]["reanchor_pending"] is False
    with pytest.raises(ValueError, match="base_optimizer"):
        opt.load_state_dict({"state": sd["state"], "param_groups": sd["param_groups"]})


def test_rst_resume_restores_generator_state() -> None:
    model = make_model()
    opt = RST(model.parameters(), lr=1e-2, p_start=0.5, seed=7)
    run(model, opt, batches(3))
    sd = opt.state_dict()
    draws = [torch.rand((), generator=opt._generator).item() for _ in range(5)]
    opt.load_state_dict(sd)
    assert [torch.rand((), generator=opt._generator).item() for _ in range(5)] == draws


# ------------------------------------------------------------------------------------------
# the loss falls


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_loss_falls_on_convex_problem(name: str) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=gen)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    lin = nn.Linear(4, 1)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
    opt = build_optimizer(name, lin.parameters(), lr=0.1, **EXTRA.get(name, {}))
    start = ((lin(x) - y) ** 2).mean().item()
    run(lin, opt, [(x, y)] * 60)
    end = ((lin(x) - y) ** 2).mean().item()
    assert end < 0.05 * start


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_loss_falls_on_nonconvex_problem(name: str) -> None:
    model = make_model()
    x, y = batches(1)[0]
    opt = build_optimizer(name, model.parameters(), lr=2e-2, **EXTRA.get(name, {}))
    start = ((model(x) - y) ** 2).mean().item()
    run(model, opt, [(x, y)] * 80)
    end = ((model(x) - y) ** 2).mean().item()
    assert end < 0.5 * start


# ------------------------------------------------------------------------------------------
# hyper-parameters, registry, schedule hooks


@pytest.mark.parametrize("name", WRAPPERS)
def test_negative_rho_is_rejected(name: str) -> None:
    with pytest.raises(ValueError, match=r"rho.*-0\.1"):
        build_optimizer(name, make_model().parameters(), rho=-0.1, **EXTRA.get(name, {}))


@pytest.mark.parametrize("beta", [1.0, -0.1, 1.5])
def test_graphsam_beta_outside_unit_interval_is_rejected(beta: float) -> None:
    with pytest.raises(ValueError, match=rf"beta.*{beta}"):
        GraphSAM(make_model().parameters(), beta=beta)


@pytest.mark.parametrize("cls", [SAMK, LookSAM])
def test_k_below_one_is_rejected(cls) -> None:
    with pytest.raises(ValueError, match=r"k.*got 0"):
        cls(make_model().parameters(), k=0)


def test_unknown_anchor_is_rejected() -> None:
    with pytest.raises(ValueError, match="'norm'.*|.*'norm'"):
        GraphSAM(make_model().parameters(), anchor="norm")


def test_step_without_closure_is_an_error() -> None:
    opt = SAM(make_model().parameters())
    with pytest.raises(ValueError, match="closure"):
        opt.step()


def test_build_optimizer_errors_list_choices() -> None:
    params = list(make_model().parameters())
    with pytest.raises(ConfigError, match="valid names.*graphsam"):
        build_optimizer("graphsem", params)
    with pytest.raises(ConfigError, match="rhoo.*did you mean 'rho'.*valid keywords.*beta"):
        build_optimizer("graphsam", params, rhoo=0.1)
    with pytest.raises(ValueError, match="adam.rho.*not sharpness-aware"):
        build_optimizer("adam", params, rho=0.05)
    with pytest.raises(ConfigError, match="total_steps"):
        build_optimizer("aesam", params)
    with pytest.raises(ConfigError, match="base_optimizer.*'adamw'"):
        build_optimizer("sam", params, base_optimizer="lion")


def test_build_optimizer_builds_each_name() -> None:
    for name in OPTIMIZERS:
        opt = build_optimizer(name, make_model().parameters(), **EXTRA.get(name, {}))
        assert is_sharpness_aware(opt) == (name != "adam")
    asam = build_optimizer("asam", make_model().parameters())
    assert isinstance(asam, SAM) and asam.adaptive
    sgd_sam = build_optimizer("sam", make_model().parameters(), base_optimizer="sgd", lr=0.1,
                              momentum=0.9)
    assert isinstance(sgd_sam.base_optimizer, torch.optim.SGD)
    assert type(build_optimizer("adam", make_model().parameters())) is torch.optim.Adam


def test_reanchor_is_uniform() -> None:
    adam = torch.optim.Adam(make_model().parameters())
    reanchor(adam)  # no attribute: nothing happens
    for name in WRAPPERS:
        opt = build_optimizer(name, make_model().parameters(), **EXTRA.get(name, {}))
        opt.reanchor()


def test_param_groups_are_shared_and_rho_is_read_each_step() -> None:
    model = make_model()
    opt = GraphSAM(model.parameters(), rho=0.3, lr=1e-2)
    assert opt.param_groups is opt.base_optimizer.param_groups
    opt.param_groups[0]["lr"] = 0.123
    assert opt.base_optimizer.param_groups[0]["lr"] == 0.123
    run(model, opt, batches(2))
    set_rho(opt, 0.05)
    theta = [p.detach().clone() for p in list(model.parameters())[:4]]
    radius = []

    def closure():
        now = [p.detach() for p in list(model.parameters())[:4]]
        radius.append(_norm([a - b for a, b in zip(now, theta)]).item())
        return closure_for(model, batches(1)[0])()

    opt.step(closure)
    assert radius == [pytest.approx(0.05, rel=1e-5)]


@pytest.mark.parametrize("name", ["sam", "graphsam"])
def test_bf16_autocast_with_fp32_params(name: str) -> None:
    model = make_model()
    opt = build_optimizer(name, model.parameters(), lr=1e-2)
    for x, y in batches(3):

        def closure(x=x, y=y):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = ((model(x) - y) ** 2).mean()
            loss.float().backward()
            return loss

        loss = opt.step(closure)
        assert torch.isfinite(loss)
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())
    if name == "graphsam":
        assert opt.state[model.w1]["e"].dtype == torch.float32


# ------------------------------------------------------------------------------------------
# algorithm-specific checks


def test_looksam_reuse_step_adds_scaled_orthogonal_component() -> None:
    # L = 0.5 Σ a θ²: g = a θ. Different curvatures, so g_s is not parallel to g.
    a = torch.tensor([1.0, 4.0, 0.5])
    theta = nn.Parameter(torch.tensor([1.0, 1.0, 2.0]))

    def closure():
        loss = 0.5 * (a * theta**2).sum()
        loss.backward()
        return loss

    rho, alpha = 0.5, 0.2
    opt = LookSAM([theta], torch.optim.SGD, lr=1.0, rho=rho, k=5, alpha=alpha)
    t0 = theta.detach().clone()
    opt.step(closure)
    g = a * t0
    gs = a * (t0 + rho * g / g.norm())
    g_v = gs - (g @ gs) / (g @ g) * g
    assert torch.allclose(opt.state[theta]["g_v"], g_v, atol=1e-6)
    assert abs(float(opt.state[theta]["g_v"] @ g)) < 1e-5  # orthogonal to the plain gradient
    assert torch.allclose(theta.detach(), t0 - gs, atol=1e-6)

    t1 = theta.detach().clone()
    opt.step(closure)
    g1 = a * t1
    expected = g1 + alpha * g1.norm() / g_v.norm() * g_v
    assert torch.allclose(theta.detach(), t1 - expected, atol=1e-5)


def test_aesam_running_statistics_follow_the_formula() -> None:
    model = make_model()
    opt = AESAM(model.parameters(), lr=1e-2, total_steps=10, delta=0.8)
    mean = var = 0.0
    for x, y in batches(4):
        theta = [p.detach().clone() for p in list(model.parameters())[:4]]
        g, _ = _grad_at(theta, (x, y))
        sq = float(_norm(g)) ** 2
        mean = 0.8 * mean + 0.2 * sq
        var = 0.8 * var + 0.2 * (sq - mean) ** 2
        opt.step(closure_for(model, (x, y)))
        assert opt._counters["sq_mean"].item() == pytest.approx(mean, rel=1e-4)
        assert opt._counters["sq_var"].item() == pytest.approx(var, rel=1e-3)
    assert opt.threshold_at(0) == -1.0 and opt.threshold_at(5) == 0.0
    assert opt.threshold_at(10) == 1.0 and opt.threshold_at(50) == 1.0


def test_rst_probability_schedule_and_rate() -> None:
    model = make_model()
    opt = RST(model.parameters(), lr=1e-3, p_start=0.2, p_end=0.8, total_steps=100, seed=3)
    assert opt.probability_at(0) == pytest.approx(0.2)
    assert opt.probability_at(50) == pytest.approx(0.5)
    assert opt.probability_at(500) == pytest.approx(0.8)
    x, y = batches(1)[0]
    const = RST(model.parameters(), lr=1e-3, p_start=0.5, seed=3)
    run(model, const, [(x, y)] * 200)
    assert 70 <= const._counters["sam_steps"] <= 130  # Binomial(200, 0.5): ±4.2 sigma


def test_reanchor_drops_the_estimate_of_parameters_without_gradient() -> None:
    # Parameters without a gradient are left out of norms and perturbation (molsam.optim).
    # A parameter that had a gradient before but none in the anchor pass must not keep its old
    # (stale) direction, which would still count in the norm of e.
    model = make_model()
    opt = GraphSAM(model.parameters(), rho=0.05)
    data = batches(2)

    def with_unused(batch):
        x, y = batch

        def closure():
            loss = ((model(x) - y) ** 2).mean() + model.unused.square().sum()
            loss.backward()
            return loss

        return closure

    opt.step(with_unused(data[0]))
    assert "e" in opt.state[model.unused]
    opt.reanchor()
    opt.step(closure_for(model, data[1]))  # the anchor pass gives `unused` no gradient
    assert "e" not in opt.state[model.unused]
    assert all("e" in opt.state[p] for p in (model.w1, model.b1, model.w2, model.b2))


@pytest.mark.parametrize("direction", ["estimate", "opposite"])
def test_sam_cosine_diagnostic_matches_hand_computation_and_changes_nothing(
    direction: str,
) -> None:
    """cos(ε, g) of the perturbation actually applied: cos(e, g), or −cos(e, g) against e."""
    sign = 1.0 if direction == "estimate" else -1.0
    data = batches(3)
    traced_model, plain_model = make_model(), make_model()
    traced = GraphSAM(traced_model.parameters(), rho=0.05, beta=0.9, direction=direction,
                      track_sam_cosine=True)
    plain = GraphSAM(plain_model.parameters(), rho=0.05, beta=0.9, direction=direction)
    expected = []
    for batch in data:
        ps = list(traced_model.parameters())[:4]  # `unused` never has a gradient nor an e
        if "e" in traced.state[ps[0]]:  # not the anchor step: e exists before the step
            e = [traced.state[p]["e"].clone() for p in ps]
            g, _ = _grad_at(ps, batch)
            dot = sum((a * b).sum() for a, b in zip(e, g))
            cosine = sign * float(dot / (_norm(e) * _norm(g)))
            expected.append((cosine, float(_norm(e)), float(_norm(g))))
        traced.step(closure_for(traced_model, batch))
        plain.step(closure_for(plain_model, batch))
    stats = traced.pop_diagnostics()
    assert stats["diag_steps"] == len(expected) == 2  # the anchor step is not counted
    cosines = [c for c, _, _ in expected]
    assert stats["sam_cos_mean"] == pytest.approx(sum(cosines) / 2, abs=1e-5)
    assert stats["sam_cos_min"] == pytest.approx(min(cosines), abs=1e-5)
    assert stats["e_norm_mean"] == pytest.approx(sum(e for _, e, _ in expected) / 2, rel=1e-5)
    assert stats["g_norm_mean"] == pytest.approx(sum(g for _, _, g in expected) / 2, rel=1e-5)
    assert stats["diag_seconds"] > 0
    assert traced.pop_diagnostics() == {}  # reset after reading
    # The extra pass changes nothing: same weights as without the diagnostic.
    for a, b in zip(params_of(traced_model), params_of(plain_model)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["sam", "graphsam", "looksam"])
def test_group_with_perturb_false_is_neither_perturbed_nor_in_the_norm(name: str) -> None:
    model = make_model()
    kept = [model.b1, model.b2]
    perturbed = [model.w1, model.w2]
    opt = build_optimizer(name, [{"params": perturbed},
                                 {"params": kept + [model.unused], "perturb": False}], rho=0.1)
    before = {id(p): p.detach().clone() for p in model.parameters()}
    seen = []

    def closure(batch=batches(1)[0]):
        seen.append({id(p): p.detach().clone() for p in model.parameters()})
        return closure_for(model, batch)()

    opt.step(closure)
    last = seen[-1]  # the perturbed pass
    for p in kept:
        assert torch.equal(last[id(p)], before[id(p)])  # not perturbed
    # the whole radius goes to the perturbed group: ||eps|| over w1, w2 alone is rho
    eps = [last[id(p)] - before[id(p)] for p in perturbed]
    assert float(_norm(eps)) == pytest.approx(0.1, rel=1e-4)
    for p in kept:  # but the base optimizer still steps them
        assert not torch.equal(p.detach(), before[id(p)])
