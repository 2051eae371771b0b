"""Chat templates: render a checkpoint's jinja2 template the way HF ``apply_chat_template`` does.

Owns :func:`render_chat`: an :class:`jinja2.sandbox.ImmutableSandboxedEnvironment` with
``trim_blocks`` and ``lstrip_blocks``, the ``raise_exception`` global and a ``tojson`` filter
that does not escape HTML, and the variables ``messages``, ``add_generation_prompt``,
``bos_token`` and ``eos_token`` (plus any extra keyword).
Imports: jinja2, json; no torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

__all__ = ["render_chat"]


def _raise(message: str) -> None:
    from jinja2.exceptions import TemplateError

    raise TemplateError(message)


def _tojson(
    x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
    sort_keys: bool = False,
) -> str:  # fmt: skip
    return json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


@lru_cache(maxsize=8)
def _compile(template: str) -> Any:
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    return env.from_string(template)


def render_chat(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool = False,
    bos_token: str = "",
    eos_token: str = "",
    **extra: Any,
) -> str:
    """The prompt text for ``messages`` (``[{"role": ..., "content": ...}, …]``)."""
    for i, m in enumerate(messages):
        if "role" not in m or "content" not in m:
            raise ValueError(f"render_chat: message {i} needs 'role' and 'content', got {dict(m)}")
    return str(
        _compile(template).render(
            messages=[dict(m) for m in messages],
            add_generation_prompt=add_generation_prompt,
            bos_token=bos_token,
            eos_token=eos_token,
            **extra,
        )
    )
