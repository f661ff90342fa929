"""The GraphSAM reference code's training arithmetic (optim.variant reference, the transformer
schedule, compounding decay), each against a transcription of the reference step on a small
model (the authors' CoMPT-main/sam.py and utils.py ScheduledOptim, under torch 1.x semantics:
the loop zeroes gradients after every step, so they are zeros, not None)."""

from __future__ import annotations

import math

import pytest
import torch

from molsam.optim import build_optimizer
from molsam.optim.schedules import (
    TransformerLR,
    reference_decay,
    set_group_value,
    set_rho,
    transformer_lr,
)



@pytest.fixture(autouse=True)
def float64():
    """Float64 for these tests only (restored after each)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _model_and_batches(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    batches = [(torch.randn(6, 5), torch.randn(6, 1)) for _ in range(4)]
    return model, batches


def _loss(model, batch):
    x, y = batch
    return ((model(x) - y) ** 2).mean()


def reference_graphsam(model, batches, epochs, rho, radius, alpha, gamma, step_size, lr):
    """sam.py's GraphSAM driven as train_graph.py drives it (loss-weighted closures)."""
    params = list(model.parameters())
    base = torch.optim.Adam(params, lr=lr)
    gh = gs = None
    for epoch in range(epochs):
        for i, batch in enumerate(batches):
            def closure():
                loss = _loss(model, batch)
                loss.backward(loss.clone().detach())
                return loss
            if i == 0:
                loss = _loss(model, batch)
                loss.backward()
                if epoch % step_size == 0:
                    rho = rho * pow(gamma, epoch / step_size)
                    radius = radius * pow(gamma, epoch / step_size)
            with torch.no_grad():
                grad_norm = torch.norm(torch.stack(
                    [(torch.abs(p) * p.grad).norm(p=2) for p in params if p.grad is not None]))
                scale = rho / (grad_norm + 1e-12)
                if i == 0:
                    gh = [p.grad.clone() for p in params]
                else:
                    gh = [(1 - alpha) * (g_s / torch.norm(g_s + 1e-8)) + alpha * g_h
                          for g_s, g_h in zip(gs, gh)]
                saved = []
                for p, g in zip(params, gh):
                    saved.append(p.data.clone())
                    e_w = torch.pow(p, 2) * g * scale
                    norm = torch.norm(e_w)
                    if norm > radius:
                        e_w = radius * e_w / norm
                    p.add_(e_w)
                for p in params:
                    p.grad.zero_()
            with torch.enable_grad():
                closure()
            with torch.no_grad():
                gs = [p.grad.clone() for p in params]
                for p, s in zip(params, saved):
                    p.data = s
            base.step()
            for p in params:  # torch 1.x zero_grad: zeros, not None
                p.grad.zero_()
    return [p.detach().clone() for p in params]


def molsam_epoch(optimizer, model, batches, epoch, rho, radius, gamma, step_size):
    """One epoch as molsam's trainer runs it: the epoch's rho and radius, re-anchor, steps."""
    factor = reference_decay(epoch, gamma, step_size)
    set_rho(optimizer, rho * factor)
    set_group_value(optimizer, "radius", radius * factor)
    optimizer.reanchor()
    for batch in batches:
        def closure():
            loss = _loss(model, batch)
            loss.backward(loss.detach())
            return loss
        optimizer.step(closure)


def molsam_graphsam(model, batches, epochs, rho, radius, alpha, gamma, step_size, lr):
    optimizer = build_optimizer("graphsam_reference", model.parameters(), lr=lr, rho=rho,
                                radius=radius, beta=alpha, loss_weighted=True)
    for epoch in range(epochs):
        molsam_epoch(optimizer, model, batches, epoch, rho, radius, gamma, step_size)
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("rho,radius", [(0.05, 0.05), (0.5, 0.002)])
def test_reference_variant_equals_transcription_of_the_reference_step(rho, radius):
    settings = dict(epochs=3, rho=rho, radius=radius, alpha=0.99, gamma=0.5, step_size=1, lr=1e-2)
    model, batches = _model_and_batches()
    theirs = reference_graphsam(model, batches, **settings)
    model, batches = _model_and_batches()
    ours = molsam_graphsam(model, batches, **settings)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    model, _ = _model_and_batches()  # and the weights really moved
    assert any(not torch.equal(a, p) for a, p in zip(ours, model.parameters()))


def test_reference_variant_state_dict_resumes_exactly():
    settings = dict(rho=0.05, radius=0.05, alpha=0.99, gamma=0.5, step_size=1, lr=1e-2)
    model, batches = _model_and_batches()
    full = molsam_graphsam(model, batches, epochs=2, **settings)
    model, batches = _model_and_batches()
    optimizer = build_optimizer("graphsam_reference", model.parameters(), lr=1e-2, rho=0.05,
                                radius=0.05, beta=0.99, loss_weighted=True)
    molsam_epoch(optimizer, model, batches, 0, 0.05, 0.05, 0.5, 1)
    state = optimizer.state_dict()
    again = build_optimizer("graphsam_reference", model.parameters(), lr=1e-2, rho=0.05,
                            radius=0.05, beta=0.99, loss_weighted=True)
    again.load_state_dict(state)
    molsam_epoch(again, model, batches, 1, 0.05, 0.05, 0.5, 1)
    for a, b in zip(model.parameters(), full):
        torch.testing.assert_close(a.detach(), b, rtol=0, atol=0)


def test_reference_decay_compounds_like_the_reference():
    rho, values = 1.0, []
    for epoch in range(6):
        if epoch % 2 == 0:
            rho = rho * pow(0.5, epoch / 2)
        values.append(rho)
    assert [reference_decay(e, 0.5, 2) for e in range(6)] == pytest.approx(values)
    assert reference_decay(4, 0.5, 1) == pytest.approx(0.5 ** 10)


def test_transformer_schedule_equals_scheduled_optim():
    """utils.py ScheduledOptim: n_steps += 1 before each step, lr = factor * d^-0.5 *
    min(n^-0.5, n * warmup^-1.5)."""
    factor, d_model, steps_per_epoch, warmup_epochs = 0.2, 256, 51, 30
    warmup = steps_per_epoch * warmup_epochs
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=0.0)
    scheduler = TransformerLR(optimizer, factor=factor, d_model=d_model,
                              warmup_epochs=warmup_epochs, steps_per_epoch=steps_per_epoch)
    for n_steps in range(1, 3 * warmup):
        expected = factor * d_model ** -0.5 * min(n_steps ** -0.5, n_steps * warmup ** -1.5)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-12)
        optimizer.step()
        scheduler.step()
    peak = transformer_lr(warmup - 1, factor=factor, d_model=d_model, warmup_steps=warmup)
    assert peak == pytest.approx(0.2 / 16 / math.sqrt(warmup))  # ~3.1e-4 on BBBP, epoch 30
