"""dhian.nn.masks: padding, causal (square and offset), combine; checked against loops."""

from __future__ import annotations

import pytest
import torch

from dhian.nn.masks import as_key_mask, causal_mask, combine, padding_mask


def test_padding_mask_from_lengths_matches_loop() -> None:
    lengths = torch.tensor([3, 1, 4])
    m = padding_mask(lengths)
    assert m.shape == (3, 1, 1, 4) and m.dtype == torch.bool
    for b, n in enumerate(lengths.tolist()):
        assert m[b, 0, 0].tolist() == [j < n for j in range(4)]


def test_padding_mask_max_len_and_ids() -> None:
    assert padding_mask(torch.tensor([2, 0]), max_len=5).shape == (2, 1, 1, 5)
    ids = torch.tensor([[5, 6, 0, 0], [7, 0, 0, 0]])
    m = padding_mask(ids, pad_id=0)
    assert m[:, 0, 0].tolist() == [[True, True, False, False], [True, False, False, False]]
    with pytest.raises(ValueError, match="pad_id"):
        padding_mask(ids)
    with pytest.raises(ValueError, match="exceeds max_len"):
        padding_mask(torch.tensor([6]), max_len=5)
    with pytest.raises(ValueError, match=r"received shape \(1, 2, 3\)"):
        padding_mask(torch.zeros(1, 2, 3))


def test_as_key_mask() -> None:
    src = torch.tensor([[True, False]])
    assert as_key_mask(src).shape == (1, 1, 1, 2)
    with pytest.raises(ValueError, match="expected a \\(B, Tk\\) mask"):
        as_key_mask(torch.ones(1, 1, 2, dtype=torch.bool))


@pytest.mark.parametrize(
    ("tq", "kwargs", "tk", "offset"),
    [
        (4, {}, 4, 0),
        (2, {"tk": 5}, 5, 3),
        (1, {"offset": 6}, 7, 6),
        (3, {"tk": 7, "offset": 2}, 7, 2),
    ],
)
def test_causal_mask_matches_definition(
    tq: int, kwargs: dict[str, int], tk: int, offset: int
) -> None:
    m = causal_mask(tq, tk=kwargs.get("tk"), offset=kwargs.get("offset"))
    assert m.shape == (1, 1, tq, tk)
    for i in range(tq):
        for j in range(tk):
            assert bool(m[0, 0, i, j]) == (j <= offset + i)


def test_square_causal_is_lower_triangular() -> None:
    assert torch.equal(causal_mask(5)[0, 0], torch.ones(5, 5, dtype=torch.bool).tril())


def test_combine_is_and_with_broadcast_and_none() -> None:
    pad = padding_mask(torch.tensor([2, 3]), max_len=3)  # (2, 1, 1, 3)
    causal = causal_mask(3)  # (1, 1, 3, 3)
    both = combine(None, pad, causal, None)
    assert both is not None and both.shape == (2, 1, 3, 3)
    assert torch.equal(both, pad & causal)
    assert combine(None, None) is None
    assert combine(pad) is pad
    with pytest.raises(ValueError, match=r"torch\.bool"):
        combine(pad, torch.ones(1, 1, 1, 3))
