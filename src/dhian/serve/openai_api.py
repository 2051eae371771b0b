"""OpenAI-compatible routes for a served causal LM, so the official ``openai`` client works.

Owns :func:`add_openai_routes` (``POST /v1/chat/completions``, ``POST /v1/completions``,
``GET /v1/models``) and :class:`CompletionJob` (what the batcher's worker runs:
:func:`dhian.inference.generate.complete_texts`). Answers are OpenAI's shapes: ``chat.completion``
/ ``text_completion`` with ``choices`` (``finish_reason`` stop | length) and ``usage``; with
``stream: true`` server-sent events ``data: {chunk}`` (``chat.completion.chunk`` deltas, or
``text_completion`` pieces), the last chunk carrying ``finish_reason``, then ``data: [DONE]``.

Every request is checked before the model runs, each failure a 4xx in OpenAI's error shape
(:meth:`dhian.serve.limits.ApiError.openai_body`): an unknown ``model`` (404
``model_not_found``), a field of the wrong type, out of range or not finite (400, the field
named: :mod:`dhian.serve.openai_schemas`), empty ``messages`` or a bad role (400),
``max_tokens`` over the server's limit (400), a prompt with its new tokens over a LLaMA's
context (400 ``context_length_exceeded``, both numbers named), a chat to a model without a chat
template (400). Without ``max_tokens`` a chat gets up to 256 new tokens and a completion 16
(OpenAI's default), never more than the server's limit or the room left in the context. Texts
pass through :func:`dhian.text.clean_text` (a lone surrogate becomes U+FFFD).

Where the model runs is the service's choice (``service.generation``): a LLaMA-family LM's
requests join one continuously batched engine (:mod:`dhian.serve.engine_worker`), another
causal LM's run one at a time on the batcher's thread (:class:`CompletionJob`). A stream's text
comes back through an asyncio queue; a client that goes away, or a request left without text
for ``timeout`` seconds (an error event, then ``[DONE]``), abandons its generation, and a JSON
request that times out (504) or whose client leaves does too, so the model is free within one
step.
Imports: fastapi, starlette, :mod:`dhian.inference` (chat, generate),
:mod:`dhian.decoding.compiled_step` (the type of the server's compiled step),
:mod:`dhian.serve` (limits, openai_schemas), :mod:`dhian.text`, :mod:`dhian.errors`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from dhian.decoding.compiled_step import CompiledDecoder
from dhian.errors import DhianError
from dhian.inference.chat import check_messages, has_chat_template, render_messages
from dhian.inference.generate import (
    Completion,
    complete_texts,
    context_size,
    lm_tokenizer,
    uses_static_cache,
)
from dhian.models.model_dir import LoadedModel
from dhian.serve.limits import ApiError
from dhian.serve.openai_schemas import ChatCompletionRequest, CompletionRequest
from dhian.text import clean_text

__all__ = ["CHAT_DEFAULT_TOKENS", "COMPLETION_DEFAULT_TOKENS", "CompletionJob", "add_openai_routes"]

log = logging.getLogger("dhian.serve")

#: new tokens when a chat request gives no max_tokens (bounded by the server's limit and the
#: room left in the model's context)
CHAT_DEFAULT_TOKENS = 256
#: new tokens when a completion request gives no max_tokens (OpenAI's default)
COMPLETION_DEFAULT_TOKENS = 16


class _ClientGone(Exception):
    """Raised inside generation when a streaming client has disconnected."""


@dataclasses.dataclass
class CompletionJob:
    """One request's generation: rendered ``prompts``, sampling keywords of
    :func:`complete_texts`, and for streams ``on_text(row, increment)``."""

    prompts: list[str]
    sampling: dict[str, Any]
    on_text: Callable[[int, str], None] | None = None

    def run(
        self, loaded: LoadedModel, compiled: CompiledDecoder | None = None
    ) -> list[Completion] | None:
        """Generate (``compiled``: the server's compiled decoding step, if any); ``None`` when
        the streaming client went away meanwhile."""
        try:
            return complete_texts(
                loaded, self.prompts, on_text=self.on_text, compiled=compiled, **self.sampling
            )
        except _ClientGone:
            return None


def _sampling(req: ChatCompletionRequest | CompletionRequest, new_tokens: int) -> dict[str, Any]:
    return {
        "max_new_tokens": new_tokens,
        "temperature": req.temperature,
        "top_k": req.top_k,
        "top_p": req.top_p,
        "repetition_penalty": req.repetition_penalty,
        "stop": [clean_text(s) for s in req.stops()],
        "seed": req.seed,
    }


def _usage(completions: list[Completion]) -> dict[str, int]:
    prompt = sum(c.prompt_tokens for c in completions)
    new = sum(c.completion_tokens for c in completions)
    return {"prompt_tokens": prompt, "completion_tokens": new, "total_tokens": prompt + new}


def _sse(data: dict[str, Any] | str) -> str:
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n"


class _Routes:
    """The checks and answers of the OpenAI routes over one :class:`dhian.serve.app.Service`
    (its ``loaded``, ``name``, ``settings``, ``context``, ``worker``, ``generation`` and
    ``complete``)."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.loaded: LoadedModel = service.loaded
        self.created = int(time.time())

    # ---- checks ----------------------------------------------------------------------------
    def check_model(self, name: str) -> None:
        if name != self.service.name:
            raise ApiError(
                404,
                f"the model {name!r} does not exist on this server; it serves "
                f"{self.service.name!r} (GET /v1/models)",
                param="model",
                code="model_not_found",
            )

    def new_tokens(
        self, prompts: list[str], asked: int | None, default: int, field: str, where: str
    ) -> int:
        """How many tokens to generate: ``asked`` (the request's ``field``), checked against
        the server's limit and the context, or when not asked ``default`` bounded by both.
        ``where`` names the prompt field in errors."""
        limit = int(self.service.settings.max_new_tokens)
        if asked is not None and asked > limit:
            raise ApiError(
                400,
                f"{field} is {asked}; this server generates at most {limit} tokens per "
                "request (--max-new-tokens): ask for fewer",
                param=field,
                code="invalid_value",
            )
        tok = lm_tokenizer(self.loaded)
        counts = [len(tok.encode(text)) for text in prompts]
        if 0 in counts:
            raise ApiError(400, f"{where} is empty; give some text", param=where)
        if not uses_static_cache(self.loaded.model):  # a GPT slides its window: no limit
            return min(default, limit) if asked is None else asked
        context = int(self.service.context)
        model_context = context_size(self.loaded.model)
        longest = max(counts)
        wanted = min(default, limit, context - longest) if asked is None else asked
        if longest + max(wanted, 1) > context:
            i = counts.index(longest)
            name = where if len(prompts) == 1 else f"{where}[{i}]"
            whose = (
                f"the model's context of {context} tokens"
                if context == model_context
                else f"this server's context of {context} tokens (--llm-context; the model's "
                f"is {model_context})"
            )
            raise ApiError(
                400,
                f"{name} has {longest} tokens and {field} is {wanted}, more than {whose}; "
                f"shorten it or lower {field}",
                param=where,
                code="context_length_exceeded",
            )
        return wanted

    def chat_prompt(self, req: ChatCompletionRequest) -> str:
        if not has_chat_template(self.loaded):
            raise ApiError(
                400,
                f"{self.service.name!r} has no chat template (not an instruction-tuned model); "
                "use POST /v1/completions",
                param="messages",
                code="invalid_value",
            )
        messages = [{**m, "content": clean_text(m["content"])} for m in req.message_dicts()]
        try:
            return render_messages(self.loaded, check_messages(messages))
        except DhianError as exc:
            raise ApiError(400, str(exc), param="messages", code="invalid_value") from exc

    # ---- answers ---------------------------------------------------------------------------
    async def chat(self, req: ChatCompletionRequest, request: Request) -> Any:
        self.check_model(req.model)
        field = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
        prompt = self.chat_prompt(req)
        new_tokens = self.new_tokens(
            [prompt], req.asked_tokens(), CHAT_DEFAULT_TOKENS, field, "messages"
        )
        sampling = _sampling(req, new_tokens)
        ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        if req.stream:
            return self.stream(
                [prompt], sampling, ident, "chat.completion.chunk", req.wants_usage()
            )
        done = await self.service.complete([prompt], sampling, request)
        return {
            "id": ident,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.service.name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": done[0].text},
                    "logprobs": None,
                    "finish_reason": done[0].finish_reason,
                }
            ],
            "usage": _usage(done),
        }

    async def complete(self, req: CompletionRequest, request: Request) -> Any:
        self.check_model(req.model)
        prompts = [clean_text(p) for p in req.prompts()]
        if not prompts:
            raise ApiError(400, "prompt is an empty list; give at least one text", param="prompt")
        if len(prompts) > self.service.settings.max_batch:
            raise ApiError(
                400,
                f"{len(prompts)} prompts in one request; the limit is "
                f"{self.service.settings.max_batch} (--max-batch): split the list",
                param="prompt",
            )
        new_tokens = self.new_tokens(
            prompts, req.max_tokens, COMPLETION_DEFAULT_TOKENS, "max_tokens", "prompt"
        )
        sampling = _sampling(req, new_tokens)
        ident = f"cmpl-{uuid.uuid4().hex[:24]}"
        if req.stream:
            echo = prompts if req.echo else None
            return self.stream(prompts, sampling, ident, "text_completion", req.wants_usage(), echo)
        done = await self.service.complete(prompts, sampling, request)
        return {
            "id": ident,
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.service.name,
            "choices": [
                {
                    "index": i,
                    "text": (prompts[i] if req.echo else "") + c.text,
                    "logprobs": None,
                    "finish_reason": c.finish_reason,
                }
                for i, c in enumerate(done)
            ],
            "usage": _usage(done),
        }

    def models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": self.service.name,
                    "object": "model",
                    "created": self.created,
                    "owned_by": "dhian",
                }
            ],
        }

    # ---- streaming -------------------------------------------------------------------------
    def stream(
        self,
        prompts: list[str],
        sampling: dict[str, Any],
        ident: str,
        obj: str,
        usage: bool,
        echo: list[str] | None = None,
    ) -> StreamingResponse:
        """Submit the generation now (a full queue is a 503 before any byte is sent) and
        stream it. The generation is abandoned when the client leaves (the response is
        cancelled) or when no text has come for ``timeout`` seconds (an error event)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[int, str] | None] = asyncio.Queue()
        gone = threading.Event()
        batcher = self.service.worker is None  # else the engine: abandoning frees its row

        def on_text(row: int, text: str) -> None:  # on the batcher's / worker's thread
            if gone.is_set():
                if batcher:
                    raise _ClientGone  # stops the generation at this token
                return
            loop.call_soon_threadsafe(queue.put_nowait, (row, text))

        gen = self.service.generation(prompts, sampling, on_text)
        gen.future.add_done_callback(lambda _f: loop.call_soon_threadsafe(queue.put_nowait, None))
        created = int(time.time())
        chat = obj == "chat.completion.chunk"
        timeout = float(self.service.settings.timeout)

        def chunk(row: int, text: str | None, finish: str | None, first: bool = False) -> str:
            base: dict[str, Any] = {
                "id": ident,
                "object": obj,
                "created": created,
                "model": self.service.name,
            }
            if chat:
                delta: dict[str, Any] = {} if text is None else {"content": text}
                if first:
                    delta["role"] = "assistant"
                choice: dict[str, Any] = {"index": row, "delta": delta}
            else:
                choice = {"index": row, "text": text or ""}
            choice.update({"logprobs": None, "finish_reason": finish})
            return _sse({**base, "choices": [choice]})

        def failed(error: ApiError) -> Iterator[str]:
            yield _sse(error.openai_body())
            yield _sse("[DONE]")

        async def events() -> AsyncIterator[str]:
            try:
                if chat:
                    yield chunk(0, "", None, first=True)
                for row, text in enumerate(echo or []):
                    yield chunk(row, text, None)
                while True:
                    try:
                        item = await asyncio.wait_for(queue.get(), timeout)
                    except TimeoutError:
                        gen.abandon()
                        message = f"no text within {timeout:g} s (--timeout); retry later"
                        for line in failed(ApiError(504, message, code="timeout")):
                            yield line
                        return
                    if item is None:
                        break
                    yield chunk(item[0], item[1], None)
                try:
                    done = gen.completions()
                except (DhianError, ValueError) as exc:
                    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    for line in failed(ApiError(422, message)):
                        yield line
                    return
                except Exception as exc:  # a model failure: the headers are sent, say it here
                    log.exception("generation of %s failed", ident)
                    message = f"internal error ({type(exc).__name__}); see the server log"
                    for line in failed(ApiError(500, message)):
                        yield line
                    return
                for row, completion in enumerate(done or []):
                    yield chunk(row, None if chat else "", completion.finish_reason)
                if usage and done:
                    yield _sse(
                        {
                            "id": ident,
                            "object": obj,
                            "created": created,
                            "model": self.service.name,
                            "choices": [],
                            "usage": _usage(done),
                        }
                    )
                yield _sse("[DONE]")
            finally:
                gone.set()  # a batcher generation stops at its next token
                gen.abandon()  # an engine generation gives its row back (no-op once done)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )


def add_openai_routes(app: FastAPI, service: Any) -> None:
    """Add the ``/v1`` routes for ``service`` (a :class:`dhian.serve.app.Service` of a causal
    LM); its batcher must have the ``complete`` op (:meth:`CompletionJob.run`)."""
    routes = _Routes(service)

    @app.get("/v1/models", tags=["openai"])
    async def models() -> dict[str, Any]:
        return routes.models()

    @app.post("/v1/chat/completions", tags=["openai"])
    async def chat_completions(req: ChatCompletionRequest, request: Request) -> Any:
        return await routes.chat(req, request)

    @app.post("/v1/completions", tags=["openai"])
    async def completions(req: CompletionRequest, request: Request) -> Any:
        return await routes.complete(req, request)
