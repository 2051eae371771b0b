"""The label-smoothed token loss against a hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from dhian.train.tasks import token_loss


def hand_loss(logits: list[list[float]], targets: list[int], pad: int, eps: float) -> float:
    total = 0.0
    for row, y in zip(logits, targets, strict=True):
        if y == pad:
            continue
        z = math.log(sum(math.exp(v) for v in row))
        logp = [v - z for v in row]
        v = len(row)
        # smoothed target: (1 - eps) on y + eps / V on every class
        total += -sum(((1 - eps) * (k == y) + eps / v) * lp for k, lp in enumerate(logp))
    return total


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_label_smoothing_matches_hand(eps: float) -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, generator=g)  # (B, T, V)
    target = torch.tensor([[1, 4, 0], [2, 0, 0]])  # pad = 0
    terms = token_loss(logits, target, ignore_index=0, label_smoothing=eps)
    want = hand_loss(logits.reshape(-1, 5).tolist(), target.reshape(-1).tolist(), 0, eps)
    assert terms.count == 3
    assert float(terms.loss) == pytest.approx(want, rel=1e-5)


def test_pad_positions_do_not_count() -> None:
    logits = torch.randn(1, 2, 4)
    a = token_loss(logits, torch.tensor([[2, 0]]), 0, 0.1)
    logits2 = logits.clone()
    logits2[0, 1] = torch.tensor([100.0, -100.0, 3.0, 7.0])  # junk at the pad position
    b = token_loss(logits2, torch.tensor([[2, 0]]), 0, 0.1)
    assert float(a.loss) == pytest.approx(float(b.loss))
