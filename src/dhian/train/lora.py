"""LoRA fine-tuning through ``peft``: wrap a model in adapters, save and restore them, merge them.

Owns :func:`add_lora` (``train.lora`` → a ``peft`` model whose only trainable tensors are the
rank-``r`` adapters on the target linear layers; the base weights are frozen),
:func:`adapter_state` / :func:`load_adapter_state` (the adapter tensors a resumable checkpoint
keeps, through ``peft``'s own state-dict functions) and :func:`merged_copy` (a plain model with
the adapters merged in — ``peft``'s ``merge_and_unload`` on a copy, so training goes on
unmerged — which is what a saved model dir holds, so ``dhian generate`` loads it like any
other). The LoRA arithmetic is ``peft``'s; nothing here re-implements it.
Imports: stdlib, torch, peft, :mod:`dhian.config`, :mod:`dhian.errors`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

from dhian.config import LoraSettings
from dhian.errors import ConfigError, nearest

__all__ = ["adapter_state", "add_lora", "is_lora", "load_adapter_state", "merged_copy"]


def is_lora(model: torch.nn.Module) -> bool:
    """Whether ``model`` is wrapped in LoRA adapters (by :func:`add_lora`)."""
    return isinstance(model, PeftModel)


def _check(settings: LoraSettings, model: torch.nn.Module) -> None:
    if settings.r < 0 or settings.alpha <= 0 or not 0.0 <= settings.dropout < 1.0:
        raise ConfigError(
            f"train.lora needs r >= 0, alpha > 0 and 0 <= dropout < 1, got r={settings.r}, "
            f"alpha={settings.alpha}, dropout={settings.dropout}"
        )
    if not settings.targets:
        raise ConfigError("train.lora.targets is empty; name linear layers, e.g. [q_proj, v_proj]")
    linear = sorted(
        {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    )
    for target in settings.targets:
        if target not in linear:
            raise ConfigError(
                f"train.lora.targets: no linear layer is named {target!r}"
                f"{nearest(target, linear)}; this model's linear layers: {', '.join(linear)}"
            )


def add_lora(model: torch.nn.Module, settings: LoraSettings) -> torch.nn.Module:
    """``model`` with LoRA adapters (``peft``) on every linear layer whose name ends in one of
    ``settings.targets``; only the adapters train. The wrapped model's forward is the base
    model's (same arguments, same outputs)."""
    _check(settings, model)
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.targets),
        bias="none",
    )
    wrapped: torch.nn.Module = get_peft_model(model, config)
    return wrapped


def adapter_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter tensors of a LoRA model (cloned to CPU), for a resumable checkpoint."""
    state = get_peft_model_state_dict(model)
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def load_adapter_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Put saved adapter tensors back into a LoRA model built with the same settings."""
    result = set_peft_model_state_dict(model, dict(state))
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise ConfigError(
            f"the checkpoint's LoRA adapters do not fit this model ({unexpected[0]}); resume with "
            "the train.lora settings of the run"
        )


def merged_copy(model: torch.nn.Module) -> Any:
    """A plain copy of a LoRA model's base model with the adapters merged into its weights
    (``peft`` ``merge_and_unload``); ``model`` itself keeps training unmerged."""
    if not is_lora(model):
        return model
    twin: Any = copy.deepcopy(model)
    return twin.merge_and_unload()
