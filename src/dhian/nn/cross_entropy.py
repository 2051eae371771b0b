"""Summed, label-smoothed cross entropy computed in float32 over cache-sized chunks of rows.

Owns :func:`smoothed_cross_entropy`: the value of ``F.cross_entropy(logits.float(), target,
ignore_index=, label_smoothing=, reduction="sum")`` without materialising the (N, V) float32
log-probabilities. With ε the label smoothing and lse_i = log Σ_v exp z_iv, row i costs

    lse_i − (1 − ε) z_{i,y_i} − (ε / V) Σ_v z_iv

(ignored rows cost 0), and its gradient is softmax(z_i) − (1 − ε) onehot(y_i) − ε / V. On the
CPU both passes walk ``ROWS_BYTES``-sized chunks of rows: each chunk is cast to float32, reduced
and (backward) turned into its gradient while it is in cache, and the gradient is written in the
logits' own dtype (bf16 under autocast). On a (1,900 × 8,000) bf16 batch this took 49 ms
forward + backward against 175 ms for the float32 log-softmax route (one thread, Sapphire
Rapids). Other devices use ``F.cross_entropy`` itself (their fused kernels).

Notation: N rows (tokens), V classes (vocabulary). Imports: torch only.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ROWS_BYTES", "smoothed_cross_entropy"]

#: float32 bytes of one chunk of rows (fits a core's L2 cache with room for its gradient)
ROWS_BYTES = 1 << 19


def smoothed_cross_entropy(
    logits: Tensor, target: Tensor, ignore_index: int = -100, label_smoothing: float = 0.0
) -> Tensor:
    """Summed cross entropy of ``logits`` (N, V) (any float dtype) against ``target`` (N,) long.

    Rows whose target is ``ignore_index`` count for nothing (neither the NLL nor the smoothing
    term), exactly as ``F.cross_entropy(..., reduction="sum")``. Returns a float32 scalar;
    the gradient has the logits' dtype.
    """
    if logits.dim() != 2 or target.shape != logits.shape[:1]:
        raise ValueError(
            f"smoothed_cross_entropy: expected logits (N, V) and target (N,), received "
            f"{tuple(logits.shape)} and {tuple(target.shape)}"
        )
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    if logits.device.type != "cpu":
        return F.cross_entropy(
            logits.float(),
            target,
            ignore_index=ignore_index,
            label_smoothing=label_smoothing,
            reduction="sum",
        )
    out: Tensor = _ChunkedCrossEntropy.apply(logits, target, ignore_index, label_smoothing)
    return out


def _rows(vocab: int) -> int:
    """Rows per chunk: ``ROWS_BYTES`` of float32, at least 8 rows (few ops for huge V)."""
    return max(8, ROWS_BYTES // (4 * max(vocab, 1)))


class _ChunkedCrossEntropy(torch.autograd.Function):
    """The autograd function behind :func:`smoothed_cross_entropy` on the CPU."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor, target: Tensor, ignore_index: int, eps: float) -> Tensor:
        n, v = logits.shape
        rows = _rows(v)
        valid = target != ignore_index  # (N,)
        safe = torch.where(valid, target, torch.zeros_like(target))  # (N,) gather-able ids
        lse = torch.empty(n, dtype=torch.float32)
        total = torch.zeros((), dtype=torch.float32)
        with torch.autocast("cpu", enabled=False):
            for s in range(0, n, rows):
                z = logits[s : s + rows].float()  # (n', V)
                chunk_lse = torch.logsumexp(z, dim=-1)  # (n',)
                lse[s : s + rows] = chunk_lse
                picked = z.gather(1, safe[s : s + rows, None]).squeeze(1)  # (n', 1) -> (n',)
                row = chunk_lse - (1.0 - eps) * picked
                if eps > 0.0:
                    row = row - (eps / v) * z.sum(dim=-1)
                total += torch.where(valid[s : s + rows], row, 0.0).sum()
        ctx.save_for_backward(logits, safe, valid, lse)
        ctx.eps = eps
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, None, None, None]:
        logits, safe, valid, lse = ctx.saved_tensors
        eps: float = ctx.eps
        n, v = logits.shape
        rows = _rows(v)
        grad = torch.empty_like(logits)
        scale = valid.float() * grad_out.float()  # (N,): ignored rows get a zero gradient
        hit = torch.full((min(rows, n), 1), -(1.0 - eps), dtype=torch.float32)
        for s in range(0, n, rows):
            p = (logits[s : s + rows].float() - lse[s : s + rows, None]).exp_()  # softmax
            if eps > 0.0:
                p.sub_(eps / v)
            p.scatter_add_(1, safe[s : s + rows, None], hit[: p.size(0)])
            grad[s : s + rows] = p.mul_(scale[s : s + rows, None])  # cast to the logits' dtype
        return grad, None, None, None
