"""POST /tag and /answer through FastAPI's TestClient on tiny saved models: answers equal the
library's, the attention endpoint takes a QA context, wrong endpoints are a clear 400."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="pip install fastapi httpx")
from fastapi.testclient import TestClient

from dhian.inference.answer import answer
from dhian.inference.load import load_model
from dhian.inference.tag import tag
from dhian.serve.app import ServeSettings, create_app
from helpers.ner_qa import CONTEXT, tiny_task_dir


def test_tag_route(tmp_path: Path) -> None:
    loaded = load_model(tiny_task_dir(tmp_path, "token_classification"))
    texts = ["Anna lives in Paris", "Bob works at Acme Corp ."]
    with TestClient(create_app(loaded, ServeSettings(), name="tiny")) as client:
        health = client.get("/health").json()
        assert health["kind"] == "token_classification"
        assert health["endpoints"] == ["/tag", "/attention"]
        r = client.post("/tag", json={"text": texts})
        assert r.status_code == 200, r.text
        want = [res.as_dict() for res in tag(loaded.model, loaded.tokenizers["src"], texts)]
        assert r.json()["results"] == want
        r = client.post("/answer", json={"question": "q", "context": "c"})
        assert r.status_code == 400 and "/answer needs a question-answering" in r.json()["error"]
        r = client.post("/attention", json={"text": "Anna", "context": "x"})
        assert r.status_code == 422 and "context is only" in r.json()["error"]
        assert "Tag" in client.get("/").text


def test_answer_route(tmp_path: Path) -> None:
    loaded = load_model(tiny_task_dir(tmp_path, "question_answering"))
    q = "Where does Bob live?"
    with TestClient(create_app(loaded, ServeSettings(), name="tiny")) as client:
        r = client.post("/answer", json={"question": q, "context": CONTEXT, "max_answer_len": 3})
        assert r.status_code == 200, r.text
        want = answer(loaded.model, loaded.tokenizers["src"], q, CONTEXT, max_answer_len=3)
        body = r.json()
        assert body["question"] == q
        assert (body["text"], body["start"], body["end"]) == (want.text, want.start, want.end)
        assert body["score"] == pytest.approx(want.score)
        r = client.post("/answer", json={"question": q, "context": CONTEXT, "null_threshold": -1e9})
        assert r.status_code == 200 and r.json()["text"] == ""  # any null score wins
        r = client.post("/answer", json={"question": q})
        assert r.status_code == 422
        r = client.post("/tag", json={"text": "x"})
        assert r.status_code == 400
        r = client.post("/attention", json={"text": q, "context": CONTEXT})
        assert r.status_code == 200, r.text
        assert r.json()["tokens"]["src"].count("[SEP]") == 2
        assert 'id="context"' in client.get("/").text
