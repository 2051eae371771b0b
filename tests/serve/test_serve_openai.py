"""The OpenAI-compatible routes, driven by the official ``openai`` client against a real uvicorn
server on 127.0.0.1: chat and text completions, non-streamed and streamed (SSE ending with
``data: [DONE]``), ``/v1/models``, and every bad request as a 4xx in OpenAI's error shape.
A tiny random llama with the SmolLM2 tokenizer keeps it fast; one test uses SmolLM2 itself."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from server_proc import serve_in_thread

from dhian.inference.chat import chat_reply
from dhian.inference.generate import complete_texts
from dhian.inference.load import load_model
from dhian.models.model_dir import LoadedModel
from dhian.serve.app import ServeSettings, create_app
from helpers.tiny_llama import save_tiny_llama

NAME = "tiny-llama"
HI = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load_model(save_tiny_llama(tmp_path_factory.mktemp("llama") / "model"))


@contextmanager
def live(loaded: LoadedModel, name: str = NAME, **settings: Any) -> Iterator[str]:
    """Serve ``loaded`` with uvicorn on a free loopback port; yield the base URL."""
    with serve_in_thread(create_app(loaded, ServeSettings(**settings), name=name)) as url:
        yield url


@pytest.fixture(scope="module")
def server(tiny: LoadedModel) -> Iterator[str]:
    with live(tiny, max_new_tokens=24) as url:
        yield url


def client(url: str) -> Any:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_chat_completion_matches_the_library(tiny: LoadedModel, server: str) -> None:
    want = chat_reply(tiny, HI, max_new_tokens=6, temperature=0.0)
    r = client(server).chat.completions.create(model=NAME, messages=HI, max_tokens=6, temperature=0)
    assert r.object == "chat.completion" and r.model == NAME and r.id.startswith("chatcmpl-")
    assert len(r.choices) == 1 and r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == want.text
    assert r.choices[0].finish_reason == "length" == want.finish_reason
    assert r.usage.prompt_tokens == want.prompt_tokens > 5
    assert r.usage.completion_tokens == 6 and r.usage.total_tokens == want.prompt_tokens + 6


def test_chat_stream_adds_up_to_the_same_reply(tiny: LoadedModel, server: str) -> None:
    want = chat_reply(tiny, HI, max_new_tokens=7, temperature=0.0).text
    chunks = list(
        client(server).chat.completions.create(
            model=NAME,
            messages=HI,
            max_tokens=7,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == want
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 7


def test_raw_sse_lines_end_with_done(server: str) -> None:
    body = {"model": NAME, "prompt": "Once upon a time", "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{server}/v1/completions", json=body, timeout=60) as res:
        assert res.status_code == 200
        assert res.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in res.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_completions_batch_stop_string_and_stream(tiny: LoadedModel, server: str) -> None:
    prompts = ["Once upon a time", "The weather today"]
    want = complete_texts(tiny, prompts, max_new_tokens=8, temperature=0.0)
    api = client(server)
    r = api.completions.create(model=NAME, prompt=prompts, max_tokens=8, temperature=0)
    assert r.object == "text_completion"
    assert [c.text for c in r.choices] == [w.text for w in want]
    assert [c.index for c in r.choices] == [0, 1]
    assert r.usage.completion_tokens == 16
    stop = want[0].text[len(want[0].text) // 2 :][:3]  # a piece of the greedy continuation
    cut = want[0].text[: want[0].text.index(stop)]
    r = api.completions.create(
        model=NAME, prompt=prompts[0], max_tokens=8, temperature=0, stop=stop
    )
    assert r.choices[0].text == cut and r.choices[0].finish_reason == "stop"
    streamed = api.completions.create(
        model=NAME, prompt=prompts[0], max_tokens=8, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == want[0].text


def test_without_max_tokens_the_reply_fits_the_context(tiny: LoadedModel, server: str) -> None:
    tok = tiny.tokenizers["src"]
    prompt = "word " * 110
    room = 128 - len(tok.encode(prompt))
    assert 0 < room < 24  # so the room left, not the server's limit (24), bounds the reply
    r = client(server).completions.create(model=NAME, prompt=prompt, temperature=0)
    assert r.usage.completion_tokens == min(16, room)  # OpenAI's default of 16, bounded
    messages = [{"role": "user", "content": "word " * 80}]
    r = client(server).chat.completions.create(model=NAME, messages=messages, temperature=0)
    assert r.usage.prompt_tokens + r.usage.completion_tokens == 128
    assert r.choices[0].finish_reason == "length"


def test_models_lists_the_served_model(server: str) -> None:
    models = list(client(server).models.list())
    assert [m.id for m in models] == [NAME] and models[0].owned_by == "dhian"


def _error(res: httpx.Response, status: int) -> dict[str, Any]:
    assert res.status_code == status, res.text
    body = res.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"] and "\n" not in body["error"]["message"]
    assert body["error"]["type"] == "invalid_request_error"
    return dict(body["error"])


def test_bad_requests_get_openai_shaped_4xx(server: str) -> None:
    chat = f"{server}/v1/chat/completions"
    unknown = _error(httpx.post(chat, json={"model": "gpt-4o", "messages": HI}), 404)
    assert unknown["code"] == "model_not_found" and "tiny-llama" in unknown["message"]
    empty = _error(httpx.post(chat, json={"model": NAME, "messages": []}), 400)
    assert empty["param"] == "messages" and "empty" in empty["message"]
    role = _error(
        httpx.post(chat, json={"model": NAME, "messages": [{"role": "x", "content": "a"}]}), 400
    )
    assert "role" in role["message"]
    over = _error(httpx.post(chat, json={"model": NAME, "messages": HI, "max_tokens": 25}), 400)
    assert over["param"] == "max_tokens" and "24" in over["message"]
    long = [{"role": "user", "content": "word " * 200}]
    ctx = _error(httpx.post(chat, json={"model": NAME, "messages": long, "max_tokens": 4}), 400)
    assert ctx["code"] == "context_length_exceeded" and "128" in ctx["message"]
    typo = _error(httpx.post(chat, json={"model": NAME, "messages": HI, "temprature": 0}), 400)
    assert typo["param"] == "temprature"
    bad_n = _error(httpx.post(chat, json={"model": NAME, "messages": HI, "n": 2}), 400)
    assert bad_n["param"] == "n"
    not_json = _error(
        httpx.post(
            f"{server}/v1/completions", content=b"{", headers={"Content-Type": "application/json"}
        ),
        400,
    )
    assert "JSON" in not_json["message"]
    with pytest.raises(openai.NotFoundError) as info:
        client(server).chat.completions.create(model="nope", messages=HI)
    assert info.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client(server).completions.create(model=NAME, prompt="a", max_tokens=1000)
    assert bad.value.param == "max_tokens"
    # the server still answers
    assert httpx.get(f"{server}/health").json()["chat"] is True


def test_a_client_that_leaves_stops_its_stream(
    tiny_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A GPT's /v1 requests run one at a time on the batcher (a LLaMA's join the engine:
    tests/serve/test_serve_engine.py). Each model call is slowed to 50 ms, so 90 tokens would
    take 4.5 s; closing the stream after the first text chunk must end the generation (its
    job returns None) long before."""
    from dhian.serve import openai_api

    gpt = load_model(tiny_dirs["gpt"])
    forward = gpt.model.forward

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.05)
        return forward(*args, **kwargs)

    results: list[Any] = []
    run = openai_api.CompletionJob.run

    def record(job: Any, loaded: Any, compiled: Any = None) -> Any:
        out = run(job, loaded, compiled)
        results.append(out)
        return out

    monkeypatch.setattr(gpt.model, "forward", slow)
    monkeypatch.setattr(openai_api.CompletionJob, "run", record)
    body = {"model": "gpt", "prompt": "Once upon a time", "max_tokens": 90, "stream": True}
    with live(gpt, name="gpt", max_new_tokens=100) as url:
        start = time.monotonic()
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as res:
            for line in res.iter_lines():
                if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["text"]:
                    break
        while not results and time.monotonic() - start < 10:
            time.sleep(0.05)
        assert results == [None] and time.monotonic() - start < 3.0
        assert httpx.get(f"{url}/health").json()["in_flight"] == 0


def test_other_model_kinds_have_no_v1_routes(tiny_dirs: dict[str, Path]) -> None:
    with live(load_model(tiny_dirs["transformer"]), name="mt") as url:
        res = httpx.get(f"{url}/v1/models")
        assert res.status_code == 404 and "no such endpoint" in res.json()["error"]["message"]


def test_smollm2_answers_through_the_openai_client() -> None:
    from helpers.smollm2 import smollm2_path

    smollm2_path()  # skips when the wheel is not available
    with live(load_model("smollm2"), name="smollm2") as url:
        r = client(url).chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=40,
            temperature=0,
        )
    assert "Paris" in r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop" and r.usage.completion_tokens < 40
