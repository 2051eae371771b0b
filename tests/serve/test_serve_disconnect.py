"""A client that disconnects while the model works on its request frees the model: the server
notices within a poll interval, abandons the job, and the decoding loop stops before its next
step (the same cancellation a timed-out request uses, and what LLM streams will use). A real
uvicorn server in a thread, a real socket closed mid-request."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

import pytest

pytest.importorskip("uvicorn", reason="pip install fastapi uvicorn httpx")
import httpx
import uvicorn
from server_proc import free_port
from uvicorn.protocols.http.h11_impl import H11Protocol

from dhian.inference.load import load_model
from dhian.serve.app import ServeSettings, create_app
from dhian.serve.connections import guarded_protocol

LONG = " ".join(["Im Anfang schuf Gott Himmel und Erde."] * 4)


def test_a_client_that_leaves_mid_request_stops_its_decoding(tiny_dirs):
    loaded = load_model(tiny_dirs["rnnsearch"])
    settings = ServeSettings(timeout=60)
    app = create_app(loaded, settings, name="tiny")
    model = loaded.model
    start_fn, step_fn = model.start, model.step
    slow = {"on": False, "steps": 0}

    def start(src: Any, lengths: Any) -> Any:
        slow["on"] = src.size(1) > 12
        return start_fn(src, lengths)

    def step(*args: Any, **kwargs: Any) -> Any:
        if slow["on"]:
            slow["steps"] += 1
            time.sleep(0.2)
        return step_fn(*args, **kwargs)

    model.start, model.step = start, step
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning",
        http=guarded_protocol(H11Protocol, settings.connection_limits()),
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        body = json.dumps({"text": LONG}).encode()
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(
            b"POST /translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        while slow["steps"] < 2:  # the model is on it
            time.sleep(0.02)
        s.close()  # the client leaves
        left = time.monotonic()
        batcher = app.state.service.batcher
        while batcher.stats.cancelled < 1:
            assert time.monotonic() - left < 3.0, "the abandoned decode was not stopped"
            time.sleep(0.02)
        assert slow["steps"] < 10  # ~100 steps if it had run to the end
        r = httpx.post(f"http://127.0.0.1:{port}/translate", json={"text": "Gott"}, timeout=5)
        assert r.status_code == 200 and time.monotonic() - left < 4.0
    finally:
        server.should_exit = True
        thread.join(10)
