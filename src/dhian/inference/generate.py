"""Text generation with a loaded causal LM: prompts in, continuations out, stop strings and
streaming of decoded increments, over the token loop :func:`dhian.decoding.sampling.generate`.

Owns :func:`generate_text` (a model + tokenizer; the prompt → ids step: documents start with
EOS), :func:`llm_generate_text` (the same over :func:`dhian.decoding.llm_generate.llm_generate`
for LLaMA-family models with a static KV cache), :class:`TextStream` (a row's decoded text as
tokens arrive: stop strings, streamed increments), :func:`complete_texts` (any loaded causal LM
→ :class:`Completion` records with token counts and why each row stopped: what the CLI and the
OpenAI-compatible routes need) and :func:`generate_one` (one prompt of a
:class:`~dhian.models.model_dir.LoadedModel`: the server's ``/generate``).

Which token loop a model takes is asked of the model: one with a static KV cache
(``new_cache``, the LLaMA family) goes through :func:`~dhian.decoding.llm_generate.llm_generate`,
the others (GPT) through :func:`~dhian.decoding.sampling.generate`.
Imports: :mod:`dhian.decoding.sampling`, :mod:`dhian.decoding.llm_generate`,
:mod:`dhian.decoding.compiled_step`, :mod:`dhian.models.model_dir`, :mod:`dhian.errors`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from dhian.decoding.cancel import ShouldStop
from dhian.decoding.compiled_step import CompiledDecoder
from dhian.decoding.llm_generate import llm_generate
from dhian.decoding.sampling import GenerationResult, generate
from dhian.errors import DataError
from dhian.models.model_dir import LoadedModel

__all__ = [
    "Completion",
    "TextStream",
    "check_context",
    "compiled_decoder",
    "complete_texts",
    "context_size",
    "generate_one",
    "generate_text",
    "llm_generate_text",
    "lm_tokenizer",
    "uses_static_cache",
]


class _TextTokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


def _held_back(text: str, stop: Sequence[str]) -> int:
    """How many trailing chars of ``text`` to hold back while streaming: an unfinished UTF-8
    sequence (decoded as U+FFFD) or a tail that could be the start of a stop string."""
    hold = len(text) - len(text.rstrip("\ufffd"))
    for s in stop:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                hold = max(hold, k)
                break
    return hold


class TextStream:
    """Per-row decoded continuation, stop-string detection and increments for streaming
    (also used per request by :mod:`dhian.inference.text_engine`)."""

    def __init__(
        self,
        tokenizer: _TextTokenizer,
        prompts: Sequence[Sequence[int]],
        stop: Sequence[str],
        on_text: Callable[[int, str], None] | None,
    ) -> None:
        self.tok = tokenizer
        self.prompts = [list(p) for p in prompts]
        self.prefix = [tokenizer.decode(p) for p in self.prompts]
        self.stop = [s for s in stop if s]
        self.on_text = on_text
        self.new: list[list[int]] = [[] for _ in prompts]
        self.shown = [0] * len(prompts)
        self.final: list[str | None] = [None] * len(prompts)

    def text(self, row: int) -> str:
        """The decoded continuation of ``row`` so far (prompt text removed)."""
        full = self.tok.decode(self.prompts[row] + self.new[row])
        if full.startswith(self.prefix[row]):
            return full[len(self.prefix[row]) :]
        return self.tok.decode(self.new[row])

    def _emit(self, row: int, upto: str) -> None:
        if self.on_text is not None and len(upto) > self.shown[row]:
            self.on_text(row, upto[self.shown[row] :])
        self.shown[row] = max(self.shown[row], len(upto))

    def on_token(self, row: int, token: int) -> bool:
        """Record ``token``; stream the safe part of the text; True when a stop string appeared."""
        self.new[row].append(token)
        text = self.text(row)
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.final[row] = text[:cut]
            self._emit(row, text[:cut])
            return True
        self._emit(row, text[: len(text) - _held_back(text, self.stop)])
        return False

    def finish(self, row: int) -> str:
        """The final continuation of ``row``; streams whatever was held back."""
        final = self.final[row]
        if final is None:
            final = self.text(row)
        self._emit(row, final)
        return final


def generate_text(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int = 100,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    stop: Sequence[str] = (),
    seed: int | None = None,
    use_cache: bool = True,
    stop_at_eos: bool = True,
    new_document: bool = False,
    on_text: Callable[[int, str], None] | None = None,
    completions: list[Completion] | None = None,
    should_stop: ShouldStop | None = None,
) -> list[str]:
    """Continue each text prompt; returns the continuations (prompt not included).

    ``tokenizer`` has ``encode(str) -> list[int]`` and ``decode(ids) -> str`` (and ``eos_id``,
    ``pad_id`` where it has them; see :mod:`dhian.text`). Language-model training data separates
    documents with EOS (:func:`dhian.data.examples.pack_lm`), so ``new_document`` prepends EOS
    to every prompt (the text then starts a document), and a prompt that encodes to no token
    (e.g. ``""``) always starts from EOS. Generation
    of a row stops at EOS (``stop_at_eos``) or as soon as its decoded text contains one of the
    ``stop`` strings; the text is cut before the stop string. ``on_text(row, increment)``
    receives the decoded text as it grows (held back while it could still become a stop string
    or ends inside a UTF-8 character), so the increments of a row add up to its result. A
    ``completions`` list receives one :class:`Completion` per prompt. The other arguments are
    those of :func:`generate`.
    """
    eos = getattr(tokenizer, "eos_id", None)
    encoded: list[list[int]] = []
    for text in prompts:
        ids = list(tokenizer.encode(text))
        if (new_document or not ids) and eos is not None:
            ids = [int(eos), *ids]
        if not ids:
            raise ValueError(
                f"generate_text: prompt {text!r} encodes to no token and the tokenizer has no "
                "EOS (document separator) to start from"
            )
        encoded.append(ids)
    stream = TextStream(tokenizer, encoded, stop, on_text)
    stop_ids = [int(eos)] if stop_at_eos and eos is not None else []
    pad = getattr(tokenizer, "pad_id", 0)
    results = generate(
        model,
        encoded,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        stop_token_ids=stop_ids,
        seed=seed,
        use_cache=use_cache,
        pad_id=int(pad) if pad is not None else 0,
        on_token=stream.on_token,
        should_stop=should_stop,
    )
    if completions is not None:
        completions.extend(_completions(stream, encoded, results))
    return [stream.finish(r) for r in range(len(prompts))]


def llm_generate_text(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    stop: Sequence[str] = (),
    seed: int | None = None,
    stop_at_eos: bool = True,
    on_text: Callable[[int, str], None] | None = None,
    completions: list[Completion] | None = None,
    should_stop: ShouldStop | None = None,
    compiled: CompiledDecoder | None = None,
) -> list[str]:
    """Continue each text prompt (already chat-rendered if it is a chat); returns the
    continuations. A row stops at EOS (``stop_at_eos``) or when its text contains one of
    ``stop`` (cut before it). ``on_text(row, increment)`` streams each row's decoded text; a
    ``completions`` list receives one :class:`Completion` per prompt; ``should_stop()`` True
    before a step abandons the call (:mod:`dhian.decoding.cancel`); ``compiled`` decides
    whether the decoding steps run compiled (:mod:`dhian.decoding.compiled_step`)."""
    encoded = [list(tokenizer.encode(t)) for t in prompts]
    for t, ids in zip(prompts, encoded, strict=True):
        if not ids:
            raise ValueError(f"llm_generate_text: prompt {t!r} encodes to no token")
    stream = TextStream(tokenizer, encoded, stop, on_text)
    eos = getattr(tokenizer, "eos_id", None)
    pad = getattr(tokenizer, "pad_id", None)
    results = llm_generate(
        model,
        encoded,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        stop_token_ids=[int(eos)] if stop_at_eos and eos is not None else [],
        seed=seed,
        pad_id=int(pad) if pad is not None else 0,
        on_token=stream.on_token,
        should_stop=should_stop,
        compiled=compiled,
    )
    if completions is not None:
        completions.extend(_completions(stream, encoded, results))
    return [stream.finish(r) for r in range(len(prompts))]


@dataclasses.dataclass(frozen=True)
class Completion:
    """One generated continuation: its ``text`` (stop string cut off), ``prompt_tokens`` and
    ``completion_tokens`` (new tokens, the stopping EOS included) and ``finish_reason``:
    ``stop`` (EOS or a stop string) or ``length`` (``max_new_tokens`` reached)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


