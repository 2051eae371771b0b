"""Property-based robustness of the HTTP API (hypothesis, FastAPI's TestClient, tiny models).

Random JSON bodies (right field names with random values, random JSON of any shape, unknown
fields), raw bytes, unicode with lone surrogates (JSON ``"\\udc80"`` or CESU bytes), huge and
empty strings go to ``/translate``, ``/classify``, ``/generate``, ``/fill-mask`` and
``/attention``. Whatever arrives: never a 500, never a hang (hypothesis deadline, a SIGALRM
guard and the server's own 504 timeout), always JSON; a 4xx always has a one-line ``error``;
a 200 has the endpoint's shape, and every text it echoes is valid UTF-8.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("fastapi", reason="pip install fastapi httpx")
from fastapi.testclient import TestClient

from dhian.inference.load import load_model
from dhian.serve.app import ServeSettings, create_app
from helpers.timing import time_limit

SETTINGS = ServeSettings(max_batch=4, max_chars=200, timeout=10.0, max_beam=4)
ENDPOINTS = ("/translate", "/classify", "/generate", "/fill-mask", "/attention")
FUZZ = settings(
    max_examples=50,
    deadline=timedelta(seconds=8),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def clients(tiny_dirs: dict[str, Any]) -> Iterator[dict[str, TestClient]]:
    """One running app per tiny model family (batcher threads started by the lifespan)."""
    with contextlib.ExitStack() as stack:
        out = {}
        for kind in ("rnnsearch", "bert-cls", "bert-mlm", "gpt"):
            app = create_app(load_model(tiny_dirs[kind]), SETTINGS, name=f"tiny-{kind}")
            out[kind] = stack.enter_context(TestClient(app, raise_server_exceptions=False))
        yield out


# --------------------------------------------------------------------------- strategies

SURROGATE = st.integers(0xD800, 0xDFFF).map(chr)
SPECIALS = st.sampled_from(
    ["[MASK]", "<mask>", "[CLS]", "[SEP]", "[PAD]", "<pad>", "<s>", "</s>", "[UNK]", "##"]
)
CHUNK = st.one_of(
    st.text(max_size=30),  # any unicode (no surrogates)
    st.text(st.one_of(st.characters(), SURROGATE), max_size=10),  # lone surrogates mixed in
    SPECIALS,
    st.sampled_from(["Und es ward Licht.", "a good film", "", " ", "\x00", "\n\t", "\u200b"]),
)
SHORT = st.lists(CHUNK, max_size=6).map(" ".join)
TEXT = st.one_of(
    SHORT,
    SHORT,
    SHORT,
    SHORT,
    st.integers(150, 260).map(lambda n: "ਧ" * n),  # around max_chars (200)
    st.integers(1_000, 60_000).map(lambda n: "x " * n),  # far over it / over the body limit
)
TEXTS = st.one_of(TEXT, st.lists(TEXT, max_size=6))  # a text, or a list (0..6; max_batch 4)
MASKED = st.tuples(SHORT, st.sampled_from(["<mask>", "[MASK]"]), SHORT).map(" ".join)
NUMBER = st.one_of(
    st.integers(-3, 20),
    st.sampled_from([0, 1, 1024, 1025, 2**31, -(2**63), 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
)
LEAF = st.one_of(st.none(), st.booleans(), NUMBER, TEXT)
ANY_JSON = st.recursive(
    LEAF,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=8,
)
# per endpoint: its main field, then its other fields with values in range
FITTING: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "/translate": {"text": TEXTS, "beam": st.integers(1, 4)},
    "/classify": {"text": TEXTS},
    "/generate": {
        "prompt": TEXT,
        "max_new_tokens": st.integers(0, 20) | st.just(1024),
        "temperature": st.floats(0, 2),
        "top_k": st.integers(0, 50),
        "top_p": st.floats(0, 1, exclude_min=True),
        "seed": st.integers(0, 2**32),
    },
    "/fill-mask": {"text": MASKED | TEXT, "top_k": st.integers(1, 100)},
    "/attention": {"text": TEXT, "target": st.one_of(st.none(), st.none(), st.none(), TEXT)},
}


def bodies(endpoint: str) -> st.SearchStrategy[bytes]:
    """Request bodies for ``endpoint``: well-formed objects with its fields in range; objects
    with any subset of its fields, values fitting or any JSON, maybe an unknown field; any JSON
    at all; a text sent as raw CESU-8 bytes (surrogates); random bytes."""
    fields = FITTING[endpoint]
    main, *rest = fields
    fitting = st.fixed_dictionaries({main: fields[main]}, optional={k: fields[k] for k in rest})
    fuzzed = st.fixed_dictionaries(
        {}, optional={**{k: v | ANY_JSON for k, v in fields.items()}, "typo": ANY_JSON}
    )
    # json.dumps escapes lone surrogates as \udXXX (as a browser's JSON.stringify may send)
    as_json = st.one_of(fitting, fitting, fitting, fuzzed, ANY_JSON).map(
        lambda v: json.dumps(v).encode()
    )
    cesu = SHORT.map(
        lambda t: f'{{"{main}": "'.encode() + t.encode("utf-8", "surrogatepass") + b'"}'
    )
    return st.one_of(as_json, as_json, as_json, as_json, cesu, st.binary(max_size=300))


# --------------------------------------------------------------------------- checks


def no_surrogates(value: Any) -> bool:
    """Every string inside ``value`` is valid Unicode scalar values (encodable as UTF-8)."""
    if isinstance(value, str):
        return not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, list):
        return all(no_surrogates(v) for v in value)
    if isinstance(value, dict):
        return all(no_surrogates(k) and no_surrogates(v) for k, v in value.items())
    return True


def sent_texts(body: bytes) -> list[str] | None:
    """The text(s) the body asks about, when it is an object with a string/list ``text`` (or
    ``prompt``, which defaults to "")."""
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    value = obj.get("text", obj.get("prompt", ""))
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def post(client: TestClient, endpoint: str, body: bytes, ctype: str = "application/json") -> Any:
    with time_limit(20):
        r = client.post(endpoint, content=body, headers={"content-type": ctype})
    assert r.status_code in (200, 400, 413, 422), (
        endpoint,
        body[:200],
        r.status_code,
        r.text[:300],
    )
    out = r.json()  # always JSON
    assert no_surrogates(out), (endpoint, body[:200], r.text[:300])
    if r.status_code != 200:
        error = out["error"]
        assert isinstance(error, str) and error.strip() and "\n" not in error, out
        return None
    return out


def fuzz(client: TestClient, endpoint: str, body: bytes) -> None:
    """Post ``body``; on 200 check the endpoint's result shape against what was sent."""
    out = post(client, endpoint, body)
    if out is None:
        return
    texts = sent_texts(body)
    assert texts is not None, (endpoint, body[:200])  # a 200 needs a text
    assert all(len(t) <= SETTINGS.max_chars for t in texts) and len(texts) <= SETTINGS.max_batch
    if endpoint in ("/translate", "/classify"):
        results = out["results"]
        assert len(results) == len(texts)
        for item, sent in zip(results, texts, strict=True):
            echoed = item["source" if endpoint == "/translate" else "text"]
            assert echoed == sent or not no_surrogates(sent)  # only surrogates are replaced
            assert len(echoed) <= len(sent)
            if endpoint == "/classify":
                assert item["label"] in item["probs"]
                assert math.isclose(sum(item["probs"].values()), 1.0, rel_tol=1e-4)
    elif endpoint == "/generate":
        assert isinstance(out["text"], str) and isinstance(out["prompt"], str)
    elif endpoint == "/fill-mask":
        for candidates in out["masks"]:
            assert all(0.0 <= c["prob"] <= 1.0 for c in candidates)
    else:
        assert out["kinds"] and out["tokens"]["src"] is not None


