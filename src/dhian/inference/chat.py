"""Chatting with an instruction-tuned causal LM: messages → the model's chat template → a
streamed reply, and a conversation that keeps its history.

Owns :func:`chat_template_of` (the template the tokenizer carries, or one clear error),
:func:`check_messages` (roles and contents of an OpenAI-style message list),
:func:`render_messages` (messages → prompt text, with the assistant turn opened),
:func:`chat_reply` (one reply to a message list, streamed through ``on_text``) and
:class:`Conversation` (the history of ``dhian chat``: optional system message, user and
assistant turns, :meth:`~Conversation.reset`). ``dhian chat``, ``dhian generate --chat`` and the
server's ``/v1/chat/completions`` all go through here.
Imports: :mod:`dhian.text.chat_template`, :mod:`dhian.inference.generate`,
:mod:`dhian.decoding.compiled_step`,
:mod:`dhian.models.model_dir`, :mod:`dhian.errors`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dhian.decoding.compiled_step import CompiledDecoder
from dhian.errors import DataError
from dhian.inference.generate import Completion, complete_texts, lm_tokenizer
from dhian.models.model_dir import LoadedModel
from dhian.text.chat_template import render_chat

__all__ = [
    "ROLES",
    "Conversation",
    "chat_reply",
    "chat_template_of",
    "check_messages",
    "has_chat_template",
    "render_messages",
]

#: the message roles a chat may hold
ROLES = ("system", "user", "assistant")


def has_chat_template(loaded: LoadedModel) -> bool:
    """Whether ``loaded`` is a language model whose tokenizer carries a chat template."""
    if loaded.kind != "lm":
        return False
    tok = loaded.tokenizers.get("tgt") or loaded.tokenizers.get("src")
    return bool(getattr(tok, "chat_template", None))


def chat_template_of(loaded: LoadedModel) -> str:
    """The jinja2 chat template of ``loaded``'s tokenizer (DataError when it has none)."""
    tok = lm_tokenizer(loaded)
    template = getattr(tok, "chat_template", None)
    if not template:
        mtype = getattr(loaded.config.model, "type", "?")
        raise DataError(
            f"this {mtype} model has no chat template (not an instruction-tuned model); "
            "use plain generation (dhian generate without --chat, /v1/completions)"
        )
    return str(template)


def check_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """``messages`` as plain ``{"role", "content"}`` dicts; DataError naming the first bad one
    (an empty list, an unknown role, a content that is not a string)."""
    if not messages:
        raise DataError("messages is empty; give at least one message (role user)")
    out: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise DataError(f"messages[{i}].role is {role!r}; use one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise DataError(f"messages[{i}].content must be a string, got {type(content).__name__}")
        out.append({"role": str(role), "content": content})
    return out


def render_messages(loaded: LoadedModel, messages: Sequence[Mapping[str, Any]]) -> str:
    """The prompt text for ``messages`` with the assistant's turn opened (HF's
    ``apply_chat_template(..., add_generation_prompt=True)``)."""
    tok = lm_tokenizer(loaded)
    roles = getattr(tok, "roles", {})
    return render_chat(
        chat_template_of(loaded),
        check_messages(messages),
        add_generation_prompt=True,
        bos_token=str(roles.get("bos", "")),
        eos_token=str(roles.get("eos", "")),
    )


def chat_reply(
    loaded: LoadedModel,
    messages: Sequence[Mapping[str, Any]],
    *,
    on_text: Callable[[str], None] | None = None,
    **sampling: Any,
) -> Completion:
    """The assistant's reply to ``messages``; ``on_text(increment)`` receives it as it grows.
    ``sampling``: the keywords of :func:`dhian.inference.generate.complete_texts`
    (``max_new_tokens``, ``temperature``, ``top_k``, ``top_p``, ``repetition_penalty``,
    ``stop``, ``seed``). The reply ends at the model's end-of-turn token (its EOS)."""
    prompt = render_messages(loaded, messages)
    stream = None if on_text is None else (lambda _row, text: on_text(text))
    return complete_texts(loaded, [prompt], on_text=stream, **sampling)[0]


class Conversation:
    """A multi-turn chat with one model: the history (after an optional ``system`` message) and
    the sampling settings every turn uses (see :func:`chat_reply`); ``compiled`` decides per
    turn whether its decoding steps run compiled (:mod:`dhian.decoding.compiled_step`)."""

    def __init__(
        self,
        loaded: LoadedModel,
        system: str | None = None,
        compiled: CompiledDecoder | None = None,
        **sampling: Any,
    ) -> None:
        chat_template_of(loaded)  # fail now, not at the first turn
        self.loaded = loaded
        self.system = system
        self.compiled = compiled
        self.sampling = sampling
        self.messages: list[dict[str, str]] = []
        self.turns = 0
        self.reset()

    def reset(self) -> None:
        """Forget every turn (the system message stays)."""
        self.messages = [] if self.system is None else [{"role": "system", "content": self.system}]

    def say(self, text: str, on_text: Callable[[str], None] | None = None) -> Completion:
        """Add the user's ``text``, generate the reply (streamed through ``on_text``), keep both
        in the history and return the reply. Sampling with a ``seed`` uses ``seed + turn``."""
        sampling = dict(self.sampling)
        if sampling.get("seed") is not None:
            sampling["seed"] = int(sampling["seed"]) + self.turns
        asked = [*self.messages, {"role": "user", "content": text}]
        reply = chat_reply(self.loaded, asked, on_text=on_text, compiled=self.compiled, **sampling)
        self.messages = [*asked, {"role": "assistant", "content": reply.text}]
        self.turns += 1
        return reply
