"""Request bodies of the OpenAI-compatible routes (``/v1/chat/completions``, ``/v1/completions``).

Owns the pydantic models: the fields of OpenAI's API that dhian implements, plus two sampling
extensions other open servers also take (``top_k``, ``repetition_penalty``). Unknown fields are
rejected (``extra="forbid"``, as OpenAI rejects unrecognised arguments), so a typo is a 400
naming it; types are strict (``"temperature": "0.7"``, ``"max_tokens": true`` or ``2.5`` are
refused, not coerced), NaN/Infinity are refused, and every number has a range that sampling
can take (``seed`` an int64, ``repetition_penalty`` in [0.01, 100]). Responses are plain dicts built by :mod:`dhian.serve.openai_api` in OpenAI's shape.
Imports: pydantic and the standard library.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ChatCompletionRequest", "ChatMessage", "CompletionRequest", "StreamOptions"]


class _Request(BaseModel):
    # strict: "0.7" is not a temperature nor true a max_tokens of 1 (a 400 names the field);
    # NaN/Infinity (which Python's JSON parser accepts) are refused wherever a number is read
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class ChatMessage(_Request):
    """One message of a chat: ``role`` system | user | assistant, its text ``content``."""

    role: str
    content: str
    name: str | None = Field(None, description="accepted for compatibility; not shown to the model")


class StreamOptions(_Request):
    """``include_usage``: send one more chunk with the token counts before ``[DONE]``."""

    include_usage: bool = False


class _Sampling(_Request):
    """The sampling fields both routes share (OpenAI's names and ranges)."""

    model: str = Field(description="the served model's name (GET /v1/models)")
    max_tokens: int | None = Field(None, ge=0, description="new tokens at most")
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="0 = greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=1, description="choices per prompt (dhian serves 1)")
    stream: bool = Field(False, description="server-sent events ending with data: [DONE]")
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = Field(None, description="stop strings (not in the output)")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="for a reproducible sample")
    user: str | None = Field(None, description="accepted for compatibility; not used")
    top_k: int = Field(0, ge=0, description="dhian extension: 0 = off")
    repetition_penalty: float = Field(
        1.0, ge=0.01, le=100.0, description="dhian extension: 1 = off, > 1 fewer repeats"
    )

    def stops(self) -> list[str]:
        """``stop`` as a list."""
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def wants_usage(self) -> bool:
        """Whether a streamed answer ends with a usage chunk."""
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_Sampling):
    """``POST /v1/chat/completions``: reply to ``messages`` through the chat template."""

    messages: list[ChatMessage]
    max_completion_tokens: int | None = Field(None, ge=0, description="OpenAI's newer max_tokens")

    def asked_tokens(self) -> int | None:
        """``max_completion_tokens``, else ``max_tokens`` (None when neither is given)."""
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens
        return self.max_tokens

    def message_dicts(self) -> list[dict[str, Any]]:
        """The messages as ``{"role", "content"}`` dicts."""
        return [{"role": m.role, "content": m.content} for m in self.messages]


class CompletionRequest(_Sampling):
    """``POST /v1/completions``: continue ``prompt`` (one text or a list: one choice each)."""

    prompt: str | list[str]
    echo: bool = Field(False, description="put the prompt before the continuation")

    def prompts(self) -> list[str]:
        """``prompt`` as a list."""
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)
