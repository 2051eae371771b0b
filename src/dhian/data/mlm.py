"""Masked-language-model corruption: choose 15% of tokens, then 80% [MASK] / 10% random / 10% keep.

Owns :func:`mask_tokens` only. Notation: B batch, T length, V vocab.
Imports: torch.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100


def mask_tokens(
    ids: torch.Tensor,
    special_mask: torch.Tensor,
    vocab_size: int,
    mask_id: int,
    prob: float = 0.15,
    generator: torch.Generator | None = None,
    random_low: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking of ``ids`` (B, T) long.

    ``special_mask`` (B, T) bool marks positions never chosen (specials, padding). Each other
    position is chosen with probability ``prob``; a chosen position becomes ``mask_id`` (80%),
    a uniformly random id in ``[random_low, vocab_size)`` (10%) or stays (10%).
    Returns ``(inputs (B, T), labels (B, T))`` where ``labels`` is the original id at chosen
    positions and ``-100`` everywhere else. ``ids`` is not modified.
    """
    if ids.shape != special_mask.shape:
        raise ValueError(
            f"ids {tuple(ids.shape)} and special_mask {tuple(special_mask.shape)} differ"
        )
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob must be in [0, 1], got {prob}")
    device = ids.device
    shape = ids.shape

    def uniform() -> torch.Tensor:
        return torch.rand(shape, generator=generator, device=device)

    chosen = (uniform() < prob) & ~special_mask.bool()
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
    action = uniform()
    to_mask = chosen & (action < 0.8)
    to_random = chosen & (action >= 0.8) & (action < 0.9)
    random_ids = torch.randint(random_low, vocab_size, shape, generator=generator, device=device)
    inputs = ids.clone()
    inputs[to_mask] = mask_id
    inputs[to_random] = random_ids[to_random]
    return inputs, labels
