"""A tiny encoder-decoder Transformer for tests: config, random batches, an uncached reference
step model and 20 toy pairs to overfit (shared by tests/models/test_transformer*.py)."""

from __future__ import annotations

from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from dhian.models.transformer.config import TransformerConfig
from dhian.models.transformer.model import TransformerSeq2Seq, build_transformer

PAD, BOS, EOS = 0, 2, 3
V = 24  # 7 specials + 17 word ids
M = TypeVar("M", bound=nn.Module)


def tiny(**kw: Any) -> TransformerConfig:
    base: dict[str, Any] = {
        "embed_dim": 32,
        "num_heads": 4,
        "ff_dim": 64,
        "enc_layers": 2,
        "dec_layers": 2,
        "dropout": 0.0,
        "max_positions": 64,
    }
    base.update(kw)
    return TransformerConfig(**base)


def randomize(model: M, seed: int = 0) -> M:
    """Non-trivial biases and LayerNorm affines (fresh ones are 0 and 1) so mistakes show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
            if "norm" in name and name.endswith("weight"):
                p.abs_().add_(0.5)
    return model.eval()


def batch(seed: int = 0, lengths: tuple[int, ...] = (7, 3, 5, 1)) -> tuple[Tensor, Tensor]:
    """Padded src (B, Ts) with mixed lengths and the lengths (B,)."""
    g = torch.Generator().manual_seed(seed)
    ts = max(lengths)
    src = torch.full((len(lengths), ts), PAD)
    for i, n in enumerate(lengths):
        src[i, :n] = torch.randint(7, V, (n,), generator=g)
    return src, torch.tensor(lengths)


def stepwise_logits(model: TransformerSeq2Seq, src: Tensor, lens: Tensor, tgt: Tensor) -> Tensor:
    state = model.start(src, lens)
    out = []
    for t in range(tgt.size(1)):
        logits, state, _ = model.step(tgt[:, t], state)
        out.append(logits)
    return torch.stack(out, 1)  # (B, Tt, V)


class Uncached:
    """Reference step model: reruns the full forward over the whole prefix at every step."""

    def __init__(self, model: TransformerSeq2Seq) -> None:
        self.m = model
        self.pad_id, self.bos_id, self.eos_id = model.pad_id, model.bos_id, model.eos_id

    def start(self, src: Tensor, src_lengths: Tensor) -> dict[str, Tensor]:
        return {"src": src, "lens": src_lengths, "prefix": src.new_empty((src.size(0), 0))}

    def step(
        self, prev: Tensor, st: dict[str, Tensor], need_weights: bool = False
    ) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
        prefix = torch.cat([st["prefix"], prev[:, None]], 1)  # (N, t+1)
        out = self.m(st["src"], st["lens"], prefix, need_weights=need_weights)
        attn = None
        if need_weights:
            assert isinstance(out.attention, list)
            attn = out.attention[-1][:, :, -1].mean(1)  # (N, H, Ts) -> (N, Ts)
        return out.logits[:, -1], {**st, "prefix": prefix}, attn

    def reorder(self, st: dict[str, Tensor], index: Tensor) -> dict[str, Tensor]:
        return {k: v.index_select(0, index) for k, v in st.items()}


# 20 toy pairs: the target is the source reversed, one id up (a real mapping to learn).
def toy_pairs() -> list[tuple[list[int], list[int]]]:
    g = torch.Generator().manual_seed(7)
    pairs = []
    for i in range(20):
        n = 2 + i % 6
        s = torch.randint(7, V - 1, (n,), generator=g).tolist()
        pairs.append((s, [x + 1 for x in reversed(s)]))
    return pairs


def collate(pairs: list[tuple[list[int], list[int]]]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    ts = max(len(s) for s, _ in pairs)
    tt = max(len(t) for _, t in pairs) + 1
    src = torch.full((len(pairs), ts), PAD)
    tin = torch.full((len(pairs), tt), PAD)
    tout = torch.full((len(pairs), tt), PAD)
    for i, (s, t) in enumerate(pairs):
        src[i, : len(s)] = torch.tensor(s)
        tin[i, : len(t) + 1] = torch.tensor([BOS, *t])
        tout[i, : len(t) + 1] = torch.tensor([*t, EOS])
    return src, torch.tensor([len(s) for s, _ in pairs]), tin, tout


def train_tiny() -> TransformerSeq2Seq:
    """A tiny model overfitted on the 20 toy pairs (a few seconds on one CPU core)."""
    torch.manual_seed(0)
    model = build_transformer(tiny(), V)
    src, lens, tin, tout = collate(toy_pairs())
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(300):
        logits = model(src, lens, tin).logits
        loss = nn.functional.cross_entropy(
            logits.reshape(-1, V), tout.reshape(-1), ignore_index=PAD
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.03:
            break
    return model.eval()
