"""``torch.compile`` (CPU Inductor) of a LLaMA model's static-shape decoding step — an opt-in
trial (issue #17); the measured break-even is in docs/speed.md.

Owns :func:`compiled_decode_step`: the model's ``decode_step`` compiled once per model
(cached on it) with ``dynamic=False``. The step has static shapes for a given batch size and
cache length (the cache slot and positions are tensors), so one generation compiles once;
another batch size or cache length compiles again (Inductor caches the kernels on disk, so a
later process pays less). Pass it to :func:`dhian.decoding.llm_generate.llm_generate` as
``step_fn``.
Imports: torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = ["compiled_decode_step"]


def compiled_decode_step(model: Any) -> Callable[..., Tensor]:
    """``torch.compile(model.decode_step, dynamic=False)``, made once and kept on ``model``."""
    step = getattr(model, "_compiled_decode_step", None)
    if step is None:
        step = torch.compile(model.decode_step, dynamic=False)
        model._compiled_decode_step = step
    return step
