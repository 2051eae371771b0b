"""Request and response bodies of the HTTP API (pydantic models → /docs and /openapi.json).

Owns the JSON shapes; the limits that depend on the server's settings (characters per text,
texts per request, beam size) are checked by :mod:`dhian.serve.app`, which knows them.
Unknown fields are rejected (``extra="forbid"``), so a typo is a 422 naming the field; types
are strict (``"beam": "5"`` or ``true`` is a 422, not 5 or 1) and NaN/Infinity are refused.
Imports: pydantic and the standard library.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AttentionKind",
    "AttentionPayload",
    "AttentionRequest",
    "ClassifyItem",
    "ClassifyRequest",
    "ClassifyResponse",
    "EngineHealth",
    "ErrorResponse",
    "FillMaskCandidate",
    "FillMaskRequest",
    "FillMaskResponse",
    "GenerateRequest",
    "GenerateResponse",
    "Health",
    "TranslateItem",
    "TranslateRequest",
    "TranslateResponse",
]


class _Request(BaseModel):
    # strict: "5" and true are not a beam of 5 and 1 (a 422 names the field); NaN/Infinity
    # (which Python's JSON parser accepts) are refused wherever a number is read
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class TranslateRequest(_Request):
    """One text or a list of texts to translate; ``beam`` 1 = greedy."""

    text: str | list[str] = Field(description="source text, or a list of them")
    beam: int = Field(1, ge=1, description="beam size (1 = greedy decoding)")


class TranslateItem(BaseModel):
    """One translation: display ``tokens`` of the output and its ``log_prob`` (with EOS)."""

    source: str
    translation: str
    tokens: list[str]
    log_prob: float
    truncated: bool = Field(description="the source was cut to the model's maximum length")


class TranslateResponse(BaseModel):
    """Translations in input order."""

    model: str
    results: list[TranslateItem]


class ClassifyRequest(_Request):
    """One text or a list of texts to classify."""

    text: str | list[str]


class ClassifyItem(BaseModel):
    """The predicted ``label`` and the probability of every class."""

    text: str
    label: str
    probs: dict[str, float]


class ClassifyResponse(BaseModel):
    """Classifications in input order."""

    model: str
    results: list[ClassifyItem]


class GenerateRequest(_Request):
    """Continue ``prompt``; ``temperature`` 0 = greedy; ``top_k`` 0 / ``top_p`` 1 = off."""

    prompt: str = ""
    max_new_tokens: int = Field(50, ge=0, le=1024)
    temperature: float = Field(0.8, ge=0.0, le=10.0)
    top_k: int = Field(0, ge=0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, description="for a reproducible sample")


class GenerateResponse(BaseModel):
    """The continuation (prompt not included)."""

    model: str
    prompt: str
    text: str


class FillMaskRequest(_Request):
    """A text with one or more mask tokens (``[MASK]`` or ``<mask>``, see /health)."""

    text: str
    top_k: int = Field(5, ge=1, le=100)


class FillMaskCandidate(BaseModel):
    """One filler of a mask and its probability."""

    token: str
    prob: float


class FillMaskResponse(BaseModel):
    """For every mask token, in text order, its candidates, most probable first."""

    model: str
    masks: list[list[FillMaskCandidate]]


class TagRequest(_Request):
    """One text or a list of texts to tag (named entities, BIO labels)."""

    text: str | list[str]


class TagToken(BaseModel):
    """One word: characters [start, end) of the text, its label and that label's probability."""

    text: str
    start: int
    end: int
    label: str
    prob: float


class TagEntity(BaseModel):
    """One entity span: its type (PER, LOC...), text and characters [start, end)."""

    type: str
    text: str
    start: int
    end: int


class TagItem(BaseModel):
    """The words of one text with their labels, and the entities they make."""

    text: str
    tokens: list[TagToken]
    entities: list[TagEntity]


class TagResponse(BaseModel):
    """Tagged texts in input order."""

    model: str
    results: list[TagItem]


class AnswerRequest(_Request):
    """A question and the context to answer it from (extractive QA)."""

    question: str
    context: str
    max_answer_len: int = Field(30, ge=1, le=512, description="tokens")
    null_threshold: float | None = Field(
        None, description="SQuAD v2: answer nothing when the no-answer score wins by more"
    )


class AnswerResponse(BaseModel):
    """The answer span ``context[start:end]`` ("" = no answer) and its scores."""

    model: str
    question: str
    text: str
    start: int
    end: int
    score: float
    null_score: float


class AttentionRequest(_Request):
    """The text whose attention to return; ``target`` (translation only) is teacher-forced,
    otherwise the model decodes the text greedily; ``context`` (question answering only) is
    the second segment, after the question in ``text``."""

    text: str
    target: str | None = None
    context: str | None = None


class AttentionKind(BaseModel):
    """One attention kind of the viewer payload: (L, H, Tq, Tk) weights, quantised and
    base64-encoded (see dhian.viz.payload)."""

    id: str
    label: str
    query: str
    key: str
    layers: int
    heads: int
    tq: int
    tk: int
    encoding: str
    compression: str
    data: str
    head_labels: list[str] | None = Field(
        None, description="a name per head, e.g. 'h3 (kv1)': the KV head a grouped-query head reads"
    )


class AttentionTokens(BaseModel):
    """Source tokens and, for translation, the output tokens."""

    src: list[str]
    tgt: list[str] | None = None


class AttentionPayload(BaseModel):
    """The attention viewer's data (``window.dhianViewer.render(el, payload)``)."""

    version: int
    title: str
    meta: dict[str, Any]
    tokens: AttentionTokens
    kinds: list[AttentionKind]


class EngineHealth(BaseModel):
    """The generation worker of a LLaMA-family LM (continuous batching of ``/v1`` requests)."""

    rows: int = Field(description="requests decoded together at most (--llm-batch)")
    context: int = Field(description="tokens (prompt + new) per request at most")
    active: int = Field(description="rows in use now")
    waiting: int = Field(description="requests waiting for a row")
    requests: int = Field(description="requests answered since start")
    cancelled: int = Field(description="requests abandoned (client left, timeout)")


class Health(BaseModel):
    """What the server runs and how busy it is."""

    status: str
    name: str
    kind: str
    model_type: str
    endpoints: list[str]
    uptime_s: float
    queue_depth: int
    in_flight: int
    max_queue: int
    max_batch: int
    max_chars: int
    max_beam: int
    batches: int
    requests: int
    mask_token: str | None = None
    chat: bool = Field(False, description="a causal LM with a chat template (/v1/chat/completions)")
    engine: EngineHealth | None = None


class ErrorResponse(BaseModel):
    """Every error: one line saying what is wrong and how to fix it."""

    error: str
    detail: Any = None
