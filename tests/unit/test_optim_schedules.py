"""molsam.optim.schedules: rho_at never compounds; Noam end points; NoamLR drives the wrappers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from molsam.optim import GraphSAM, NoamLR, build_optimizer, noam_lr, rho_at

NOAM = dict(warmup_steps=20, total_steps=100, init_lr=1e-4, max_lr=1e-3, final_lr=1e-5)


def test_rho_at_is_a_pure_power_of_the_epoch() -> None:
    assert [rho_at(e, 1.0, 0.5, 1) for e in range(5)] == [1.0, 0.5, 0.25, 0.125, 0.0625]
    # compounding (the reference code) would give 1 * 0.5**(k(k+1)/2): 0.125 at epoch 2
    assert rho_at(2, 1.0, 0.5, 1) == 0.25
    assert [rho_at(e, 0.05, 0.5, 2) for e in range(5)] == [0.05, 0.05, 0.025, 0.025, 0.0125]
    # calling again (or out of order) gives the same value: no hidden state
    assert rho_at(3, 0.05, 0.5, 2) == rho_at(3, 0.05, 0.5, 2) == 0.025


@pytest.mark.parametrize("bad", [dict(every=0), dict(epoch=-1), dict(rho0=-0.1)])
def test_rho_at_rejects_bad_arguments(bad: dict) -> None:
    args = dict(epoch=1, rho0=0.05, gamma=0.5, every=1) | bad
    value = next(iter(bad.values()))
    with pytest.raises(ValueError, match=str(value)):
        rho_at(**args)


def test_noam_end_points_and_shape() -> None:
    assert noam_lr(0, **NOAM) == pytest.approx(1e-4, rel=1e-12)
    assert noam_lr(10, **NOAM) == pytest.approx(5.5e-4, rel=1e-12)  # linear warm-up
    assert noam_lr(20, **NOAM) == pytest.approx(1e-3, rel=1e-12)
    assert noam_lr(100, **NOAM) == pytest.approx(1e-5, rel=1e-9)
    assert noam_lr(500, **NOAM) == 1e-5
    decay = [noam_lr(s, **NOAM) for s in range(20, 101)]
    assert all(a > b for a, b in zip(decay, decay[1:]))
    ratios = [b / a for a, b in zip(decay, decay[1:])]  # exponential: constant ratio
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-9)


def test_noam_without_warmup_starts_at_max() -> None:
    args = dict(NOAM, warmup_steps=0)
    assert noam_lr(0, **args) == pytest.approx(1e-3)
    assert noam_lr(100, **args) == pytest.approx(1e-5)


@pytest.mark.parametrize("bad", [dict(final_lr=0.0), dict(total_steps=10), dict(warmup_steps=-1)])
def test_noam_rejects_bad_arguments(bad: dict) -> None:
    with pytest.raises(ValueError, match=str(next(iter(bad.values())))):
        noam_lr(0, **(NOAM | bad))


def test_noam_scheduler_drives_a_wrapper_and_its_base_optimizer() -> None:
    model = nn.Linear(3, 1)
    opt = GraphSAM(model.parameters(), lr=123.0)
    sched = NoamLR(opt, warmup_epochs=2, total_epochs=10, steps_per_epoch=10,
                   init_lr=1e-4, max_lr=1e-3, final_lr=1e-5)
    x, y = torch.randn(8, 3), torch.randn(8, 1)

    def closure():
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        return loss

    seen = []
    for _ in range(100):
        seen.append(opt.base_optimizer.param_groups[0]["lr"])  # the lr Adam steps with
        opt.step(closure)
        sched.step()
    seen.append(opt.base_optimizer.param_groups[0]["lr"])
    assert seen[0] == pytest.approx(1e-4)
    assert seen[20] == pytest.approx(1e-3)
    assert seen[100] == pytest.approx(1e-5)
    assert seen == pytest.approx([noam_lr(s, **NOAM) for s in range(101)], rel=1e-9)
    # the scheduler round-trips too
    sched2 = NoamLR(opt, 2, 10, 10, 1e-4, 1e-3, 1e-5)
    sched2.load_state_dict(sched.state_dict())
    assert sched2.last_epoch == 100


def test_noam_scheduler_on_plain_adam() -> None:
    opt = build_optimizer("adam", nn.Linear(3, 1).parameters())
    NoamLR(opt, 1, 3, 4, init_lr=2e-4, max_lr=2e-3, final_lr=2e-5)
    assert opt.param_groups[0]["lr"] == pytest.approx(2e-4)
