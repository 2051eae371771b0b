"""Continuous batching of a served LLaMA's ``/v1`` requests (:mod:`dhian.serve.engine_worker`)
on a real uvicorn server: concurrent streams that join a running batch each get exactly what
they get alone; a client that leaves mid-stream, or a request that times out, gives its row
back and its generation stops; a full queue is a 503; the token limits are OpenAI-shaped 400s.

The model is a tiny random llama with the SmolLM2 tokenizer, in float64, so a row decoded in a
batch and the same prompt decoded alone (:func:`dhian.inference.generate.complete_texts`) agree
to the last bit and greedy picks are compared exactly. The batch is made deterministic with a
gate in ``decode_step``: the worker is held at a chosen step while requests are sent, so they
join while others run, whatever the machine's speed.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from server_proc import serve_in_thread

from dhian.inference.chat import chat_reply
from dhian.inference.generate import complete_texts
from dhian.inference.load import load_model
from dhian.models.model_dir import LoadedModel
from dhian.serve.app import ServeSettings, create_app
from helpers.tiny_llama import save_tiny_llama

NAME = "tiny-llama"
CONTEXT = 512


@pytest.fixture(scope="module")
def tiny64(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    loaded = load_model(save_tiny_llama(tmp_path_factory.mktemp("llama") / "m", CONTEXT))
    loaded.model.double()
    return loaded


@contextmanager
def served(loaded: LoadedModel, **settings: Any) -> Iterator[tuple[str, Any]]:
    """(base URL, the app's Service) of ``loaded`` served in a thread."""
    app = create_app(loaded, ServeSettings(**settings), name=NAME)
    with serve_in_thread(app) as url:
        yield url, app.state.service


class Gate:
    """Wraps the model's ``decode_step``: counts the calls and the rows of each, sleeps
    ``delay`` s per call, and holds the worker at the calls listed in ``hold`` until
    :meth:`release` (``reached`` gets each held call's number)."""

    def __init__(self, model: Any, hold: tuple[int, ...] = (), delay: float = 0.0) -> None:
        self.step = model.decode_step
        self.rows: list[int] = []
        self.delay = delay
        self.gates = {n: threading.Event() for n in hold}
        self.reached: queue.Queue[int] = queue.Queue()

    def __call__(self, token: Any, *args: Any, **kwargs: Any) -> Any:
        n = len(self.rows)
        self.rows.append(int(token.size(0)))
        if n in self.gates:
            self.reached.put(n)
            assert self.gates[n].wait(60), "the test never released the gate"
        if self.delay:
            time.sleep(self.delay)
        return self.step(token, *args, **kwargs)

    def wait_for(self, n: int) -> None:
        assert self.reached.get(timeout=60) == n

    def release(self, n: int) -> None:
        self.gates[n].set()

    def release_all(self) -> None:
        for gate in self.gates.values():
            gate.set()


def until(check: Callable[[], bool], what: str, limit: float = 30.0) -> None:
    """Poll ``check`` until it is true (a generous limit: failing means it never happens)."""
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


def stream(url: str, route: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST a streamed request; the text of choice 0, its finish_reason and the usage chunk."""
    text, finish, usage, done = [], None, None, False
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{url}{route}", json=body, timeout=120) as res:
        assert res.status_code == 200, res.read()
        for line in res.iter_lines():
            if not line:
                continue
            assert line.startswith("data: ")
            if line == "data: [DONE]":
                done = True
                continue
            chunk = json.loads(line[6:])
            assert "error" not in chunk, chunk
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk["choices"]:
                assert choice["index"] == 0
                piece = choice["delta"].get("content") if "delta" in choice else choice["text"]
                text.append(piece or "")
                finish = choice["finish_reason"] or finish
    assert done
    return {"text": "".join(text), "finish": finish, "usage": usage}


def test_concurrent_streams_joining_a_running_batch_get_what_they_get_alone(
    tiny64: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five greedy requests of different prompts and lengths (chat and completions, streamed
    and not, one with a stop string): A runs alone, B and C join at A's 4th step, D and E at
    its 9th (while B and C run). Each answer equals the library's for that request alone."""
    base = complete_texts(tiny64, ["The weather today"], max_new_tokens=12, temperature=0.0)[0]
    stop = base.text[len(base.text) // 2 :][:2]  # a piece of D's greedy continuation
    chat = [{"role": "user", "content": "Tell me a story about a cat"}]
    reqs: dict[str, tuple[str, dict[str, Any], bool]] = {
        "A": ("/v1/completions", {"prompt": "Once upon a time", "max_tokens": 30}, True),
        "B": ("/v1/chat/completions", {"messages": chat, "max_tokens": 9}, True),
        "C": ("/v1/completions", {"prompt": "Hello, my name is", "max_tokens": 16}, False),
        "D": ("/v1/completions", {"prompt": "The weather today", "max_tokens": 12, "stop": stop}, True),
        "E": ("/v1/completions", {"prompt": "1, 2, 3, 4,", "max_tokens": 20}, True),
    }  # fmt: skip
    want: dict[str, Any] = {}
    for key, (_route, body, _) in reqs.items():
        if "messages" in body:
            want[key] = chat_reply(tiny64, chat, max_new_tokens=body["max_tokens"], temperature=0)
        else:
            stops = [body["stop"]] if "stop" in body else []
            want[key] = complete_texts(
                tiny64, [body["prompt"]], max_new_tokens=body["max_tokens"], temperature=0.0,
                stop=stops,
            )[0]  # fmt: skip
    assert want["D"].finish_reason == "stop" and stop not in want["D"].text

    gate = Gate(tiny64.model, hold=(3, 8))
    monkeypatch.setattr(tiny64.model, "decode_step", gate)
    got: dict[str, dict[str, Any]] = {}
    errors: list[BaseException] = []

    def send(key: str) -> threading.Thread:
        route, body, streamed = reqs[key]
        body = {"model": NAME, "temperature": 0, **body}

        def run() -> None:
            try:
                if streamed:
                    got[key] = stream(url, route, body)
                    return
                r = httpx.post(f"{url}{route}", json=body, timeout=120)
                assert r.status_code == 200, r.text
                c = r.json()["choices"][0]
                got[key] = {
                    "text": c["text"],
                    "finish": c["finish_reason"],
                    "usage": r.json()["usage"],
                }
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    with served(tiny64, llm_batch=4, max_new_tokens=64) as (url, service):
        worker = service.worker
        try:
            threads = [send("A")]
            gate.wait_for(3)  # A alone, held at its 4th decoding step
            threads += [send("B"), send("C")]
            until(lambda: worker.depth == 2, "B and C wait for the engine")
            gate.release(3)
            gate.wait_for(8)
            threads += [send("D"), send("E")]
            until(lambda: worker.depth == 2, "D and E wait for the engine")
            gate.release(8)
            for thread in threads:
                thread.join(120)
        finally:
            gate.release_all()
        assert not errors, errors
        health = httpx.get(f"{url}/health").json()
    assert gate.rows[3] == 1 and gate.rows[4] == 3  # B and C joined A's batch
    assert max(gate.rows) == 4  # llm_batch rows at most: E waited for a free row
    assert len(gate.rows) < sum(b["max_tokens"] for _, b, _ in reqs.values())  # steps shared
    for key, completion in want.items():
        assert got[key]["text"] == completion.text, key
        assert got[key]["finish"] == completion.finish_reason, key
        assert got[key]["usage"]["completion_tokens"] == completion.completion_tokens, key
        assert got[key]["usage"]["prompt_tokens"] == completion.prompt_tokens, key
    assert health["engine"]["active"] == 0 and health["engine"]["requests"] == 5
    assert health["in_flight"] == 0


def test_a_client_that_leaves_mid_stream_frees_its_row_and_stops_its_generation(
    tiny64: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream of 400 tokens at 20 ms per step; its client reads the first text and closes
    the connection. Its row is freed, its decoding stops a few steps later (not ~400), and the
    next request is answered by the engine at once."""
    gate = Gate(tiny64.model, delay=0.02)
    monkeypatch.setattr(tiny64.model, "decode_step", gate)
    body = {"model": NAME, "prompt": "Once upon a time", "max_tokens": 400, "stream": True}
    with served(tiny64, max_new_tokens=400, llm_batch=2) as (url, service):
        worker = service.worker
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as res:
            for line in res.iter_lines():
                if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["text"]:
                    break
            at_close = len(gate.rows)
        until(lambda: worker.stats.cancelled == 1, "the stream's generation was cancelled")
        until(lambda: worker.active == 0 and worker.in_flight == 0, "its row was freed")
        after = len(gate.rows) - at_close
        assert after < 100, f"{after} steps after the client left"
        assert worker.engine.tokens < 200 and not worker.engine.busy
        steps = len(gate.rows)
        r = httpx.post(
            f"{url}/v1/completions",
            json={"model": NAME, "prompt": "Hi", "max_tokens": 3, "temperature": 0},
            timeout=60,
        )
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
        assert len(gate.rows) - steps == 2  # the new request's own steps only (3 tokens)
        assert worker.stats.requests == 1 and httpx.get(f"{url}/health").json()["in_flight"] == 0


def test_a_request_that_times_out_is_cancelled(
    tiny64: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--timeout 0.5 s against 20 ms steps of a 400-token request: a 504, and its row is freed
    and its decoding stops (it would have run ~400 steps); the same for a stream that waits
    for a row longer than the timeout (an error event, never admitted)."""
    gate = Gate(tiny64.model, delay=0.02)
    monkeypatch.setattr(tiny64.model, "decode_step", gate)
    body = {"model": NAME, "prompt": "Once upon a time", "max_tokens": 400}
    with served(tiny64, max_new_tokens=400, llm_batch=1, timeout=0.5) as (url, service):
        worker = service.worker
        r = httpx.post(f"{url}/v1/completions", json=body, timeout=60)
        assert r.status_code == 504 and r.json()["error"]["message"].startswith("no answer")
        until(lambda: worker.stats.cancelled == 1 and worker.active == 0, "cancelled")
        assert len(gate.rows) < 200 and not worker.engine.busy

    # a stream stuck behind a long one in the only row: its wait times out
    gate = Gate(tiny64.model, hold=(0,))
    monkeypatch.setattr(tiny64.model, "decode_step", gate)
    with served(tiny64, max_new_tokens=400, llm_batch=1, timeout=0.5) as (url, service):
        worker = service.worker
        first = threading.Thread(
            target=lambda: httpx.post(f"{url}/v1/completions", json=body, timeout=60), daemon=True
        )
        first.start()
        gate.wait_for(0)  # the first request holds the only row
        try:
            streamed = {**body, "stream": True, "max_tokens": 5}
            with httpx.stream("POST", f"{url}/v1/completions", json=streamed, timeout=60) as res:
                lines = [line for line in res.iter_lines() if line]
        finally:
            gate.release_all()
        assert res.status_code == 200 and lines[-1] == "data: [DONE]"
        error = json.loads(lines[-2][6:])["error"]
        assert error["code"] == "timeout" and "--timeout" in error["message"]
        first.join(60)
        until(lambda: worker.in_flight == 0, "both requests ended")
        assert worker.stats.cancelled == 2  # the first one timed out too (504)
        assert gate.rows == [1]  # the stream never got a row; the first one stopped at once


def test_a_full_queue_is_a_503_and_the_server_recovers(
    tiny64: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One row and a queue of one: with a request running (held) and one waiting, the next is
    refused with 503 + Retry-After before any byte of a stream; once they finish it is served."""
    gate = Gate(tiny64.model, hold=(0,))
    monkeypatch.setattr(tiny64.model, "decode_step", gate)
    body = {"model": NAME, "prompt": "Once upon a time", "max_tokens": 4, "temperature": 0}
    with served(tiny64, llm_batch=1, max_queue=1) as (url, service):
        worker = service.worker
        results: list[int] = []

        def post() -> None:
            results.append(httpx.post(f"{url}/v1/completions", json=body, timeout=60).status_code)

        threads = [threading.Thread(target=post, daemon=True) for _ in range(2)]
        try:
            threads[0].start()
            gate.wait_for(0)
            threads[1].start()
            until(lambda: worker.depth == 1, "the second request waits")
            for streamed in (False, True):
                r = httpx.post(
                    f"{url}/v1/completions", json={**body, "stream": streamed}, timeout=60
                )
                assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
                assert "server busy" in r.json()["error"]["message"]
        finally:
            gate.release_all()
        for thread in threads:
            thread.join(60)
        assert results == [200, 200] and worker.stats.rejected == 2
        r = httpx.post(f"{url}/v1/completions", json=body, timeout=60)
        assert r.status_code == 200


def _error(res: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert res.status_code == status, res.text
    body = res.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert "\n" not in body["error"]["message"]
    return dict(body["error"])


def test_token_limits_and_bad_sampling_values_are_openai_shaped_400s(
    tiny64: LoadedModel,
) -> None:
    """max_tokens over --max-new-tokens names the cap; a prompt whose new tokens pass the
    context names both numbers (and --llm-context when the server's context is the smaller);
    wrong types, out-of-range and non-finite sampling values name the field."""
    tok = tiny64.tokenizers["src"]
    with served(tiny64, max_new_tokens=50, llm_context=100) as (url, _service):
        post = lambda route, body: httpx.post(f"{url}{route}", json=body, timeout=60)  # noqa: E731
        cmpl, chat = "/v1/completions", "/v1/chat/completions"
        over = _error(post(cmpl, {"model": NAME, "prompt": "a", "max_tokens": 51}))
        assert over["param"] == "max_tokens" and "51" in over["message"] and "50" in over["message"]
        msgs = [{"role": "user", "content": "Hi"}]
        over = _error(post(chat, {"model": NAME, "messages": msgs, "max_completion_tokens": 99}))
        assert over["param"] == "max_completion_tokens" and "50" in over["message"]
        prompt = "word " * 80
        n = len(tok.encode(prompt))
        assert n + 30 > 100 > n
        ctx = _error(post(cmpl, {"model": NAME, "prompt": prompt, "max_tokens": 30}))
        assert ctx["code"] == "context_length_exceeded" and ctx["param"] == "prompt"
        for number in (str(n), "30", "100", "--llm-context", str(CONTEXT)):
            assert number in ctx["message"], (number, ctx["message"])
        fits = post(cmpl, {"model": NAME, "prompt": prompt, "max_tokens": 100 - n})
        assert fits.status_code == 200 and fits.json()["usage"]["total_tokens"] == 100
        bad = [
            ("temperature", -0.5), ("temperature", 2.5), ("temperature", "0.7"),
            ("temperature", None), ("top_p", 0), ("top_p", 1.5), ("top_p", [1]),
            ("max_tokens", -1), ("max_tokens", True), ("max_tokens", 2.5), ("max_tokens", "5"),
            ("max_tokens", 10**30), ("seed", 2**64), ("seed", -1), ("top_k", -1),
            ("repetition_penalty", 0), ("repetition_penalty", 1e-300), ("stream", "yes"),
            ("n", 3), ("stop", 5), ("echo", 1),
        ]  # fmt: skip
        for field, value in bad:
            error = _error(post(cmpl, {"model": NAME, "prompt": "a", field: value}))
            assert error["param"] == field, (field, value, error)
        for raw in (b"NaN", b"Infinity", b"-Infinity", b"1e999"):
            for field in (b"temperature", b"top_p", b"repetition_penalty"):
                content = b'{"model": "%s", "prompt": "a", "%s": %s}' % (NAME.encode(), field, raw)
                r = httpx.post(
                    f"{url}{cmpl}", content=content, headers={"Content-Type": "application/json"}
                )
                error = _error(r)
                assert error["param"] == field.decode(), (raw, error)
        r = post(cmpl, {"model": NAME, "prompt": "a", "max_tokens": 2, "temperature": 1})
        assert r.status_code == 200  # an int where a float goes is fine (JSON has one number)


def test_generation_steps_and_batcher_calls_run_on_the_compute_thread(
    tiny64: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's steps (``/v1``) and the batcher's handlers (``/generate``) both hand the
    model to the process's one compute thread (dhian.nn.compute_thread: a second libgomp team
    master throttles every barrier), never run it on their own threads."""
    from dhian.nn.compute_thread import COMPUTE_THREAD_NAME

    threads: list[str] = []
    step = tiny64.model.decode_step

    def record(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        return step(*args, **kwargs)

    monkeypatch.setattr(tiny64.model, "decode_step", record)
    with served(tiny64) as (url, _service):
        body = {"model": NAME, "prompt": "Hello", "max_tokens": 3, "temperature": 0}
        assert httpx.post(f"{url}/v1/completions", json=body, timeout=60).status_code == 200
        v1 = len(threads)
        body = {"prompt": "Hello", "max_new_tokens": 3, "temperature": 0}
        assert httpx.post(f"{url}/generate", json=body, timeout=60).status_code == 200
    assert 0 < v1 < len(threads)
    assert {name.split("_")[0] for name in threads} == {COMPUTE_THREAD_NAME}
