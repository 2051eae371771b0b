"""Checkpoint averaging: the mean of the weights of the last few checkpoints of a run.

Owns :class:`Snapshots` (CPU copies of the model's weights taken every ``every`` steps, the last
``keep`` kept, in memory: nothing is written, so a run's checkpoints and resume are unchanged)
and :func:`average_states` (the element-wise mean of state dicts). The trainer
(``train.average_last`` / ``train.average_every``) averages at the end of a run and keeps the
average as ``best`` when it scores at least as well on the dev set (Vaswani et al., 2017,
averaged their last 5 or 20 checkpoints).
Imports: stdlib, torch.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

__all__ = ["Snapshots", "average_states"]


def average_states(states: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """The mean of ``states`` (same keys and shapes), in float32 then cast back; integer
    tensors (counters, ids) come from the last state."""
    if not states:
        raise ValueError("average_states needs at least one state dict")
    out: dict[str, Tensor] = {}
    for key, last in states[-1].items():
        if last.is_floating_point():
            total = torch.zeros_like(last, dtype=torch.float32)
            for s in states:
                total += s[key].float()
            out[key] = (total / len(states)).to(last.dtype)
        else:
            out[key] = last.clone()
    return out


class Snapshots:
    """The weights of ``model`` every ``every`` steps (CPU copies), the last ``keep`` of them."""

    def __init__(self, every: int, keep: int) -> None:
        if every <= 0 or keep <= 0:
            raise ValueError(f"Snapshots needs every > 0 and keep > 0, got {every}, {keep}")
        self.every = every
        self.states: collections.deque[tuple[int, dict[str, Tensor]]] = collections.deque(
            maxlen=keep
        )

    def observe(self, step: int, model: torch.nn.Module) -> None:
        """Copy ``model``'s weights if ``step`` is a multiple of ``every``."""
        if step % self.every == 0:
            self.take(step, model)

    def take(self, step: int, model: torch.nn.Module) -> None:
        """Copy ``model``'s weights now (replacing a copy of the same step)."""
        if self.states and self.states[-1][0] == step:
            self.states.pop()
        state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        self.states.append((step, state))

    @property
    def steps(self) -> list[int]:
        """The steps of the kept copies, oldest first."""
        return [s for s, _ in self.states]

    def average(self) -> dict[str, Tensor]:
        """The mean of the kept copies (see :func:`average_states`)."""
        return average_states([s for _, s in self.states])

    def average_with(
        self, step: int, model: torch.nn.Module
    ) -> tuple[list[int], dict[str, Tensor]]:
        """The steps and mean that :meth:`take` (``step``, ``model``) then :meth:`average` would
        give, without keeping the copy: what averaging would produce if the run ended now."""
        states = [(s, st) for s, st in self.states if s != step]
        states.append((step, {k: v.detach().to("cpu") for k, v in model.state_dict().items()}))
        states = states[-(self.states.maxlen or len(states)) :]
        return [s for s, _ in states], average_states([st for _, st in states])
