"""Text requests over the continuous-batching engine: prompts in, streamed text and
:class:`~dhian.inference.generate.Completion` records out, for a LLaMA-family model.

Owns :class:`TextEngine` and :class:`TextJob`. A :class:`TextEngine` wraps one
:class:`dhian.inference.engine.LLMEngine` and the model's tokenizer: :meth:`TextEngine.submit`
encodes a prompt exactly as :func:`dhian.inference.generate.llm_generate_text` does, and gives
the request its own :class:`~dhian.inference.generate.TextStream` (incremental detokenisation,
stop strings cut off, ``on_text(increment)`` with the safe part of the text), so a request
sent alone gives what :func:`~dhian.inference.generate.complete_texts` gives for it. Each
request stops at EOS, a stop string, ``max_new_tokens`` or :meth:`TextEngine.cancel`. The
engine's rules hold: one thread calls ``submit``/``step``/``cancel`` (the server's generation
worker, :mod:`dhian.serve.engine_worker`), and ``on_text`` runs in that thread; an exception
raised by ``on_text`` stops that request alone (kept in :attr:`TextJob.error`), never the step.
Imports: :mod:`dhian.inference.engine`, :mod:`dhian.inference.generate`, :mod:`dhian.errors`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from dhian.errors import DataError
from dhian.inference.engine import LLMEngine, Request
from dhian.inference.generate import Completion, TextStream

__all__ = ["TextEngine", "TextJob", "supports_engine"]


def supports_engine(model: Any) -> bool:
    """Whether ``model`` can run on :class:`LLMEngine`: a static KV cache (``new_cache``) and a
    per-row ``decode_step`` (the LLaMA family)."""
    return callable(getattr(model, "new_cache", None)) and callable(
        getattr(model, "decode_step", None)
    )


@dataclasses.dataclass
class TextJob:
    """One prompt on a :class:`TextEngine`: the engine's token-level ``request``, its text
    ``stream``, and ``error`` (what its ``on_text`` raised, which stopped it)."""

    request: Request
    stream: TextStream
    error: Exception | None = None

    @property
    def done(self) -> bool:
        """Whether it stopped (finished, cancelled or failed)."""
        return self.request.done

    @property
    def cancelled(self) -> bool:
        return self.request.finished_reason == "cancelled"

    def completion(self) -> Completion:
        """The finished request as a :class:`Completion` (streams the text held back so far:
        call it once, on the engine's thread). ``finish_reason`` is ``length`` when it ran out
        of new tokens (or of cache slots), else ``stop`` (EOS or a stop string)."""
        req = self.request
        reason = "length" if req.finished_reason in ("length", "context") else "stop"
        return Completion(self.stream.finish(0), len(req.prompt), len(req.tokens), reason)


class TextEngine:
    """Continuous batching of text prompts over ``model`` (see the module docstring).

    ``tokenizer``: ``encode(str) -> list[int]``, ``decode(ids) -> str`` and ``eos_id`` (a
    request stops at EOS when ``stop_at_eos``). ``max_batch`` rows decode together;
    ``max_len`` slots per row bound prompt + new tokens (default: the model's context, at most
    4096). Counters: ``steps`` decoding steps run, ``tokens`` tokens generated.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        max_batch: int = 8,
        max_len: int | None = None,
        stop_at_eos: bool = True,
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.max_batch, self._max_len = max_batch, max_len
        eos = getattr(tokenizer, "eos_id", None)
        self.stop_ids: tuple[int, ...] = (int(eos),) if stop_at_eos and eos is not None else ()
        self.steps = 0
        self.tokens = 0
        self._jobs: dict[int, TextJob] = {}  # engine request id -> job, until it finishes
        self.engine = LLMEngine(model, max_batch, max_len)

    @property
    def context(self) -> int:
        """Slots per row: the most tokens (prompt + new) one request may use."""
        return self.engine.max_len

    @property
    def busy(self) -> bool:
        """Whether a request runs or waits for a row."""
        return self.engine.busy

    @property
    def active(self) -> int:
        """Rows in use (requests being decoded)."""
        return len(self.engine.active)

    def waiting(self) -> list[TextJob]:
        """The jobs that wait for a free row, oldest first."""
        return [self._jobs[r.id] for r in self.engine.waiting if not r.done and r.id in self._jobs]

    def encode(self, prompt: str) -> list[int]:
        """The ids of ``prompt`` (DataError when it encodes to no token)."""
        ids = [int(t) for t in self.tokenizer.encode(prompt)]
        if not ids:
            raise DataError(f"the prompt {prompt[:40]!r} encodes to no token; give some text")
        return ids

    def submit(
        self,
        prompt: str,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        stop: Sequence[str] = (),
        seed: int | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> TextJob:
        """Queue ``prompt``; it joins the running batch at the next :meth:`step` with a free
        row. ``on_text(increment)`` receives its decoded text as it grows (the increments add
        up to the completion's text). DataError when the prompt and its ``max_new_tokens`` do
        not fit :attr:`context`; ValueError for a sampling setting out of range."""
        ids = self.encode(prompt)
        if len(ids) + max_new_tokens > self.context:
            raise DataError(
                f"the prompt has {len(ids)} tokens and {max_new_tokens} new tokens were asked "
                f"for, more than the context of {self.context} tokens; shorten the prompt or "
                f"ask for at most {max(self.context - len(ids), 0)} new tokens"
            )
        emit = None if on_text is None else (lambda _row, text: on_text(text))
        stream = TextStream(self.tokenizer, [ids], stop, emit)
        holder: list[TextJob] = []

        def on_token(_req: Request, token: int) -> bool:
            self.tokens += 1
            try:
                return stream.on_token(0, token)
            except Exception as exc:  # the caller's on_text failed: stop this request only
                holder[0].error = exc
                return True

        req = self.engine.submit(
            ids, max_new_tokens, temperature, top_k, top_p, repetition_penalty,
            self.stop_ids, seed, on_token,
        )  # fmt: skip
        job = TextJob(req, stream)
        holder.append(job)
        if not req.done:
            self._jobs[req.id] = job
        return job

    def cancel(self, job: TextJob) -> None:
        """Stop ``job`` (waiting or running); its row is free at the next :meth:`step`."""
        self.engine.cancel(job.request)
        if not any(r is job.request for r in self.engine.active):
            self._jobs.pop(job.request.id, None)  # waiting: the engine drops it unreported

    def step(self) -> list[TextJob]:
        """One engine step (admit waiting prompts into free rows, one token for every row);
        returns the jobs that finished in it (cancelled ones included)."""
        finished = self.engine.step()
        self.steps += 1
        return [job for req in finished if (job := self._jobs.pop(req.id, None)) is not None]

    def reset(self) -> list[TextJob]:
        """Drop every request (after a step raised: the cache may be half written) and start
        again with an empty engine; returns the dropped jobs, each marked ``cancelled``."""
        dropped = list(self._jobs.values())
        for job in dropped:
            self.engine.cancel(job.request)
        self._jobs.clear()
        self.engine = LLMEngine(self.model, self.max_batch, self._max_len)
        return dropped
