"""The chat box of the served page, in headless Chromium against a real server on 127.0.0.1: a
tiny llama with the SmolLM2 chat template streams its replies through
``/v1/chat/completions``; the conversation is kept across turns, "new chat" clears it, and what
the user types is shown as text, never run as HTML. Pages of models without a chat template
have no chat box. Skips without Chromium or Playwright."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from server_proc import free_port

from dhian.inference.chat import chat_reply
from dhian.inference.load import load_model
from dhian.models.model_dir import LoadedModel
from dhian.serve.app import ServeSettings, create_app
from dhian.serve.page import page_html
from helpers.browser import launch_chromium, needs_chromium
from helpers.tiny_llama import save_tiny_llama

pytestmark = needs_chromium
EVIL = '<img src=x onerror="window.pwned=1">hello & <b>bye</b>'


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load_model(save_tiny_llama(tmp_path_factory.mktemp("llama") / "model"))


REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def url(tiny: LoadedModel) -> Iterator[str]:
    with live(tiny, "tiny-chat", max_new_tokens=32) as base:
        yield base


@contextmanager
def live(loaded: LoadedModel, name: str, **settings: Any) -> Iterator[str]:
    """Serve ``loaded`` with uvicorn on a free loopback port; yield the base URL."""
    app = create_app(loaded, ServeSettings(**settings), name=name)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch_chromium() as b:
        yield b


def send(page: Any, text: str, turns: int) -> dict[str, Any]:
    page.fill("#chat-text", text)
    page.press("#chat-text", "Enter")
    page.wait_for_function(
        f"() => window.dhianServe.chat.state.turns === {turns} && !window.dhianServe.chat.state.busy",
        timeout=60_000,
    )
    state: dict[str, Any] = page.evaluate("window.dhianServe.chat.state")
    assert state["error"] is None, state["error"]
    return state


def test_chat_box_streams_keeps_history_and_escapes(
    browser: Any, url: str, tiny: LoadedModel
) -> None:
    context = browser.new_context()
    outside: list[str] = []
    context.route(
        "**/*",
        lambda route: (
            route.continue_()
            if route.request.url.startswith(url)
            else (outside.append(route.request.url), route.abort())
        ),
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{url}/")
    page.fill("#chat_temperature", "0")
    page.fill("#chat_max_tokens", "6")

    state = send(page, EVIL, 1)
    first = chat_reply(tiny, [{"role": "user", "content": EVIL}], max_new_tokens=6, temperature=0.0)
    assert state["messages"] == [
        {"role": "user", "content": EVIL},
        {"role": "assistant", "content": first.text},
    ]
    bubbles = page.eval_on_selector_all("#chat-log .msg", "ns => ns.map(n => n.textContent)")
    assert bubbles == [EVIL, first.text]
    assert page.eval_on_selector_all("#chat-log img, #chat-log b", "ns => ns.length") == 0
    assert page.evaluate("window.pwned === undefined")

    state = send(page, "and again", 2)
    assert [m["role"] for m in state["messages"]] == ["user", "assistant", "user", "assistant"]
    second = chat_reply(tiny, state["messages"][:3], max_new_tokens=6, temperature=0.0)
    assert state["messages"][3]["content"] == second.text

    page.click("#chat-reset")
    assert page.evaluate("window.dhianServe.chat.state.messages.length") == 0
    assert page.eval_on_selector_all("#chat-log .msg", "ns => ns.length") == 0

    page.fill("#chat_max_tokens", "999")  # over the server's --max-new-tokens 32
    page.fill("#chat-text", "too long")
    page.press("#chat-text", "Enter")
    page.wait_for_function("() => window.dhianServe.chat.state.turns === 3", timeout=30_000)
    err = page.evaluate("window.dhianServe.chat.state.error")
    assert "max_tokens is 999" in err and "32" in err
    assert page.eval_on_selector("#chat-log .msg.error", "n => n.textContent").startswith("error:")
    assert errors == [] and outside == []
    context.close()


def test_generate_form_shows_llama_attention_with_kv_head_labels(browser: Any, url: str) -> None:
    page = browser.new_page()
    page.goto(f"{url}/")
    page.fill("#max_new_tokens", "3")
    page.fill("#text", "Once upon a time")
    page.click("#go")
    page.wait_for_function(
        "() => window.dhianServe.state.runs === 1 && !window.dhianServe.state.busy"
        " && window.dhianViewer && dhianViewer.state && dhianViewer.state.ready",
        timeout=60_000,
    )
    assert page.evaluate("window.dhianServe.state.error") is None
    options = page.eval_on_selector_all(
        "select[data-role=head] option", "ns => ns.map(n => n.textContent)"
    )
    assert options == ["average of heads", "h0 (kv0)", "h1 (kv0)", "h2 (kv1)", "h3 (kv1)"]
    page.select_option("select[data-role=head]", "2")
    page.wait_for_function("() => !dhianViewer.state.busy", timeout=20_000)
    assert "h2 (kv1)" in page.eval_on_selector(".dhian-viewer", "n => n.textContent")
    page.close()


def test_only_chat_models_get_a_chat_box() -> None:
    info = {"name": "m", "kind": "lm", "model_type": "gpt", "endpoints": ["/generate"]}
    info["max_chars"] = 100
    assert 'id="chat"' not in page_html({**info, "chat": False})
    assert 'id="chat"' in page_html({**info, "chat": True})


@pytest.mark.skipif(
    os.environ.get("DHIAN_WRITE_DOCS_IMG") != "1", reason="set DHIAN_WRITE_DOCS_IMG=1"
)
def test_write_docs_chat_screenshot(browser: Any) -> None:
    """docs/img/serve-chat.png: the page serving SmolLM2, two chat turns answered greedily."""
    with live(load_model("smollm2"), "smollm2") as base:
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(f"{base}/")
        page.fill("#chat_temperature", "0")
        page.fill("#chat_max_tokens", "60")
        send(page, "What is attention in a transformer? One sentence.", 1)
        send(page, "And what is an attention sink?", 2)
        out = REPO / "docs" / "img" / "serve-chat.png"
        page.locator("#chat").screenshot(path=str(out))
        assert out.stat().st_size > 10_000
        page.close()
