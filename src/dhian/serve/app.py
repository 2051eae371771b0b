"""The HTTP API: a FastAPI app around one loaded model, every model call through a batcher.

Owns :class:`ServeSettings` and :func:`create_app`. Endpoints (JSON in/out, schemas in
:mod:`dhian.serve.schemas`, so ``/docs`` and ``/openapi.json`` describe them):

- ``POST /translate`` (translation), ``/classify`` (classifiers), ``/generate`` (GPT, LLaMA),
  ``/fill-mask`` (BERT MLM), ``/tag`` (token classifiers: words, labels, entity spans),
  ``/answer`` (extractive QA: question + context → span), ``/attention`` (every model with
  attention) → the viewer payload;
- causal LMs also get the OpenAI-compatible ``/v1/chat/completions``, ``/v1/completions`` and
  ``/v1/models`` (:mod:`dhian.serve.openai_api`; errors there in OpenAI's shape);
- ``GET /health`` — model kind, name, uptime, queue depth, batch counters; ``GET /`` the page.

Errors are ``{"error": one line, "detail": ...}``: 400 malformed JSON or an endpoint the model
kind lacks (the message names the kind and its endpoints), 413 a body over the byte limit or a
text over ``max_chars`` / more texts than ``max_batch``, 422 a missing or invalid field or an
input the model rejects, 503 + ``Retry-After`` when ``max_queue`` requests wait (or during
shutdown), 504 when a request is not answered within ``timeout`` seconds, 408 when its body does
not arrive within ``read_timeout`` (:class:`dhian.serve.connections.ReadDeadline`). A request
that times out or whose client disconnects abandons its job: its decoding stops at the next
step (:meth:`Batcher.should_stop`, :mod:`dhian.decoding.cancel`).
Translate, classify and tag requests arriving together run as one model batch
(:class:`dhian.serve.batching.Batcher`). A LLaMA-family LM's ``/v1`` requests run on its
generation worker instead (:class:`dhian.serve.engine_worker.EngineWorker`: continuous
batching, ``llm_batch`` rows); the worker's steps and the batcher's calls take turns on the
model (``Service.model_lock``), so the model is used by one thread at a time, and both hand
their work to the process's compute thread (:mod:`dhian.nn.compute_thread`: one libgomp team).
Imports: fastapi, starlette, :mod:`dhian.serve` (batching, engine_worker, schemas, page,
limits, openai_api), :mod:`dhian.inference`, :mod:`dhian.models.model_dir`, :mod:`dhian.text`
(clean_text), :mod:`dhian.errors`, :mod:`dhian.nn.compute_thread`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from concurrent.futures import Future
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from dhian.errors import DhianError
from dhian.inference import capabilities
from dhian.inference.answer import answer_one
from dhian.inference.attention_maps import extract_attention
from dhian.inference.chat import has_chat_template
from dhian.inference.classify import classify_texts
from dhian.inference.fill_mask import fill_mask_one
from dhian.inference.generate import (
    Completion,
    compiled_decoder,
    context_size,
    generate_one,
    lm_tokenizer,
)
from dhian.inference.tag import tag_texts
from dhian.inference.text_engine import TextEngine, supports_engine
from dhian.inference.translate import translate_batch
from dhian.models.model_dir import LoadedModel
from dhian.nn.compute_thread import on_compute_thread
from dhian.serve import schemas
from dhian.serve.batching import Batcher, QueueFull, ShuttingDown
from dhian.serve.connections import ConnectionLimits, ReadDeadline
from dhian.serve.engine_worker import EngineWorker
from dhian.serve.limits import (
    OPENAI_PREFIX,
    ApiError,
    BodyLimit,
    field_path,
    validation_message,
)
from dhian.serve.openai_api import CompletionJob, add_openai_routes
from dhian.serve.page import page_html
from dhian.text import clean_text

__all__ = ["Generation", "ServeSettings", "create_app"]

log = logging.getLogger("dhian.serve")

#: What model each task endpoint needs, for the wrong-endpoint message.
_NEEDS = {
    "/translate": "translation",
    "/classify": "classification",
    "/generate": "language model (lm)",
    "/fill-mask": "masked-LM (mlm)",
    "/tag": "token classifier (token_classification)",
    "/answer": "question-answering (question_answering)",
    "/attention": "model with attention",
}


@dataclasses.dataclass(frozen=True)
class ServeSettings:
    """Limits of the server. ``max_batch``: most texts per model call (and per request);
    ``max_queue``: most waiting requests before 503; ``timeout``: seconds per request before
    504; ``max_chars``: characters per text; ``batch_wait_ms``: how long the worker waits for
    more requests to batch; ``max_beam``; ``max_body_bytes`` (default from the others);
    ``read_timeout``: seconds a request's headers, then its body, may take to arrive (408);
    ``max_connections`` / ``max_connections_per_client``: open connections in all / from one
    address (beyond: 503 / 429, the connection closed); ``max_new_tokens``: most new tokens
    one ``/v1`` request may ask for. A LLaMA-family LM decodes its ``/v1`` requests together
    (:mod:`dhian.serve.engine_worker`): ``llm_batch`` rows at once, each holding up to
    ``llm_context`` tokens (prompt + new, capped by the model's context); the KV cache of
    ``llm_batch × llm_context`` slots is allocated when the app is created. ``compile``:
    ``auto`` | ``on`` | ``off``, whether a LLaMA model's decoding step is compiled (in the
    background, requests decode eagerly until it is ready; :mod:`dhian.decoding.compiled_step`)."""

    max_batch: int = 16
    max_queue: int = 64
    timeout: float = 30.0
    max_chars: int = 2000
    batch_wait_ms: float = 5.0
    max_beam: int = 16
    max_new_tokens: int = 1024
    max_body_bytes: int | None = None
    read_timeout: float = 10.0
    max_connections: int = 512
    max_connections_per_client: int = 64
    llm_batch: int = 8
    llm_context: int = 2048
    compile: str = "off"

    def connection_limits(self) -> ConnectionLimits:
        """The socket-level limits (:mod:`dhian.serve.connections`)."""
        return ConnectionLimits(
            per_client=self.max_connections_per_client,
            total=self.max_connections,
            read_timeout=self.read_timeout,
        )

    def body_limit(self) -> int:
        """Bytes a request body may have: room for ``max_batch`` escaped texts, plus slack."""
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        return 12 * self.max_chars * self.max_batch + 16_384


@dataclasses.dataclass(frozen=True)
class Generation:
    """A submitted ``/v1`` generation: ``future`` (its completions; ``None`` once abandoned),
    ``abandon()`` (nobody waits any more: stop it) and ``batched`` (on the batcher, whose
    future holds ``[completions]``)."""

    future: Future[Any]
    abandon: Callable[[], None]
    batched: bool = False

    def completions(self) -> list[Completion] | None:
        """The finished future's completions (``None``: abandoned or its client left)."""
        out = self.future.result()
        return out[0] if self.batched else out


