""":func:`dhian.decoding.base.row_topk` returns what ``torch.topk`` returns."""

from __future__ import annotations

import math

import pytest
import torch

from dhian.decoding.base import row_topk


@pytest.mark.parametrize("v", [58101, 4096, 1000, 300, 17])
@pytest.mark.parametrize("k", [1, 2, 8])
def test_row_topk_equals_torch_topk(v: int, k: int) -> None:
    g = torch.Generator().manual_seed(v + k)
    scores = torch.log_softmax(torch.randn(6, v, generator=g) * 3, dim=-1)  # (N, V)
    scores[:, 3] = -math.inf  # masked specials
    scores[1] = -math.inf  # a row forced to one token (force_eos)
    scores[1, v // 2] = -0.5
    scores[2, -1] = 10.0  # the best token in the partial last chunk
    k = min(k, v)
    values, cols = row_topk(scores, k, chunk=64)
    ref_values, ref_cols = scores.topk(k, dim=1)
    torch.testing.assert_close(values, ref_values)
    finite = torch.isfinite(ref_values)  # ties among -inf may come in any order
    assert torch.equal(cols[finite], ref_cols[finite])
    assert torch.equal(scores.gather(1, cols), values)