# --------------------------------------------------------------------------- tests


@FUZZ
@given(body=bodies("/translate"))
def test_translate_takes_anything(clients: dict[str, TestClient], body: bytes) -> None:
    fuzz(clients["rnnsearch"], "/translate", body)


@FUZZ
@given(body=bodies("/classify"))
def test_classify_takes_anything(clients: dict[str, TestClient], body: bytes) -> None:
    fuzz(clients["bert-cls"], "/classify", body)


@settings(FUZZ, max_examples=40)
@given(body=bodies("/generate"))
def test_generate_takes_anything(clients: dict[str, TestClient], body: bytes) -> None:
    fuzz(clients["gpt"], "/generate", body)


@FUZZ
@given(body=bodies("/fill-mask"))
def test_fill_mask_takes_anything(clients: dict[str, TestClient], body: bytes) -> None:
    fuzz(clients["bert-mlm"], "/fill-mask", body)


@settings(FUZZ, max_examples=40)
@given(body=bodies("/attention"), kind=st.sampled_from(["rnnsearch", "bert-mlm", "gpt"]))
def test_attention_takes_anything(clients: dict[str, TestClient], body: bytes, kind: str) -> None:
    fuzz(clients[kind], "/attention", body)


@settings(FUZZ, max_examples=40)
@given(
    body=st.binary(max_size=500) | st.sampled_from([b"", b"{", b"[]", b"null", b"\xff\xfe"]),
    endpoint=st.sampled_from(ENDPOINTS),
    kind=st.sampled_from(["rnnsearch", "bert-cls", "bert-mlm", "gpt"]),
    ctype=st.sampled_from(
        ["application/json", "text/plain", "", "application/json; charset=latin-1"]
    ),
)
def test_raw_bytes_to_any_endpoint_of_any_model(
    clients: dict[str, TestClient], body: bytes, endpoint: str, kind: str, ctype: str
) -> None:
    """Bytes that are not a request (or an endpoint the model lacks) are a 4xx, never a 500."""
    assert post(clients[kind], endpoint, body, ctype) is None or body.strip()[:1] == b"{"