class Service:
    """The model, its batcher (and for a LLaMA-family LM its generation worker) and what the
    server says about them."""

    def __init__(self, loaded: LoadedModel, settings: ServeSettings, name: str) -> None:
        self.loaded, self.settings, self.name = loaded, settings, name
        self.kind = loaded.kind
        self.model_type = capabilities.model_type(loaded)
        self.endpoints = capabilities.endpoints_for(loaded)
        self.started = time.monotonic()
        self.compiled = (
            compiled_decoder(loaded, settings.compile, long_lived=True, notice=log.info)
            if self.kind == "lm"
            else None
        )
        tok = loaded.tokenizers.get("src")
        self.mask_token: str | None = None
        if self.kind == "mlm" and tok is not None:
            with contextlib.suppress(Exception):
                self.mask_token = str(tok.id_to_token(int(tok.mask_id)))
        # the batcher's handlers and the generation worker's steps take turns on the model
        self.model_lock = threading.Lock()
        self.worker: EngineWorker | None = None
        if self.kind == "lm" and supports_engine(loaded.model):
            context = min(context_size(loaded.model), settings.llm_context)
            engine = TextEngine(loaded.model, lm_tokenizer(loaded), settings.llm_batch, context)
            self.worker = EngineWorker(engine, settings.max_queue, self.model_lock)
        handlers: dict[str, Callable[[Any, list[Any]], list[Any]]] = {
            "translate": self._translate,
            "classify": self._classify,
            "generate": self._generate,
            "fill_mask": self._fill_mask,
            "tag": self._tag,
            "answer": self._answer,
            "attention": self._attention,
            "complete": self._complete,
        }
        self.batcher = Batcher(
            {op: self._locked(fn) for op, fn in handlers.items()},
            batched=("translate", "classify", "tag"),
            max_batch=settings.max_batch,
            max_queue=settings.max_queue,
            max_wait=settings.batch_wait_ms / 1000.0,
        )

    def _locked(self, fn: Callable[[Any, list[Any]], list[Any]]) -> Callable[..., list[Any]]:
        def run(params: Any, items: list[Any]) -> list[Any]:
            with self.model_lock:
                return on_compute_thread(fn, params, items)  # one torch thread: see there

        return run

    @property
    def context(self) -> int:
        """Tokens (prompt + new) one generation may use: the engine's rows, else the model's
        context (a GPT slides its window: its ``block_size``, reported only)."""
        if self.worker is not None:
            return self.worker.engine.context
        return context_size(self.loaded.model)

    # handlers: run on the batcher's thread, one result per item
    def _translate(self, params: Any, texts: list[str]) -> list[Any]:
        return translate_batch(
            self.loaded, texts, beam=int(params), should_stop=self.batcher.should_stop
        )

    def _classify(self, _params: Any, texts: list[str]) -> list[Any]:
        return classify_texts(self.loaded, texts)

    def _generate(self, params: Any, prompts: list[str]) -> list[Any]:
        max_new, temperature, top_k, top_p, seed = params
        stop = self.batcher.should_stop
        return [
            generate_one(
                self.loaded, p, max_new, temperature, top_k, top_p, seed, stop, self.compiled
            )
            for p in prompts
        ]

    def _complete(self, _params: Any, jobs: list[CompletionJob]) -> list[Any]:
        return [job.run(self.loaded, self.compiled) for job in jobs]

    def _fill_mask(self, params: Any, texts: list[str]) -> list[Any]:
        return [fill_mask_one(self.loaded, t, int(params)) for t in texts]

    def _tag(self, _params: Any, texts: list[str]) -> list[Any]:
        return tag_texts(self.loaded, texts)

    def _answer(self, params: Any, pairs: list[tuple[str, str]]) -> list[Any]:
        max_answer_len, null_threshold = params
        return [
            answer_one(
                self.loaded, q, c, max_answer_len=max_answer_len, null_threshold=null_threshold
            )
            for q, c in pairs
        ]

    def _attention(self, params: Any, texts: list[str]) -> list[Any]:
        target, context = params
        title = f"{self.name} attention"
        return [
            extract_attention(self.loaded, t, target, context=context).payload(title) for t in texts
        ]

    def info(self) -> dict[str, Any]:
        """The /health body."""
        stats = self.batcher.stats
        worker = self.worker
        engine = None
        if worker is not None:
            engine = {
                "rows": worker.engine.max_batch,
                "context": worker.engine.context,
                "active": worker.active,
                "waiting": worker.depth,
                "requests": worker.stats.requests,
                "cancelled": worker.stats.cancelled,
            }
        return {
            "status": "ok",
            "name": self.name,
            "kind": self.kind,
            "model_type": self.model_type,
            "endpoints": self.endpoints,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "queue_depth": self.batcher.depth + (worker.depth if worker else 0),
            "in_flight": self.batcher.in_flight + (worker.in_flight if worker else 0),
            "max_queue": self.settings.max_queue,
            "max_batch": self.settings.max_batch,
            "max_chars": self.settings.max_chars,
            "max_beam": self.settings.max_beam,
            "batches": stats.calls,
            "requests": stats.jobs,
            "mask_token": self.mask_token,
            "chat": has_chat_template(self.loaded),
            "engine": engine,
        }

    # request side
    def require(self, endpoint: str) -> None:
        """ApiError 400 unless this model kind serves ``endpoint``."""
        if endpoint not in self.endpoints:
            offer = ", ".join(f"POST {e}" for e in self.endpoints) or "none"
            raise ApiError(
                400,
                f"{endpoint} needs a {_NEEDS[endpoint]} model, but this server runs "
                f"{self.name!r}, a {self.kind!r} model ({self.model_type}); "
                f"its endpoints: {offer}",
            )

    def texts(self, value: str | list[str], field: str = "text") -> list[str]:
        """The text(s) of a request, checked against ``max_chars`` and ``max_batch``; lone
        surrogates (JSON ``"\\udc80"``) become U+FFFD, so echoing a text back is valid UTF-8."""
        texts = [clean_text(value)] if isinstance(value, str) else [clean_text(t) for t in value]
        limit = self.settings
        if not texts:
            raise ApiError(422, f"{field} is an empty list; give at least one text")
        if len(texts) > limit.max_batch:
            raise ApiError(
                413,
                f"{len(texts)} texts in one request; the limit is {limit.max_batch} "
                "(--max-batch): split the list",
            )
        for i, t in enumerate(texts):
            if len(t) > limit.max_chars:
                where = field if isinstance(value, str) else f"{field}[{i}]"
                raise ApiError(
                    413,
                    f"{where} has {len(t)} characters; the limit is {limit.max_chars} "
                    "(--max-chars): shorten it",
                )
        return texts

    async def run(
        self, op: str, params: Hashable, items: Sequence[Any], request: Request | None = None
    ) -> list[Any]:
        """Submit to the batcher and wait, mapping queue/timeout/model errors to ApiError.

        When the request times out, or its client disconnects (``request`` given: checked
        every :data:`DISCONNECT_POLL_S`), the job is abandoned: dropped if still queued, and
        its decoding stops at the next step if it runs (:meth:`Batcher.abandon`)."""
        future = admitted(lambda: self.batcher.submit(op, params, items))
        result: list[Any] = await self.wait(future, lambda: self.batcher.abandon(future), request)
        return result

    def generation(
        self,
        prompts: list[str],
        sampling: dict[str, Any],
        on_text: Callable[[int, str], None] | None = None,
    ) -> Generation:
        """Submit a ``/v1`` generation (``sampling``: the keywords of
        :func:`dhian.inference.generate.complete_texts`): to the generation worker for a
        LLaMA-family LM (continuous batching), else to the batcher (op ``complete``, one
        request per call). ApiError 503 when the queue is full or the server is stopping."""
        worker = self.worker
        if worker is not None:
            future = admitted(lambda: worker.submit(prompts, sampling, on_text))
            return Generation(future, lambda: worker.abandon(future))
        job = CompletionJob(prompts, sampling, on_text)
        queued = admitted(lambda: self.batcher.submit("complete", None, [job]))
        return Generation(queued, lambda: self.batcher.abandon(queued), batched=True)

    async def complete(
        self, prompts: list[str], sampling: dict[str, Any], request: Request | None = None
    ) -> list[Completion]:
        """:meth:`generation`, waited for as :meth:`run` waits (504 on timeout, abandoned
        when the client leaves)."""
        gen = self.generation(prompts, sampling)
        await self.wait(gen.future, gen.abandon, request)
        done = gen.completions()
        if done is None:  # abandoned meanwhile (the server is stopping its work)
            raise ApiError(499, "the request was abandoned")
        return done

    async def wait(
        self, future: Future[Any], abandon: Callable[[], None], request: Request | None = None
    ) -> Any:
        """The result of ``future``; on timeout (504) or when ``request``'s client leaves (499)
        ``abandon()`` is called first; a model error is a 422."""
        timeout = self.settings.timeout
        try:
            return await asyncio.wait_for(_answer_or_leave(future, request), timeout)
        except ClientLeft as exc:
            abandon()
            raise ApiError(499, "the client closed the connection") from exc
        except asyncio.CancelledError:
            abandon()
            raise
        except TimeoutError as exc:
            abandon()
            raise ApiError(
                504, f"no answer within {timeout:g} s (--timeout); send shorter or fewer texts"
            ) from exc
        except (DhianError, ValueError) as exc:
            raise ApiError(
                422, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            ) from exc


