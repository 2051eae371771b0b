"""MLM masking statistics: ≈15% chosen, 80/10/10, -100 exactly where not chosen, specials safe."""

from __future__ import annotations

import pytest
import torch

from dhian.data.mlm import mask_tokens

V, MASK = 1000, 4


def _sample(n_rows: int = 400, width: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(7, V, (n_rows, width), generator=g)
    special = torch.zeros_like(ids, dtype=torch.bool)
    ids[:, 0], ids[:, -1] = 5, 6  # [CLS] ... [SEP]
    special[:, 0] = special[:, -1] = True
    special[:, -20:] = True  # padding tail
    ids[:, -20:-1] = 0
    return ids, special


def test_statistics_on_a_large_sample() -> None:
    ids, special = _sample()
    inputs, labels = mask_tokens(
        ids, special, V, MASK, 0.15, torch.Generator().manual_seed(1), random_low=7
    )
    chosen = labels != -100
    eligible = int((~special).sum())
    rate = int(chosen.sum()) / eligible
    assert abs(rate - 0.15) < 0.005
    n = int(chosen.sum())
    masked = (inputs == MASK) & chosen
    kept = (inputs == ids) & chosen
    replaced = chosen & ~masked & ~kept
    assert abs(int(masked.sum()) / n - 0.8) < 0.01
    # a random replacement can hit the original id (p = 1/993), counted as kept
    assert abs(int(kept.sum()) / n - 0.1) < 0.01
    assert abs(int(replaced.sum()) / n - 0.1) < 0.01
    assert int(inputs[replaced].min()) >= 7  # random ids avoid the specials when asked


def test_labels_exact_and_specials_untouched() -> None:
    ids, special = _sample(50, 64)
    inputs, labels = mask_tokens(ids, special, V, MASK, 0.3, torch.Generator().manual_seed(2))
    chosen = labels != -100
    assert torch.equal(labels[chosen], ids[chosen])  # original ids where chosen
    assert torch.equal(inputs[~chosen], ids[~chosen])  # untouched where not chosen
    assert not (chosen & special).any()
    assert torch.equal(inputs[special], ids[special])
    assert torch.equal(ids, _sample(50, 64)[0])  # input not modified in place


def test_generator_makes_it_reproducible() -> None:
    ids, special = _sample(20, 32)
    a = mask_tokens(ids, special, V, MASK, generator=torch.Generator().manual_seed(3))
    b = mask_tokens(ids, special, V, MASK, generator=torch.Generator().manual_seed(3))
    c = mask_tokens(ids, special, V, MASK, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_bad_arguments() -> None:
    ids, special = _sample(2, 8)
    with pytest.raises(ValueError, match="differ"):
        mask_tokens(ids, special[:, :4], V, MASK)
    with pytest.raises(ValueError, match="prob must be in"):
        mask_tokens(ids, special, V, MASK, prob=1.5)
