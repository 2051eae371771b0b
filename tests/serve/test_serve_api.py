"""The HTTP API through FastAPI's TestClient on tiny saved models of each family: answers equal
the library's (computed one text at a time), bad requests get a clear 4xx and the server stays
up, concurrent requests share model calls, a full queue answers 503 and a slow one 504."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="pip install fastapi httpx")
from fastapi.testclient import TestClient

from dhian.decoding import greedy_decode
from dhian.inference.attention_maps import extract_attention
from dhian.inference.classify import classify
from dhian.inference.fill_mask import fill_mask
from dhian.inference.generate import generate_text
from dhian.inference.load import load_model
from dhian.serve.app import ServeSettings, create_app
from dhian.viz import decode_weights

SENTENCES = [
    "Und es ward Licht.",
    "Im Anfang schuf Gott Himmel und Erde.",
    "Da schied Gott das Licht von der Finsternis.",
    "Und nannte das Licht Tag.",
    "Gott",
    "Und Gott sprach: Es werde Licht!",
]
REVIEWS = ["a good film", "a bad film", "what a great story", "the light was good", "bad", "x"]


@contextmanager
def serving(model_dir: Any, **settings: Any) -> Iterator[tuple[TestClient, Any]]:
    loaded = load_model(model_dir)
    app = create_app(loaded, ServeSettings(**settings), name="tiny")
    with TestClient(app) as client:
        yield client, loaded


def greedy_alone(loaded: Any, text: str) -> str:
    """The translation of ``text`` decoded on its own (batch of one), straight from the library."""
    ids = loaded.tokenizers["src"].encode(text)
    hyp = greedy_decode(loaded.model, torch.tensor([ids]), torch.tensor([len(ids)]))[0]
    return loaded.tokenizers["tgt"].decode(hyp.tokens)


def error_of(response: Any, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert isinstance(body["error"], str) and "\n" not in body["error"]
    return body["error"]


def test_translate_single_and_list_equal_library(tiny_dirs):
    with serving(tiny_dirs["rnnsearch"]) as (client, loaded):
        r = client.post("/translate", json={"text": SENTENCES[1]})
        assert r.status_code == 200
        (item,) = r.json()["results"]
        assert item["translation"] == greedy_alone(loaded, SENTENCES[1])
        assert item["source"] == SENTENCES[1] and not item["truncated"]
        r = client.post("/translate", json={"text": SENTENCES})
        got = [x["translation"] for x in r.json()["results"]]
        assert got == [greedy_alone(loaded, s) for s in SENTENCES]
        beam = client.post("/translate", json={"text": SENTENCES[:2], "beam": 3}).json()
        assert len(beam["results"]) == 2
        assert all(b["log_prob"] >= g["log_prob"] - 1e-4 for b, g in zip(  # beam finds better
            beam["results"], r.json()["results"][:2], strict=True))  # fmt: skip
        empty = client.post("/translate", json={"text": ""}).json()["results"][0]
        assert empty["translation"] == "" and empty["tokens"] == []


def test_translate_results_match_one_at_a_time_decoding_and_truncate(tiny_dirs):
    """inference.translate_texts (through dhian.inference.translate) in one batch: each result's
    log p and display tokens equal greedy decoding of that source alone; a source longer than
    data.max_len (32) is cut to its first 32 ids and flagged."""
    from dhian.inference.display_tokens import display_tokens
    from dhian.inference.translate import translate_batch as translate_texts

    loaded = load_model(tiny_dirs["transformer"])
    src_tok, tgt_tok = loaded.tokenizers["src"], loaded.tokenizers["tgt"]
    long = " ".join(SENTENCES)
    assert len(src_tok.encode(long)) > 32
    texts = [SENTENCES[0], long, "", SENTENCES[2]]
    results = translate_texts(loaded, texts)
    assert [r["source"] for r in results] == texts
    assert [r["truncated"] for r in results] == [False, True, False, False]
    assert results[2] == {
        "source": "", "translation": "", "tokens": [], "log_prob": 0.0, "truncated": False,
    }  # fmt: skip
    for text, got in zip(texts, results, strict=True):
        if not text:
            continue
        ids = src_tok.encode(text)[:32]
        hyp = greedy_decode(loaded.model, torch.tensor([ids]), torch.tensor([len(ids)]))[0]
        assert got["translation"] == tgt_tok.decode(hyp.tokens)
        assert got["tokens"] == display_tokens(tgt_tok, hyp.tokens)
        assert got["log_prob"] == pytest.approx(hyp.log_prob, abs=1e-4)


def test_health_page_and_openapi(tiny_dirs):
    with serving(tiny_dirs["transformer"], max_chars=300) as (client, _):
        health = client.get("/health").json()
        assert health["kind"] == "translation" and health["model_type"] == "transformer"
        assert health["endpoints"] == ["/translate", "/attention"]
        assert health["name"] == "tiny" and health["uptime_s"] >= 0
        assert health["queue_depth"] == 0 and health["max_chars"] == 300
        page = client.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "dhianViewer" in page.text and "/translate" in page.text
        assert "http://" not in page.text and "https://" not in page.text  # no CDN
        spec = client.get("/openapi.json").json()
        for path in ("/translate", "/classify", "/generate", "/fill-mask", "/attention", "/health"):
            assert path in spec["paths"]
        assert client.get("/docs").status_code == 200


def test_bad_requests_get_clear_4xx_and_server_stays_up(tiny_dirs):
    with serving(tiny_dirs["rnnsearch"], max_chars=50, max_batch=4) as (client, loaded):
        post = client.post
        msg = error_of(
            post("/translate", content=b'{"text": ', headers={"content-type": "application/json"}),
            400,
        )
        assert "not valid JSON" in msg
        assert "'text'" in error_of(post("/translate", json={}), 422)
        assert "missing field 'text'" in error_of(post("/translate", json={"beam": 2}), 422)
        assert "unknown field 'bem'" in error_of(
            post("/translate", json={"text": "a", "bem": 2}), 422
        )
        assert "'text'" in error_of(post("/translate", json={"text": 5}), 422)
        assert "'beam'" in error_of(post("/translate", json={"text": "a", "beam": 0}), 422)
        assert "JSON object" in error_of(post("/translate", json=["a"]), 422)
        assert "needs a JSON body" in error_of(post("/translate"), 422)
        msg = error_of(post("/translate", json={"text": "x" * 51}), 413)
        assert "51 characters" in msg and "50" in msg
        msg = error_of(post("/translate", json={"text": ["ok", "y" * 60]}), 413)
        assert "text[1]" in msg
        assert "limit is 4" in error_of(post("/translate", json={"text": ["a"] * 5}), 413)
        assert "empty list" in error_of(post("/translate", json={"text": []}), 422)
        huge = b'{"text": "' + b"z" * 2_000_000 + b'"}'
        assert "limit" in error_of(post("/translate", content=huge), 413)
        chunks = iter([b'{"text": "', b"z" * 1_000_000, b"z" * 1_000_000, b'"}'])
        assert "limit" in error_of(post("/translate", content=chunks), 413)  # chunked, no length
        for path in ("/classify", "/generate", "/fill-mask"):
            body = {"prompt": "a"} if path == "/generate" else {"text": "a"}
            msg = error_of(post(path, json=body), 400)
            assert "'translation' model (rnnsearch)" in msg
            assert "POST /translate, POST /attention" in msg
        assert "target is only" not in error_of(
            post("/attention", json={"text": "a", "target": 3}), 422
        )
        assert "no such endpoint" in error_of(client.get("/nope"), 404)
        assert client.get("/health").json()["status"] == "ok"
        r = post("/translate", json={"text": SENTENCES[0]})
        assert r.json()["results"][0]["translation"] == greedy_alone(loaded, SENTENCES[0])


def test_wrong_endpoint_names_kind_for_other_families(tiny_dirs):
    with serving(tiny_dirs["gpt"]) as (client, _):
        msg = error_of(client.post("/translate", json={"text": "a"}), 400)
        assert "'lm' model (gpt)" in msg and "POST /generate, POST /attention" in msg
        msg = error_of(client.post("/attention", json={"text": "a", "target": "b"}), 422)
        assert "target is only for translation" in msg
    with serving(tiny_dirs["rnnencdec"]) as (client, _):
        msg = error_of(client.post("/attention", json={"text": "a"}), 400)
        assert "its endpoints: POST /translate" in msg


def test_classify_equals_unbatched_library(tiny_dirs):
    with serving(tiny_dirs["bert-cls"]) as (client, loaded):
        got = client.post("/classify", json={"text": REVIEWS}).json()["results"]
        tok = loaded.tokenizers["src"]
        for g, text in zip(got, REVIEWS, strict=True):
            (ref,) = classify(loaded.model, tok, [text], batch_size=1)
            assert g["label"] == ref.label and g["text"] == text
            np.testing.assert_allclose(
                list(g["probs"].values()), list(ref.probs.values()), atol=1e-5
            )
            assert set(g["probs"]) == {"negative", "positive"}


def test_generate_and_fill_mask_equal_library(tiny_dirs):
    with serving(tiny_dirs["gpt"]) as (client, loaded):
        body = {"prompt": "And God", "max_new_tokens": 8, "temperature": 0.9, "seed": 3}
        a = client.post("/generate", json=body).json()
        b = client.post("/generate", json=body).json()
        ref = generate_text(loaded.model, loaded.tokenizers["src"], ["And God"], 8, 0.9, seed=3)
        assert a["text"] == b["text"] == ref[0] and a["prompt"] == "And God"
        assert "'top_p'" in error_of(client.post("/generate", json={"top_p": 0}), 422)
        payload = client.post("/attention", json={"text": "And God saw"}).json()
        assert [k["id"] for k in payload["kinds"]] == ["decoder"]
    with serving(tiny_dirs["bert-mlm"]) as (client, loaded):
        health = client.get("/health").json()
        assert health["mask_token"] == "<mask>" and health["endpoints"] == [
            "/fill-mask",
            "/attention",
        ]
        text = "the light <mask> good"
        got = client.post("/fill-mask", json={"text": text, "top_k": 3}).json()["masks"]
        ref = fill_mask(loaded.model, loaded.tokenizers["src"], text, 3)
        assert [[c["token"] for c in m] for m in got] == [[t for t, _ in m] for m in ref]
        assert "mask" in error_of(client.post("/fill-mask", json={"text": "no mask here"}), 422)


def test_attention_endpoint_returns_viewer_payload(tiny_dirs):
    with serving(tiny_dirs["transformer"]) as (client, loaded):
        payload = client.post("/attention", json={"text": SENTENCES[1]}).json()
        ref = extract_attention(loaded, SENTENCES[1])
        assert payload["tokens"] == {"src": ref.tokens_src, "tgt": ref.tokens_tgt}
        assert [k["id"] for k in payload["kinds"]] == ["encoder", "decoder", "cross"]
        np.testing.assert_allclose(
            decode_weights(payload["kinds"][2]), ref.cross_attention, atol=2e-5
        )
        forced = client.post("/attention", json={"text": SENTENCES[1], "target": "And God."}).json()
        assert forced["tokens"]["tgt"][-1] == "</s>" and len(forced["tokens"]["tgt"]) < 8


def _count_calls(module: torch.nn.Module) -> list[int]:
    calls: list[int] = []
    module.register_forward_hook(lambda _m, args, _out: calls.append(int(args[0].size(0))))
    return calls


def test_concurrent_translations_are_batched_and_each_gets_its_answer(tiny_dirs):
    texts = SENTENCES * 2  # 12 requests
    with serving(tiny_dirs["rnnsearch"], max_batch=8, batch_wait_ms=300) as (client, loaded):
        encoder_runs = _count_calls(loaded.model.src_embed)  # once per decoder batch
        with ThreadPoolExecutor(len(texts)) as pool:
            responses = list(pool.map(lambda t: client.post("/translate", json={"text": t}), texts))
        got = [r.json()["results"][0]["translation"] for r in responses]
        stats = client.app.state.service.batcher.stats
        assert len(encoder_runs) < len(texts), encoder_runs
        assert max(encoder_runs) > 1 and max(encoder_runs) <= 8
        assert stats.calls == len(encoder_runs) and stats.jobs == len(texts)
        encoder_runs.clear()
        assert got == [greedy_alone(loaded, t) for t in texts]  # one at a time
        assert all(n == 1 for n in encoder_runs)


def test_concurrent_classifications_are_batched(tiny_dirs):
    texts = REVIEWS * 2
    with serving(tiny_dirs["bert-cls"], max_batch=16, batch_wait_ms=300) as (client, loaded):
        forwards = _count_calls(loaded.model)
        with ThreadPoolExecutor(len(texts)) as pool:
            responses = list(pool.map(lambda t: client.post("/classify", json={"text": t}), texts))
        assert len(forwards) < len(texts) and sum(forwards) == len(texts)
        tok = loaded.tokenizers["src"]
        for r, text in zip(responses, texts, strict=True):
            (ref,) = classify(loaded.model, tok, [text], batch_size=1)
            probs = r.json()["results"][0]["probs"]
            np.testing.assert_allclose(list(probs.values()), list(ref.probs.values()), atol=1e-5)


def _slow(client: TestClient, seconds: float) -> threading.Event:
    """Make the translate handler sleep ``seconds``; the event is set when a call starts."""
    batcher = client.app.state.service.batcher
    original = batcher.handlers["translate"]
    started = threading.Event()

    def slow(params: Any, items: list[Any]) -> Any:
        started.set()
        time.sleep(seconds)
        return original(params, items)

    batcher.handlers["translate"] = slow
    return started


def test_full_queue_answers_503_with_retry_after(tiny_dirs):
    with serving(tiny_dirs["rnnsearch"], max_queue=1, batch_wait_ms=0) as (client, _):
        started = _slow(client, 1.0)
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(client.post, "/translate", json={"text": "Gott"})
            assert started.wait(10)  # the worker is busy with the first request
            second = pool.submit(client.post, "/translate", json={"text": "Licht"})
            deadline = time.monotonic() + 10
            while client.get("/health").json()["queue_depth"] < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            third = client.post("/translate", json={"text": "Tag"})
            assert "server busy" in error_of(third, 503)
            assert third.headers["retry-after"] == "1"
            assert first.result().status_code == 200 and second.result().status_code == 200
        assert client.app.state.service.batcher.stats.rejected == 1
        assert client.post("/translate", json={"text": "Tag"}).status_code == 200


def test_slow_request_times_out_with_504(tiny_dirs):
    with serving(tiny_dirs["rnnsearch"], timeout=0.3) as (client, _):
        _slow(client, 1.0)
        start = time.monotonic()
        msg = error_of(client.post("/translate", json={"text": "Gott"}), 504)
        assert "0.3 s" in msg and time.monotonic() - start < 0.9
        assert client.get("/health").json()["status"] == "ok"


def test_a_bug_in_the_model_call_is_a_json_500_and_the_server_goes_on(tiny_dirs):
    loaded = load_model(tiny_dirs["rnnsearch"])
    app = create_app(loaded, ServeSettings(), name="tiny")
    with TestClient(app, raise_server_exceptions=False) as client:
        batcher = client.app.state.service.batcher
        original = batcher.handlers["translate"]

        def broken(params: Any, items: list[Any]) -> Any:
            if items == ["crash"]:
                raise RuntimeError("kaput")
            return original(params, items)

        batcher.handlers["translate"] = broken
        msg = error_of(client.post("/translate", json={"text": "crash"}), 500)
        assert "RuntimeError: kaput" in msg
        assert client.post("/translate", json={"text": "Gott"}).status_code == 200


def test_a_timed_out_translation_stops_between_steps_and_frees_the_model(tiny_dirs):
    """The 504's batch is abandoned: its decoding loop stops at the next step, so the next
    request is answered (without cancellation it would wait for the whole slow decode)."""
    with serving(tiny_dirs["rnnsearch"], timeout=1.0) as (client, loaded):
        model = loaded.model
        start_fn, step_fn = model.start, model.step
        steps = {"slow": 0}
        slow_now = {"on": False}

        def start(src: Any, lengths: Any) -> Any:
            slow_now["on"] = src.size(1) > 12  # the long sentence decodes slowly
            return start_fn(src, lengths)

        def step(*args: Any, **kwargs: Any) -> Any:
            if slow_now["on"]:
                steps["slow"] += 1
                time.sleep(0.25)
            return step_fn(*args, **kwargs)

        model.start, model.step = start, step
        long_text = " ".join(SENTENCES)  # ~70 steps x 0.25 s if it ran to the end
        msg = error_of(client.post("/translate", json={"text": long_text}), 504)
        assert "1 s" in msg
        begin = time.monotonic()
        r = client.post("/translate", json={"text": "Gott"})
        assert r.status_code == 200, r.text
        assert time.monotonic() - begin < 1.0
        assert steps["slow"] <= 7  # ~4 steps before the timeout, at most one after it
        assert client.app.state.service.batcher.stats.cancelled == 1


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/translate", {"text": "Gott", "beam": "5"}, "beam"),
        ("/translate", {"text": "Gott", "beam": True}, "beam"),
        ("/translate", {"text": "Gott", "beam": 2.0}, "beam"),
        ("/translate", {"text": 5}, "text"),
    ],
)
def test_request_types_are_strict(tiny_dirs, path, body, field):
    with serving(tiny_dirs["rnnsearch"]) as (client, _):
        msg = error_of(client.post(path, json=body), 422)
        assert f"field {field!r}" in msg
        assert client.post(path, json={"text": "Gott", "beam": 2}).status_code == 200


def test_nan_and_infinity_are_refused(tiny_dirs):
    with serving(tiny_dirs["gpt"]) as (client, _):
        for raw in (b'{"prompt": "a", "temperature": NaN}', b'{"prompt": "a", "top_p": Infinity}'):
            r = client.post("/generate", content=raw, headers={"Content-Type": "application/json"})
            assert r.status_code in (400, 422), r.text
        ok = client.post("/generate", json={"prompt": "a", "temperature": 1, "max_new_tokens": 2})
        assert ok.status_code == 200, ok.text  # an integer is still a number