def _completions(
    stream: TextStream, prompts: Sequence[Sequence[int]], results: Sequence[GenerationResult]
) -> list[Completion]:
    return [
        Completion(
            stream.finish(r),
            len(prompts[r]),
            len(res.tokens),
            "length" if res.finished_reason == "length" else "stop",
        )
        for r, res in enumerate(results)
    ]


def uses_static_cache(model: Any) -> bool:
    """Whether ``model`` generates through a static KV cache (``new_cache``: the LLaMA family)."""
    return callable(getattr(model, "new_cache", None))


def context_size(model: Any) -> int:
    """The most tokens (prompt + new) the model can attend over: ``cfg.max_seq_len`` of a
    LLaMA-family model; a GPT slides a window of ``block_size`` and so has no hard limit
    (returned as its ``block_size``, for reporting)."""
    if uses_static_cache(model):
        return int(model.cfg.max_seq_len)
    return int(getattr(model, "block_size", 0))


def check_context(model: Any, prompt_tokens: int, max_new_tokens: int) -> None:
    """DataError when ``prompt_tokens`` (0 = an empty prompt) + ``max_new_tokens`` do not fit
    a static-cache model's context; a GPT slides its window, so only an empty prompt fails."""
    if not uses_static_cache(model):
        return
    if prompt_tokens == 0:
        raise DataError("the prompt is empty; give some text for the model to continue")
    context = context_size(model)
    if prompt_tokens + max_new_tokens > context:
        raise DataError(
            f"the prompt has {prompt_tokens} tokens and {max_new_tokens} new tokens were asked "
            f"for, more than the model's context of {context}; shorten the prompt or ask for "
            f"at most {max(context - prompt_tokens, 0)} new tokens"
        )