@pytest.mark.parametrize(
    ("kind", "endpoint", "body", "echo"),
    [
        ("rnnsearch", "/translate", b'{"text": "Licht \\udc80"}', "Licht \ufffd"),
        ("rnnsearch", "/translate", b'{"text": ["a\\ud83d\\ude00", "\\ud800"]}', None),
        ("bert-cls", "/classify", b'{"text": "good \xed\xb2\x80 film"}', "good \ufffd film"),
        ("gpt", "/generate", b'{"prompt": "\\udcff", "max_new_tokens": 3}', "\ufffd"),
        ("bert-mlm", "/fill-mask", b'{"text": "a <mask> \\udc80"}', None),
        ("rnnsearch", "/attention", b'{"text": "Licht", "target": "light \\udc80"}', None),
    ],
    ids=["translate", "translate-list", "classify-cesu", "generate", "fill-mask", "attention"],
)
def test_lone_surrogates_are_answered_not_500(
    clients: dict[str, TestClient], kind: str, endpoint: str, body: bytes, echo: str | None
) -> None:
    """The cases the fuzzing found (a 500 from serialising the echoed text): now a 200 whose
    echo has U+FFFD in place of each lone surrogate (a surrogate *pair* is its character)."""
    out = post(clients[kind], endpoint, body)
    assert out is not None
    if endpoint == "/translate" and echo is None:
        assert [r["source"] for r in out["results"]] == ["a\U0001f600", "\ufffd"]
    elif echo is not None:
        got = out["prompt"] if endpoint == "/generate" else out["results"][0]
        got = got if isinstance(got, str) else got.get("source", got.get("text"))
        assert got == echo


@pytest.mark.parametrize("ctype", ["application/x-www-form-urlencoded", "text/plain", ""])
def test_json_sent_without_a_json_content_type_says_so(
    clients: dict[str, TestClient], ctype: str
) -> None:
    """``curl -d '{...}'`` sends form encoding: a 400 naming the header, not a 422 quoting
    the raw bytes (found while fuzzing content types)."""
    r = clients["rnnsearch"].post(
        "/translate", content=b'{"text": "Licht"}', headers={"content-type": ctype}
    )
    assert r.status_code == 400, r.text
    assert "Content-Type: application/json" in r.json()["error"]
