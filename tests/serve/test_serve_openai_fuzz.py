"""Property-based robustness of the OpenAI-compatible routes of a served LLaMA (continuous
batching engine) with hypothesis and FastAPI's TestClient.

Random bodies go to ``/v1/chat/completions`` and ``/v1/completions``: the routes' fields with
fitting values, the same fields with any JSON (huge numbers, NaN/Infinity literals, NaN-like
strings, nested junk), unknown fields, any JSON at all, unicode with lone surrogates, raw
bytes; streamed or not. Whatever arrives: a 200 of OpenAI's shape (a stream ends with
``data: [DONE]`` and carries no error), or a 4xx with OpenAI's error object (one-line message);
never a 5xx, never a hang; every text is valid UTF-8, and the engine is idle again after each
request (nothing left running or queued), so the server stays usable.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

pytest.importorskip("fastapi", reason="pip install fastapi httpx")
from fastapi.testclient import TestClient

from dhian.inference.load import load_model
from dhian.serve.app import ServeSettings, create_app
from helpers.timing import time_limit
from helpers.tiny_llama import save_tiny_llama

NAME = "tiny-llama"
SETTINGS = ServeSettings(max_batch=4, max_new_tokens=8, llm_batch=4, timeout=10.0)
FUZZ = settings(
    max_examples=40,
    deadline=timedelta(seconds=8),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def app_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Any]]:
    loaded = load_model(save_tiny_llama(tmp_path_factory.mktemp("llama") / "model"))
    app = create_app(loaded, SETTINGS, name=NAME)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, app.state.service


# --------------------------------------------------------------------------- strategies

SURROGATE = st.integers(0xD800, 0xDFFF).map(chr)
CHUNK = st.one_of(
    st.text(max_size=20),
    st.text(st.one_of(st.characters(), SURROGATE), max_size=8),
    st.sampled_from(["Hello", "<|im_start|>", "<|im_end|>", "</s>", "", " ", "\x00", "\u200b"]),
    st.sampled_from(["NaN", "Infinity", "-inf", "1e999", "null", "true", "0x10"]),
)
TEXT = st.one_of(
    st.lists(CHUNK, max_size=5).map(" ".join), st.integers(100, 400).map("word ".__mul__)
)
NUMBER = st.one_of(
    st.integers(-3, 12),
    st.sampled_from([0, 1, 8, 9, 2**31, 2**63, 2**64, -(2**63), 10**30, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),  # json.dumps writes NaN / Infinity
    st.sampled_from([1e-300, 5e-324, -0.0, 1e308]),
)
LEAF = st.one_of(st.none(), st.booleans(), NUMBER, TEXT)
ANY_JSON = st.recursive(
    LEAF,
    lambda c: (
        st.lists(c, max_size=4)
        | st.dictionaries(st.text(st.one_of(st.characters(), SURROGATE), max_size=8), c, max_size=4)
    ),
    max_leaves=8,
)
ROLE = st.sampled_from(["user", "user", "system", "assistant", "tool", "", "USER"])
MESSAGE = st.fixed_dictionaries(
    {"role": ROLE, "content": TEXT}, optional={"name": st.text(max_size=5)}
)
SAMPLING: dict[str, st.SearchStrategy[Any]] = {
    "max_tokens": st.integers(0, 9),
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0, 1, exclude_min=True),
    "top_k": st.integers(0, 60_000),
    "seed": st.integers(0, 2**63 - 1),
    "repetition_penalty": st.floats(0.01, 100),
    "stop": st.one_of(TEXT, st.lists(TEXT, max_size=3)),
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "n": st.just(1),
    "user": st.text(max_size=8),
}
FIELDS = {
    "/v1/chat/completions": {
        "messages": st.lists(MESSAGE, max_size=4),
        "max_completion_tokens": st.integers(0, 9),
        **SAMPLING,
    },
    "/v1/completions": {
        "prompt": st.one_of(TEXT, st.lists(TEXT, max_size=6)),
        "echo": st.booleans(),
        **SAMPLING,
    },
}


def bodies(route: str) -> st.SearchStrategy[bytes]:
    """Well-formed bodies (every field in range), bodies whose fields may hold any JSON (and
    an unknown field), any JSON at all, and raw bytes."""
    fields = FIELDS[route]
    main = "messages" if "chat" in route else "prompt"
    rest = {k: v for k, v in fields.items() if k != main}
    model = st.just(NAME) | st.just(NAME) | st.text(max_size=10)
    fitting = st.fixed_dictionaries({"model": model, main: fields[main]}, optional=rest)
    fuzzed = st.fixed_dictionaries(
        {},
        optional={
            "model": model | ANY_JSON,
            **{k: v | ANY_JSON for k, v in fields.items()},
            "logprobs": ANY_JSON,
        },
    )
    as_json = st.one_of(fitting, fitting, fitting, fuzzed, ANY_JSON).map(
        lambda v: json.dumps(v).encode()  # NaN / Infinity literals, lone surrogates as \udXXX
    )
    return st.one_of(as_json, as_json, as_json, as_json, st.binary(max_size=200))


# --------------------------------------------------------------------------- checks


def no_surrogates(value: Any) -> bool:
    if isinstance(value, str):
        return not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, list):
        return all(no_surrogates(v) for v in value)
    if isinstance(value, dict):
        return all(no_surrogates(k) and no_surrogates(v) for k, v in value.items())
    return True


def check_answer(route: str, r: Any) -> None:
    """A 200 of OpenAI's shape or an OpenAI-shaped 4xx (see the module docstring)."""
    assert r.status_code in (200, 400, 404, 413), (r.status_code, r.text[:300])
    if r.status_code != 200:
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        assert error["message"].strip() and "\n" not in error["message"], error
        assert error["type"] == "invalid_request_error"
        return
    if r.headers["content-type"].startswith("text/event-stream"):
        lines = [line for line in r.text.split("\n") if line]
        assert lines[-1] == "data: [DONE]", lines[-3:]
        for line in lines[:-1]:
            chunk = json.loads(line.removeprefix("data: "))
            assert "error" not in chunk, chunk
            assert no_surrogates(chunk)
        return
    out = r.json()
    assert out["object"] == ("chat.completion" if "chat" in route else "text_completion")
    assert out["choices"] and no_surrogates(out)
    for choice in out["choices"]:
        assert choice["finish_reason"] in ("stop", "length")
    usage = out["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["completion_tokens"] <= SETTINGS.max_new_tokens * len(out["choices"])


def fuzz(app_client: tuple[TestClient, Any], route: str, body: bytes) -> None:
    client, service = app_client
    with time_limit(30):
        r = client.post(route, content=body, headers={"content-type": "application/json"})
    event(f"status {r.status_code}")  # --hypothesis-show-statistics: how many got through
    check_answer(route, r)
    worker = service.worker
    assert worker.in_flight == 0 and worker.active == 0 and not worker.engine.busy


# --------------------------------------------------------------------------- tests


@FUZZ
@given(body=bodies("/v1/chat/completions"))
def test_chat_completions_take_anything(app_client: tuple[TestClient, Any], body: bytes) -> None:
    fuzz(app_client, "/v1/chat/completions", body)


@FUZZ
@given(body=bodies("/v1/completions"))
def test_completions_take_anything(app_client: tuple[TestClient, Any], body: bytes) -> None:
    fuzz(app_client, "/v1/completions", body)


def test_the_server_is_usable_after_the_fuzzing(app_client: tuple[TestClient, Any]) -> None:
    """Runs after the two above (file order): a plain request is answered, and every request
    the engine took was answered or cancelled, none failed."""
    client, service = app_client
    body = {"model": NAME, "prompt": "Once upon a time", "max_tokens": 3, "temperature": 0}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
    assert service.worker.stats.failed == 0
    assert client.get("/health").json()["engine"]["active"] == 0