def compiled_decoder(
    loaded: LoadedModel,
    compile: str,
    *,
    long_lived: bool = False,
    notice: Callable[[str], None] | None = None,
) -> CompiledDecoder | None:
    """The :class:`~dhian.decoding.compiled_step.CompiledDecoder` that ``--compile`` asks for
    (``auto`` | ``on`` | ``off``; ``long_lived``: a server, which compiles in the background),
    or ``None`` for ``off`` and for ``auto`` with a model that has no static decoding step
    (GPT); ``on`` with such a model is a DataError."""
    if compile == "off":
        return None
    if not uses_static_cache(loaded.model):
        if compile == "on":
            mtype = getattr(loaded.config.model, "type", "?")
            raise DataError(
                f"--compile on needs a LLaMA-family model (a static-shape decoding step); this "
                f"one is {mtype}: use --compile off or auto"
            )
        return None
    return CompiledDecoder(loaded.model, compile, long_lived=long_lived, notice=notice)


def lm_tokenizer(loaded: LoadedModel) -> Any:
    """The tokenizer of a loaded language model (DataError for another kind of model)."""
    if loaded.kind != "lm":
        raise DataError(f"generation needs a language model, this one is {loaded.kind!r}")
    return loaded.tokenizers.get("tgt") or loaded.tokenizers["src"]


def complete_texts(
    loaded: LoadedModel,
    prompts: Sequence[str],
    max_new_tokens: int = 64,
    temperature: float = 0.8,
    top_k: int = 0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    stop: Sequence[str] = (),
    seed: int | None = None,
    on_text: Callable[[int, str], None] | None = None,
    should_stop: ShouldStop | None = None,
    compiled: CompiledDecoder | None = None,
) -> list[Completion]:
    """Continue each prompt with the loaded causal LM (LLaMA: :func:`llm_generate_text`; GPT:
    :func:`generate_text`); one :class:`Completion` per prompt. ``on_text(row, increment)``
    streams the decoded text as it grows; ``should_stop()`` True before a step abandons it;
    ``compiled`` (LLaMA only) decides whether the decoding steps run compiled."""
    tok = lm_tokenizer(loaded)
    out: list[Completion] = []
    sampling: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "repetition_penalty": repetition_penalty,
        "stop": stop,
        "seed": seed,
        "on_text": on_text,
        "completions": out,
        "should_stop": should_stop,
    }
    if uses_static_cache(loaded.model):
        for text in prompts:
            check_context(loaded.model, len(tok.encode(text)), max_new_tokens)
        llm_generate_text(loaded.model, tok, prompts, compiled=compiled, **sampling)
    else:
        generate_text(loaded.model, tok, prompts, **sampling)
    return out


def generate_one(
    loaded: LoadedModel,
    prompt: str,
    max_new_tokens: int = 50,
    temperature: float = 0.8,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    should_stop: ShouldStop | None = None,
    compiled: CompiledDecoder | None = None,
) -> str:
    """The continuation of ``prompt`` by a causal LM (prompt not included); ``should_stop``
    as in :func:`generate_text`, ``compiled`` as in :func:`complete_texts`."""
    return complete_texts(
        loaded,
        [prompt],
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        should_stop=should_stop,
        compiled=compiled,
    )[0].text
