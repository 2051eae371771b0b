"""Hand-made step models for the decoding tests: their log-probabilities are known in closed form,
so greedy/beam results can be checked against independent per-sentence references."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from helpers.threads import one_thread_per_module  # noqa: F401 - autouse fixture

PAD, BOS, EOS = 0, 1, 2


class TableModel:
    """Step model whose logits (N, V) are a fixed random table indexed by (sentence key, step,
    previous token); the key depends on the source's first token and its length only, so
    padding never matters. Attention (N, Ts) is one-hot at ``(t + prev) % src_len`` (it depends on
    the path, so a wrong beam back-pointer shows). ``calls`` records N at every step."""

    pad_id, bos_id, eos_id = PAD, BOS, EOS

    def __init__(
        self, vocab: int = 7, keys: int = 5, steps: int = 16, seed: int = 0, eos_bias: float = 0.0
    ) -> None:
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(keys, steps, vocab, vocab, generator=g) * 2.0  # [key, t, prev, v]
        self.table[..., EOS] += eos_bias
        self.keys, self.steps, self.vocab = keys, steps, vocab
        self.calls: list[int] = []

    def key_of(self, src: Tensor, src_lengths: Tensor) -> Tensor:
        """(B, Ts), (B,) → sentence keys (B,)."""
        return (src[:, 0] + 3 * src_lengths) % self.keys

    def start(self, src: Tensor, src_lengths: Tensor) -> dict[str, Tensor]:
        b = src.size(0)
        return {
            "key": self.key_of(src, src_lengths),
            "t": torch.zeros(b, dtype=torch.long),
            "len": src_lengths.clone(),
            "ts": torch.full((b,), src.size(1)),
        }

    def logits_at(self, key: int, t: int, prev: int) -> Tensor:
        """Logits (V,) of one row: the reference the tests use."""
        return self.table[key, min(t, self.steps - 1), prev]

    def step(
        self, prev: Tensor, state: dict[str, Tensor], need_weights: bool = False
    ) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
        self.calls.append(prev.numel())
        t = state["t"].clamp(max=self.steps - 1)
        logits = self.table[state["key"], t, prev]  # (N, V)
        attn = None
        if need_weights:
            ts = int(state["ts"][0])
            pos = (state["t"] + prev) % state["len"]  # (N,)
            attn = torch.nn.functional.one_hot(pos, ts).float()  # (N, Ts)
        return logits, {**state, "t": state["t"] + 1}, attn

    def reorder(self, state: dict[str, Tensor], index: Tensor) -> dict[str, Tensor]:
        return {k: v[index] for k, v in state.items()}


class ScheduleModel:
    """Step model with the same logits for every row, chosen by the step t (clamped): ``rows``
    (T, V). Used to build situations where the length penalty decides."""

    pad_id, bos_id, eos_id = PAD, BOS, EOS

    def __init__(self, rows: Tensor) -> None:
        self.rows = rows

    def start(self, src: Tensor, src_lengths: Tensor) -> Tensor:
        return torch.zeros(src.size(0), dtype=torch.long)

    def step(
        self, prev: Tensor, state: Tensor, need_weights: bool = False
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        logits = self.rows[state.clamp(max=self.rows.size(0) - 1)]  # (N, V)
        return logits, state + 1, None

    def reorder(self, state: Tensor, index: Tensor) -> Tensor:
        return state[index]


def masked_log_probs(logits: Tensor, force_eos: bool) -> Tensor:
    """Reference of the decoders' per-row scoring: log-softmax, no PAD/BOS, EOS only at the
    limit."""
    lp = torch.log_softmax(logits.float(), dim=-1).clone()
    lp[PAD] = lp[BOS] = float("-inf")
    if force_eos:
        eos = lp[EOS].clone()
        lp[:] = float("-inf")
        lp[EOS] = eos
    return lp


def random_source(batch: int, max_len: int, seed: int, vocab: int = 7) -> tuple[Tensor, Tensor]:
    """Padded source (B, Ts) of ids in [3, vocab) with lengths (B,) in [1, max_len]."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, max_len + 1, (batch,), generator=g)
    lengths[0] = max_len
    src = torch.randint(3, vocab, (batch, max_len), generator=g)
    for i, n in enumerate(lengths.tolist()):
        src[i, n:] = PAD
    return src, lengths


@pytest.fixture
def helpers() -> Any:
    """The helpers above, for the test modules (conftest is not importable by name)."""

    class H:
        TableModel = TableModel
        ScheduleModel = ScheduleModel
        masked_log_probs = staticmethod(masked_log_probs)
        random_source = staticmethod(random_source)

    return H
