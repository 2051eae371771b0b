"""LR schedules: values at given steps, and the same values through torch's LambdaLR."""

from __future__ import annotations

import math

import pytest
import torch

from dhian.errors import ConfigError
from dhian.train.schedules import SCHEDULES, build_scheduler, lr_factor


def test_inverse_sqrt_and_noam() -> None:
    w = 4
    for name in ("inverse_sqrt", "noam"):
        assert lr_factor(name, 1, w) == pytest.approx(0.25)
        assert lr_factor(name, 2, w) == pytest.approx(0.5)
        assert lr_factor(name, 4, w) == pytest.approx(1.0)  # peak at the end of warmup
        assert lr_factor(name, 16, w) == pytest.approx(0.5)  # sqrt(4/16)
        assert lr_factor(name, 100, w) == pytest.approx(math.sqrt(4 / 100))
        assert lr_factor(name, 100, w, min_lr_ratio=0.3) == pytest.approx(0.3)
    assert lr_factor("inverse_sqrt", 9, 0) == pytest.approx(1 / 3)


def test_linear() -> None:
    # warmup 2, total 10: 0.5, 1, then linear to 0 at step 10
    assert lr_factor("linear", 1, 2, 10) == pytest.approx(0.5)
    assert lr_factor("linear", 2, 2, 10) == pytest.approx(1.0)
    assert lr_factor("linear", 6, 2, 10) == pytest.approx(0.5)
    assert lr_factor("linear", 10, 2, 10) == pytest.approx(0.0)
    assert lr_factor("linear", 10, 2, 10, min_lr_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor("linear", 50, 2, 10) == pytest.approx(0.0)  # past the end stays at the floor


def test_cosine() -> None:
    assert lr_factor("cosine", 1, 4, 20) == pytest.approx(0.25)
    assert lr_factor("cosine", 4, 4, 20) == pytest.approx(1.0)
    assert lr_factor("cosine", 12, 4, 20) == pytest.approx(0.5)  # half-way: cos(pi/2)
    assert lr_factor("cosine", 20, 4, 20) == pytest.approx(0.0)
    assert lr_factor("cosine", 12, 4, 20, min_lr_ratio=0.2) == pytest.approx(0.2 + 0.8 * 0.5)
    assert lr_factor("cosine", 8, 0, 16) == pytest.approx(0.5 * (1 + math.cos(math.pi / 2)))


def test_constant() -> None:
    assert lr_factor("constant", 1, 0) == 1.0
    assert lr_factor("constant", 1000, 0) == 1.0
    assert lr_factor("constant", 1, 2) == pytest.approx(0.5)
    assert lr_factor("constant", 2, 2) == 1.0


@pytest.mark.parametrize("name", SCHEDULES)
def test_lambda_lr_follows_factor(name: str) -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = build_scheduler(opt, name, warmup_steps=3, total_steps=12, min_lr_ratio=0.05)
    for step in range(1, 13):
        assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * lr_factor(name, step, 3, 12, 0.05))
        opt.step()
        sched.step()


def test_errors() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    with pytest.raises(ConfigError, match="did you mean 'cosine'"):
        build_scheduler(opt, "cosin", 0, 10)
    with pytest.raises(ConfigError, match="max_steps"):
        build_scheduler(opt, "linear", 0, 0)
