"""``dhian serve`` as a real process on loopback: starts, answers, and on SIGTERM finishes the
request in flight before exiting 0 (uvicorn's graceful shutdown + the app's lifespan)."""

from __future__ import annotations

import signal
import socket
import threading
import time
from typing import Any

import pytest

pytest.importorskip("uvicorn", reason="pip install fastapi uvicorn httpx")
import httpx
import torch
from server_proc import free_port, server_process

from dhian.cli import main
from dhian.decoding import greedy_decode
from dhian.inference.load import load_model

SLOW_SERVER = """
import sys, time
import dhian.serve.app as app
from dhian.serve.app import ServeSettings
from dhian.serve.server import run_server

original = app.translate_batch

def slow(*args, **kwargs):
    time.sleep(float(sys.argv[3]))
    return original(*args, **kwargs)

app.translate_batch = slow  # the service looks the name up in its module
run_server(sys.argv[1], port=int(sys.argv[2]), settings=ServeSettings(timeout=20), device="cpu")
"""


#: uvicorn handles SIGTERM (graceful shutdown), then re-raises it: the exit looks like SIGTERM's
STOPPED = (0, -signal.SIGTERM)


def _reference(model_dir: Any, text: str) -> str:
    loaded = load_model(model_dir)
    ids = loaded.tokenizers["src"].encode(text)
    hyp = greedy_decode(loaded.model, torch.tensor([ids]), torch.tensor([len(ids)]))[0]
    return loaded.tokenizers["tgt"].decode(hyp.tokens)


def test_dhian_serve_answers_then_exits_cleanly_on_sigterm(tiny_dirs, tmp_path):
    port = free_port()
    argv = ["-m", "dhian", "serve", "--model", str(tiny_dirs["rnnsearch"]), "--port", str(port)]
    with server_process([*argv, "--device", "cpu"], port, tmp_path / "log") as (url, proc):
        health = httpx.get(f"{url}/health").json()
        assert health["kind"] == "translation" and health["name"] == "rnnsearch0/model"
        r = httpx.post(f"{url}/translate", json={"text": "Und es ward Licht."}, timeout=30)
        assert r.json()["results"][0]["translation"] == _reference(
            tiny_dirs["rnnsearch"], "Und es ward Licht."
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) in STOPPED
    log = (tmp_path / "log").read_text()
    assert "Application startup complete" in log and "Finished server process" in log


def test_sigterm_finishes_the_request_in_flight(tiny_dirs, tmp_path):
    script = tmp_path / "slow_server.py"
    script.write_text(SLOW_SERVER)
    port = free_port()
    text = "Im Anfang schuf Gott Himmel und Erde."
    model_dir = str(tiny_dirs["rnnsearch"])
    with server_process([str(script), model_dir, str(port), "2.0"], port, tmp_path / "log") as (
        url,
        proc,
    ):
        result: dict[str, Any] = {}

        def call() -> None:
            try:
                result["response"] = httpx.post(f"{url}/translate", json={"text": text}, timeout=60)
            except httpx.HTTPError as exc:  # pragma: no cover - reported below
                result["error"] = exc

        client = threading.Thread(target=call)
        started = time.monotonic()
        client.start()
        deadline = time.monotonic() + 20
        while httpx.get(f"{url}/health").json()["in_flight"] < 1:
            assert time.monotonic() < deadline, "the slow request never reached the worker"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(httpx.HTTPError):  # no new connections while shutting down
            httpx.get(f"{url}/health", timeout=2)
        client.join(60)
        assert "error" not in result, result.get("error")
        response = result["response"]
        assert response.status_code == 200
        assert response.json()["results"][0]["translation"] == _reference(model_dir, text)
        assert proc.wait(30) in STOPPED
        # it waited for the request (a 2 s sleep in the worker), not killed it; timed from the
        # request's start, since on a loaded machine the poll may see it in flight late
        assert time.monotonic() - started >= 2.0
    log = (tmp_path / "log").read_text()
    assert "Waiting for connections to close" in log and "Finished server process" in log


def test_cli_rejects_bad_settings_and_missing_model(tiny_dirs, tmp_path, capsys):
    assert main(["serve", "--model", str(tiny_dirs["rnnsearch"]), "--max-batch", "0"]) == 2
    assert "--max-batch must be >= 1" in capsys.readouterr().err
    assert main(["serve", "--model", str(tiny_dirs["rnnsearch"]), "--timeout", "0"]) == 2
    assert "--timeout must be > 0" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path / "nope"), "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "does not exist" in err and "Traceback" not in err


def test_a_port_in_use_is_one_error_line(tiny_dirs, capsys):

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code = main(["serve", "--model", str(tiny_dirs["rnnsearch"]), "--port", str(port)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: ") and f"port {port} on 127.0.0.1 is already in use" in err


def test_cli_rejects_non_finite_and_bad_connection_settings(tiny_dirs, capsys):
    model = str(tiny_dirs["rnnsearch"])
    for flag, value in (("--timeout", "nan"), ("--read-timeout", "inf")):
        with pytest.raises(SystemExit) as exit_info:
            main(["serve", "--model", model, flag, value])
        assert exit_info.value.code == 2
        assert "must be a finite number" in capsys.readouterr().err
    assert main(["serve", "--model", model, "--max-connections-per-client", "0"]) == 2
    assert "--max-connections-per-client must be >= 1" in capsys.readouterr().err
    assert main(["serve", "--model", model, "--llm-batch", "0"]) == 2
    assert "--llm-batch must be >= 1" in capsys.readouterr().err
    assert main(["serve", "--model", model, "--llm-context", "1"]) == 2
    assert "--llm-context must be >= 2" in capsys.readouterr().err
