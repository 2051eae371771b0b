"""Synthetic, structured attention weights for the viz tests and the viewer's demo screenshot.

Not model output: heads are built from known patterns (previous token, first token, broad,
diagonal, next token, local window, separator) plus noise, then softmax-normalised, so tests
know what each head should be labelled and the demo looks like real attention. Anything shown
from here must say "synthetic demo".
"""

from __future__ import annotations

import numpy as np

PATTERNS = ("previous", "first", "broad", "diagonal", "next", "local", "separator", "random")

# Bahdanau et al. (2015), Fig. 3 (a): the sentence, not their weights.
SRC = [
    "The",
    "agreement",
    "on",
    "the",
    "European",
    "Economic",
    "Area",
    "was",
    "signed",
    "in",
    "August",
    "1992",
    ".",
    "</s>",
]
TGT = [
    "L'",
    "accord",
    "sur",
    "la",
    "zone",
    "économique",
    "européenne",
    "a",
    "été",
    "signé",
    "en",
    "août",
    "1992",
    ".",
    "</s>",
]
ALIGN = [0, 1, 2, 3, 6, 5, 4, 7, 7, 8, 9, 10, 11, 12, 13]  # target i ↔ source ALIGN[i]


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def pattern_logits(pattern: str, t: int, rng: np.random.Generator, sep: int | None) -> np.ndarray:
    """(T, T) logits whose softmax follows ``pattern``."""
    i = np.arange(t)[:, None]
    j = np.arange(t)[None, :]
    noise = rng.normal(0.0, 0.6, (t, t))
    strong = 7.0
    if pattern == "previous":
        return noise + strong * (j == i - 1) + strong * ((i == 0) & (j == 0))
    if pattern == "next":
        return noise + strong * (j == i + 1) + strong * ((i == t - 1) & (j == t - 1))
    if pattern == "first":
        return noise + strong * (j == 0)
    if pattern == "diagonal":
        return noise + strong * (j == i)
    if pattern == "broad":
        return 0.15 * noise
    if pattern == "local":
        return noise - 0.5 * (i - j) ** 2 / 2.0
    if pattern == "separator":
        return noise + strong * (j == (t - 1 if sep is None else sep))
    return 2.5 * rng.normal(0.0, 1.0, (t, t))


def self_attention(
    t: int,
    layers: int,
    heads: int,
    seed: int = 0,
    causal: bool = False,
    sep: int | None = None,
) -> np.ndarray:
    """(L, H, T, T) float32 weights; head h of layer l follows PATTERNS[(l + h) % 8]."""
    rng = np.random.default_rng(seed)
    out = np.empty((layers, heads, t, t), dtype=np.float32)
    future = np.triu(np.ones((t, t), dtype=bool), k=1)
    for layer in range(layers):
        for head in range(heads):
            logits = pattern_logits(PATTERNS[(layer + head) % len(PATTERNS)], t, rng, sep)
            if causal:
                logits = np.where(future, -np.inf, logits)
            out[layer, head] = softmax(logits)
    return out


def cross_attention(layers: int, heads: int, seed: int = 1) -> np.ndarray:
    """(L, H, Tt, Ts) weights peaked on the word alignment ALIGN, sharper in later layers."""
    rng = np.random.default_rng(seed)
    tt, ts = len(TGT), len(SRC)
    j = np.arange(ts)[None, :]
    target = np.array(ALIGN)[:, None]
    out = np.empty((layers, heads, tt, ts), dtype=np.float32)
    for layer in range(layers):
        for head in range(heads):
            sharp = 1.0 + 2.5 * layer / max(layers - 1, 1) + 0.3 * head
            logits = -sharp * (j - target) ** 2 / 2.0 + rng.normal(0.0, 0.5, (tt, ts))
            out[layer, head] = softmax(logits)
    return out
