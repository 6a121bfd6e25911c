"""LR schedules: values at chosen iterations, and plateau driven by the validation reward."""

import math

import pytest
import torch

from rlhand.config.schema import SchedulerConfig, SchedulerKind
from rlhand.run.schedules import LRSchedule

# These tests step schedules on bare optimizers that never step; torch warns about the order.
pytestmark = pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before `optimizer.step\\(\\)`")

LR = 1e-3


def schedule(kind, **kw):
    params = [torch.nn.Parameter(torch.zeros(2))]
    optimizers = [torch.optim.AdamW(params, lr=LR), torch.optim.AdamW(params, lr=2 * LR)]
    return LRSchedule(SchedulerConfig(name=kind, kind=SchedulerKind(kind), **kw), optimizers, max_steps=100)


def lrs_at(sched, steps):
    """The LR used by iteration i (1-based) for each i in steps."""
    out, seen = {}, 1
    while seen <= max(steps):
        if seen in steps:
            out[seen] = sched.lr
        sched.step()
        seen += 1
    return out


def test_constant_with_warmup():
    lrs = lrs_at(schedule("constant", warmup_steps=4), {1, 2, 4, 5, 50})
    assert lrs == pytest.approx({1: 0.0, 2: LR / 4, 4: 3 * LR / 4, 5: LR, 50: LR})


def test_cosine_with_warmup_and_floor():
    lrs = lrs_at(schedule("cosine", warmup_steps=10, min_lr_ratio=0.1), {1, 6, 11, 56, 100})
    # After warmup: min + (1 - min) * (1 + cos(pi * progress)) / 2 with progress = (i-1-10)/90.
    expected = {1: 0.0, 6: LR / 2, 11: LR, 56: LR * (0.1 + 0.9 * 0.5), 100: LR * (0.1 + 0.9 * (1 + math.cos(math.pi * 89 / 90)) / 2)}
    assert lrs == pytest.approx(expected)


def test_both_optimizers_follow_the_same_shape():
    sched = schedule("cosine", warmup_steps=0, min_lr_ratio=0.0)
    for _ in range(30):
        sched.step()
    policy, critic = (opt.param_groups[0]["lr"] for opt in sched.optimizers)
    assert critic == pytest.approx(2 * policy)


def test_plateau_halves_after_patience_flat_validations_only():
    sched = schedule("plateau", warmup_steps=2, factor=0.5, patience=2, threshold=0.01, min_lr_ratio=0.1)
    sched.step(), sched.step()
    assert sched.lr == pytest.approx(LR)  # warmup done
    for value in (0.1, 0.2, 0.3, 0.4):  # rising: never reduced
        sched.on_validation(value)
        sched.step()
    assert sched.lr == pytest.approx(LR)
    for value in (0.4, 0.405, 0.4):  # flat: third bad evaluation exceeds patience=2
        sched.on_validation(value)
        sched.step()
    assert sched.lr == pytest.approx(LR / 2)
    for _ in range(20):  # keeps falling to the floor, never below
        sched.on_validation(0.0)
    assert sched.lr == pytest.approx(LR * 0.1)


def test_plateau_ignores_validations_during_warmup():
    sched = schedule("plateau", warmup_steps=10, patience=0)
    sched.step()
    for _ in range(5):
        sched.on_validation(0.0)
    sched.step()
    assert sched.lr == pytest.approx(2 * LR / 10)


def test_state_round_trip_continues_identically():
    a = schedule("plateau", warmup_steps=2, patience=1)
    for v in (0.0, 0.1, 0.1, 0.1):
        a.step()
        a.on_validation(v)
    b = schedule("plateau", warmup_steps=2, patience=1)
    for opt_b, opt_a in zip(b.optimizers, a.optimizers):
        opt_b.load_state_dict(opt_a.state_dict())
    b.load_state_dict(a.state_dict())
    for v in (0.1, 0.1, 0.5, 0.5):
        a.on_validation(v), b.on_validation(v)
        a.step(), b.step()
        assert a.lr == b.lr
    assert a.lr < LR
