"""The repetition guard (``no_repeat_ngram``): :func:`ban_repeated_ngrams` on hand-made
histories, and greedy / beam search on a model that loops, with and without the guard."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from dhian.decoding import beam_search, greedy_decode
from dhian.decoding.base import ban_repeated_ngrams


def banned(history: list[list[int]], n: int, vocab: int = 10) -> list[list[int]]:
    lp = torch.zeros(len(history), vocab)
    ban_repeated_ngrams(lp, torch.tensor(history, dtype=torch.long).view(len(history), -1), n)
    return [[v for v in range(vocab) if math.isinf(float(row[v]))] for row in lp]


def test_bans_exactly_the_completions_of_seen_ngrams() -> None:
    assert banned([[5, 6, 7, 5, 6]], 3) == [[7]]  # "5 6" was followed by 7
    assert banned([[5, 6, 7, 5, 6]], 2) == [[7]]  # "6" was followed by 7
    assert banned([[5, 6, 5, 8, 5]], 2) == [[6, 8]]
    assert banned([[5, 6, 7, 5, 6]], 4) == [[]]  # "7 5 6" never seen before
    assert banned([[5, 6, 7]], 1) == [[5, 6, 7]]
    assert banned([[5, 6], [6, 6]], 2) == [[], [6]]  # per row
    assert banned([[5, 6]], 3) == [[]] and banned([[5, 6]], 0) == [[]]


class LoopModel:
    """Every row prefers the token after ``prev`` in the cycle 3 → 4 → 5 → 3 …, then every other
    token, then EOS: left alone it loops until the length limit."""

    pad_id, bos_id, eos_id = 0, 1, 2

    def start(self, src: Tensor, src_lengths: Tensor) -> Tensor:
        return torch.zeros(src.size(0))

    def step(self, prev: Tensor, state: Tensor, need_weights: bool = False) -> tuple:
        logits = torch.zeros(prev.numel(), 8)
        nxt = torch.where(prev < 3, torch.full_like(prev, 3), (prev - 3 + 1) % 3 + 3)
        logits[torch.arange(prev.numel()), nxt] = 6.0
        logits[:, self.eos_id] = -2.0
        return logits, state, None

    def reorder(self, state: Tensor, index: Tensor) -> Tensor:
        return state[index]


def ngrams(tokens: list[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


@pytest.mark.parametrize("beam", [1, 3])
def test_a_looping_model_stops_repeating(beam: int) -> None:
    src, lens = torch.full((2, 4), 7), torch.tensor([4, 2])

    def run(n: int) -> list[list[int]]:
        if beam == 1:
            return [h.tokens for h in greedy_decode(LoopModel(), src, lens, 12, no_repeat_ngram=n)]
        hyps = beam_search(LoopModel(), src, lens, beam, 1.0, 12, no_repeat_ngram=n)
        return [h[0].tokens for h in hyps]

    assert run(0)[0] == [3, 4, 5] * 4  # loops up to the limit
    for n in (2, 3):
        for out in run(n):
            grams = ngrams(out, n)
            assert len(grams) == len(set(grams)) and len(out) >= n
