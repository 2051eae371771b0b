"""Continuous batching for LLaMA-family models: requests join the running batch between
decoding steps and leave it as soon as they finish (the serve hook).

Owns :class:`LLMEngine` and :class:`Request`. The engine holds one static KV cache of
``max_batch`` rows × ``max_len`` slots. :meth:`LLMEngine.submit` queues a request;
:meth:`LLMEngine.step` first admits queued requests into free rows (each prompt is prefilled
alone into a batch-1 cache, in chunks, and its keys/values copied into its row), then runs one
batched decoding step (:meth:`dhian.models.llama.LlamaModel.decode_step` with a per-row cache
slot and RoPE position, so rows of different lengths share the step) and retires finished rows.
Active rows are kept in ``0 .. n-1`` (a finished row is replaced by the last active one), and a
step attends over the slots in use only (up to the longest live row), so a step costs what a
batch of the live requests costs, whatever ``max_len`` is. Each request samples with its own settings
(temperature, top-k, top-p, seed, repetition penalty) exactly as
:func:`dhian.decoding.llm_generate.llm_generate` does for one row; greedy rows give the tokens
that a batch-1 ``llm_generate`` gives (up to float rounding of the batched matmuls).

Not thread-safe: one thread (the server's generation worker) calls ``submit``/``step``; the
``on_token`` callbacks run in that thread.
Notation: R rows (``max_batch``), Tmax slots, V vocab.
Imports: torch, :mod:`dhian.decoding.llm_generate`, :mod:`dhian.decoding.sampling`,
:mod:`dhian.decoding.processors`.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from dhian.decoding.llm_generate import prefill
from dhian.decoding.processors import apply_repetition_penalty
from dhian.decoding.sampling import _check_args, _pick

__all__ = ["LLMEngine", "Request"]


@dataclasses.dataclass
class Request:
    """One generation request and its state. ``tokens`` grows as it is generated;
    ``finished_reason`` is ``""`` while running, then ``stop_token`` | ``length`` |
    ``callback`` | ``context`` (the cache is full) | ``cancelled``."""

    id: int
    prompt: list[int]
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None
    on_token: Callable[[Request, int], bool | None] | None = None
    tokens: list[int] = dataclasses.field(default_factory=list)
    finished_reason: str = ""
    generator: torch.Generator | None = None

    @property
    def done(self) -> bool:
        return bool(self.finished_reason)


class _Rows:
    """The first ``n`` rows and ``s`` slots of the engine's cache, as ``decode_step`` reads
    them (views: what it writes lands in the engine's cache)."""

    def __init__(self, k: list[Tensor], v: list[Tensor], n: int, s: int) -> None:
        self.k = [x[:n, :, :s] for x in k]  # (n, Hkv, s, D) views
        self.v = [x[:n, :, :s] for x in v]


class LLMEngine:
    """Continuous batching over a LLaMA-family ``model`` (``decode_step``, ``new_cache``).

    ``max_batch`` rows run together; ``max_len`` slots per row (prompt + generated, default
    ``min(cfg.max_seq_len, 4096)``). ``step_fn`` replaces ``model.decode_step`` (same
    arguments), e.g. :func:`dhian.decoding.compiled_step.compiled_decode_step`; with static
    shapes it compiles once per number of live rows (1 .. ``max_batch``) and reads the whole cache
    (an eager step reads only the slots in use).
    """

    def __init__(
        self,
        model: Any,
        max_batch: int = 8,
        max_len: int | None = None,
        step_fn: Callable[..., Tensor] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"LLMEngine: max_batch must be >= 1, got {max_batch}")
        self.model = model.eval()
        self.step_fn = step_fn if step_fn is not None else model.decode_step
        self.max_batch = max_batch
        self.max_len = int(max_len or min(int(model.cfg.max_seq_len), 4096))
        self.cache = model.new_cache(max_batch, self.max_len)
        self.device = self.cache.k[0].device
        self.mask = torch.zeros(max_batch, self.max_len, dtype=torch.bool, device=self.device)
        self.ids = torch.zeros(max_batch, self.max_len, dtype=torch.long, device=self.device)
        self.length = [0] * max_batch  # slots filled per row
        self.active: list[Request] = []  # row r serves active[r]
        self.logits: list[Tensor] = []  # row r's next-token logits (V,)
        self.waiting: deque[Request] = deque()
        self._ids = itertools.count()

    # ------------------------------------------------------------------ requests
    def submit(
        self,
        prompt: Sequence[int],
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        stop_token_ids: Sequence[int] = (),
        seed: int | None = None,
        on_token: Callable[[Request, int], bool | None] | None = None,
    ) -> Request:
        """Queue a request (it joins the batch at the next :meth:`step` with a free row).
        ``on_token(request, token)`` is called for every token; returning True stops it."""
        _check_args([prompt], max_new_tokens, temperature, top_k, top_p, repetition_penalty)
        if len(prompt) + max_new_tokens > self.max_len:
            raise ValueError(
                f"LLMEngine: prompt of {len(prompt)} tokens + max_new_tokens {max_new_tokens} "
                f"exceeds the engine's {self.max_len} slots per row"
            )
        gen = None
        if seed is not None:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(int(seed))
        req = Request(
            next(self._ids), [int(t) for t in prompt], max_new_tokens, temperature, top_k,
            top_p, repetition_penalty, tuple(int(t) for t in stop_token_ids), seed, on_token,
            generator=gen,
        )  # fmt: skip
        if max_new_tokens == 0:
            req.finished_reason = "length"
        else:
            self.waiting.append(req)
        return req

    def cancel(self, req: Request) -> None:
        """Stop ``req`` (queued or running); its row is freed at the next step."""
        if not req.done:
            req.finished_reason = "cancelled"

    @property
    def busy(self) -> bool:
        """Whether a request is running or queued."""
        return bool(self.active or self.waiting)

    # ------------------------------------------------------------------ stepping
    def _admit(self, req: Request) -> None:
        """Prefill ``req`` alone and copy its keys/values into the next free row."""
        row = len(self.active)
        ids = torch.tensor([req.prompt], dtype=torch.long, device=self.device)  # (1, T)
        t = ids.size(1)
        one = self.model.new_cache(1, t)
        logits = prefill(self.model, ids, None, one)  # (1, V)
        for layer in range(len(self.cache.k)):
            self.cache.k[layer][row, :, :t] = one.k[layer][0]
            self.cache.v[layer][row, :, :t] = one.v[layer][0]
        self.mask[row] = False
        self.mask[row, :t] = True
        self.ids[row, :t] = ids[0]
        self.length[row] = t
        self.active.append(req)
        self.logits.append(logits[0])

    def _retire(self, row: int) -> None:
        """Free ``row``: the last active row moves into it (cache, mask, ids, logits)."""
        last = len(self.active) - 1
        if row != last:
            for layer in range(len(self.cache.k)):
                self.cache.k[layer][row] = self.cache.k[layer][last]
                self.cache.v[layer][row] = self.cache.v[layer][last]
            self.mask[row] = self.mask[last]
            self.ids[row] = self.ids[last]
            self.length[row] = self.length[last]
            self.active[row] = self.active[last]
            self.logits[row] = self.logits[last]
        self.active.pop()
        self.logits.pop()
        self.length[last] = 0

    def _choose(self, row: int) -> int:
        req, logits = self.active[row], self.logits[row][None]  # (1, V)
        n = self.length[row]
        scores = apply_repetition_penalty(
            logits,
            self.ids[row : row + 1, :n],
            req.repetition_penalty,
            self.mask[row : row + 1, :n],
        )
        return int(_pick(scores, req.temperature, req.top_k, req.top_p, [req.generator])[0])

    @torch.no_grad()
    def step(self) -> list[Request]:
        """Admit queued requests into free rows, pick every active row's next token, feed the
        live rows one batched decoding step. Returns the requests that finished in it."""
        self.waiting = deque(r for r in self.waiting if not r.done)
        while self.waiting and len(self.active) < self.max_batch:
            self._admit(self.waiting.popleft())
        finished: list[Request] = []
        for row in range(len(self.active)):
            req = self.active[row]
            if req.done:  # cancelled
                continue
            tok = self._choose(row)
            req.tokens.append(tok)
            n = self.length[row]
            self.ids[row, n] = tok
            if req.on_token is not None and req.on_token(req, tok):
                req.finished_reason = "callback"
            if tok in req.stop_token_ids:
                req.finished_reason = "stop_token"
            elif not req.done and len(req.tokens) >= req.max_new_tokens:
                req.finished_reason = "length"
            elif not req.done and n + 1 >= self.max_len:
                req.finished_reason = "context"
        for row in reversed(range(len(self.active))):
            if self.active[row].done:
                finished.append(self.active[row])
                self._retire(row)
        n = len(self.active)
        if n:
            lengths = torch.tensor(self.length[:n], dtype=torch.long, device=self.device)
            token = self.ids[torch.arange(n, device=self.device), lengths][:, None]  # (n, 1)
            positions = self.mask[:n].long().sum(-1, keepdim=True)  # (n, 1): real tokens so far
            self.mask[torch.arange(n, device=self.device), lengths] = True
            # slots in use: eager steps attend over these only; a given step_fn (compiled,
            # static shapes) gets the whole cache so that it does not recompile per length
            s = max(self.length[:n]) + 1 if self.step_fn == self.model.decode_step else self.max_len
            logits = self.step_fn(
                token,
                positions,
                lengths,
                self.mask[:n, :s],
                _Rows(self.cache.k, self.cache.v, n, s),
            )  # (n, V)
            for row in range(n):
                self.length[row] += 1
                self.logits[row] = logits[row]
        return finished[::-1]

    def run(self) -> list[Request]:
        """Step until every submitted request has finished; returns them in finishing order."""
        done: list[Request] = []
        while self.busy:
            done += self.step()
        return done

    def generate(self, prompts: Sequence[Sequence[int]], **kwargs: Any) -> list[list[int]]:
        """Submit ``prompts`` (same settings ``kwargs`` as :meth:`submit`) and run them to the
        end; the generated tokens per prompt, in order."""
        reqs = [self.submit(p, **kwargs) for p in prompts]
        self.run()
        return [r.tokens for r in reqs]