def admitted(submit: Callable[[], Future[Any]]) -> Future[Any]:
    """``submit()``, its QueueFull / ShuttingDown as ApiError 503 with ``Retry-After``."""
    try:
        return submit()
    except QueueFull as exc:
        raise ApiError(
            503, f"server busy: {exc}; retry in a second", headers={"Retry-After": "1"}
        ) from exc
    except ShuttingDown as exc:
        raise ApiError(503, f"{exc}; retry later", headers={"Retry-After": "5"}) from exc


#: Seconds between checks whether a waiting request's client is still connected.
DISCONNECT_POLL_S = 0.25


class ClientLeft(Exception):
    """The client of a waiting request disconnected."""


async def _answer_or_leave(future: Future[list[Any]], request: Request | None) -> list[Any]:
    """The future's result; :class:`ClientLeft` as soon as ``request``'s client is gone."""
    waiting = asyncio.wrap_future(future)
    if request is None:
        return await waiting
    while True:
        done, _ = await asyncio.wait({waiting}, timeout=DISCONNECT_POLL_S)
        if done:
            return waiting.result()
        if await request.is_disconnected():
            waiting.cancel()
            raise ClientLeft


def create_app(
    loaded: LoadedModel, settings: ServeSettings | None = None, name: str = "model"
) -> FastAPI:
    """A FastAPI app serving ``loaded`` (its batcher starts and stops with the app's lifespan;
    use ``with TestClient(app)`` or uvicorn). ``app.state.service`` holds the :class:`Service`."""
    settings = settings or ServeSettings()
    service = Service(loaded, settings, name)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        service.batcher.start()
        if service.worker is not None:
            service.worker.start()
        log.info(
            "serving %s (%s, %s): %s", name, service.kind, service.model_type, service.endpoints
        )
        yield
        if service.worker is not None:
            await asyncio.to_thread(service.worker.stop)  # finish the running generations
        await asyncio.to_thread(service.batcher.stop)  # finish what is queued

    app = FastAPI(
        title=f"dhian · {name}",
        description=f"A {service.kind} model ({service.model_type}). "
        f"Endpoints for it: {', '.join(service.endpoints)}.",
        lifespan=lifespan,
        responses={
            code: {"model": schemas.ErrorResponse} for code in (400, 408, 413, 422, 503, 504)
        },
    )
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=settings.body_limit())
    app.add_middleware(ReadDeadline, seconds=settings.read_timeout)  # outermost: wraps receive
    _add_error_handlers(app)
    _add_routes(app, service)
    if service.kind == "lm":
        add_openai_routes(app, service)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response_for(request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        status, message = validation_message(errors, request.url.path)
        if status == 422 and request.url.path.startswith(OPENAI_PREFIX):
            status = 400  # OpenAI answers an invalid argument with 400
        param = field_path(errors[0].get("loc", ())) if errors else None
        error = ApiError(status, message, detail=_jsonable(errors), param=param or None)
        return error.response_for(request.url.path)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        message = f"internal error ({type(exc).__name__}: {exc}); see the server log"
        return ApiError(500, message.splitlines()[0]).response_for(request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path}; see /docs"
        elif exc.status_code == 405:
            message = f"{request.url.path} does not accept {request.method}; see /docs"
        error = ApiError(exc.status_code, message, headers=dict(exc.headers or {}))
        return error.response_for(request.url.path)


def _jsonable(errors: Sequence[Any]) -> list[dict[str, Any]]:
    return [
        {"type": e.get("type"), "loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in errors
    ]


def _add_routes(app: FastAPI, service: Service) -> None:

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(page_html(service.info()))

    @app.get("/health", response_model=schemas.Health)
    async def health() -> dict[str, Any]:
        return service.info()

    @app.post("/translate", response_model=schemas.TranslateResponse)
    async def translate(req: schemas.TranslateRequest, request: Request) -> dict[str, Any]:
        service.require("/translate")
        if req.beam > service.settings.max_beam:
            raise ApiError(422, f"beam {req.beam} is above the limit {service.settings.max_beam}")
        out = await service.run("translate", req.beam, service.texts(req.text), request)
        return {"model": service.name, "results": out}

    @app.post("/classify", response_model=schemas.ClassifyResponse)
    async def classify(req: schemas.ClassifyRequest) -> dict[str, Any]:
        service.require("/classify")
        out = await service.run("classify", None, service.texts(req.text))
        return {"model": service.name, "results": out}

    @app.post("/generate", response_model=schemas.GenerateResponse)
    async def generate(req: schemas.GenerateRequest, request: Request) -> dict[str, Any]:
        service.require("/generate")
        prompt = service.texts(req.prompt, "prompt")[0]
        params = (req.max_new_tokens, req.temperature, req.top_k, req.top_p, req.seed)
        out = await service.run("generate", params, [prompt], request)
        return {"model": service.name, "prompt": prompt, "text": out[0]}

    @app.post("/fill-mask", response_model=schemas.FillMaskResponse)
    async def fill_mask(req: schemas.FillMaskRequest) -> dict[str, Any]:
        service.require("/fill-mask")
        out = await service.run("fill_mask", req.top_k, service.texts(req.text))
        return {"model": service.name, "masks": out[0]}

    @app.post("/tag", response_model=schemas.TagResponse)
    async def tag(req: schemas.TagRequest) -> dict[str, Any]:
        service.require("/tag")
        out = await service.run("tag", None, service.texts(req.text))
        return {"model": service.name, "results": out}

    @app.post("/answer", response_model=schemas.AnswerResponse)
    async def answer(req: schemas.AnswerRequest) -> dict[str, Any]:
        service.require("/answer")
        question = service.texts(req.question, "question")[0]
        context = service.texts(req.context, "context")[0]
        params = (req.max_answer_len, req.null_threshold)
        out = await service.run("answer", params, [(question, context)])
        return {"model": service.name, "question": question, **out[0]}

    @app.post("/attention", response_model=schemas.AttentionPayload)
    async def attention(req: schemas.AttentionRequest) -> dict[str, Any]:
        service.require("/attention")
        text = service.texts(req.text)[0]
        target = None
        if req.target is not None:
            if service.kind != "translation":
                raise ApiError(
                    422, f"target is only for translation models; this is a {service.kind!r} model"
                )
            target = service.texts(req.target, "target")[0]
        context = None
        if req.context is not None:
            if service.kind != "question_answering":
                raise ApiError(
                    422,
                    "context is only for question-answering models; "
                    f"this is a {service.kind!r} model",
                )
            context = service.texts(req.context, "context")[0]
        out = await service.run("attention", (target, context), [text])
        return dict(out[0])
