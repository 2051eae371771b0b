"""The served page in real headless Chromium (Debian ``chromium`` driven by Playwright).

``dhian serve`` runs as a child process on a free loopback port; the browser may reach that
origin only (every other request is aborted and recorded). The test types a sentence, submits,
waits for the answer and the attention viewer, switches layer and head, hovers a token and
checks the highlighted values against the weights the API returns. Skips cleanly without
``/usr/bin/chromium`` or ``pip install playwright``. ``DHIAN_WRITE_DOCS_IMG=1`` rewrites
docs/img/serve.png from the trained tiny model in runs/rnnsearch-tiny (read only).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("uvicorn", reason="pip install fastapi uvicorn httpx")
import httpx
from server_proc import free_port, server_process

from dhian.viz import decode_weights
from helpers.browser import launch_chromium, needs_chromium

pytestmark = needs_chromium

REPO = Path(__file__).resolve().parents[2]
TRAINED = REPO / "runs" / "rnnsearch-tiny" / "best"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch_chromium() as b:
        yield b


@pytest.fixture()
def serve(tmp_path: Path) -> Iterator[Any]:
    """``serve(model_dir) -> url``: a ``dhian serve`` child process (stopped at the end)."""
    stack: list[Any] = []

    def start(model_dir: Path) -> str:
        port = free_port()
        argv = ["-m", "dhian", "serve", "--model", str(model_dir), "--port", str(port)]
        cm = server_process([*argv, "--device", "cpu"], port, tmp_path / f"log{port}")
        url, _proc = cm.__enter__()
        stack.append(cm)
        return url

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


def open_page(browser: Any, url: str) -> tuple[Any, Any, list[str], list[str]]:
    """(context, page, request URLs, page errors) with only ``url``'s origin reachable."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
    requests: list[str] = []
    errors: list[str] = []
    context.route(
        "**/*",
        lambda route: route.continue_() if route.request.url.startswith(url) else route.abort(),
    )
    page = context.new_page()
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{url}/")
    return context, page, requests, errors


def submit(page: Any, text: str, runs: int = 1) -> None:
    page.fill("#text", text)
    page.click("#go")
    # functions, not expressions: the page's CSP forbids eval
    page.wait_for_function(
        f"() => window.dhianServe.state.runs === {runs} && !window.dhianServe.state.busy",
        timeout=60_000,
    )
    state = page.evaluate("window.dhianServe.state")
    assert state["error"] is None, state["error"]
    page.wait_for_function(
        "() => window.dhianViewer && dhianViewer.state && dhianViewer.state.ready"
        " && !dhianViewer.state.busy",
        timeout=20_000,
    )


def wait_idle(page: Any, extra: str) -> None:
    page.wait_for_function(f"() => !dhianViewer.state.busy && ({extra})", timeout=20_000)


def hover(page: Any, panel: str, axis: str, i: int) -> dict[str, Any]:
    pt = page.evaluate("([p, a, i]) => dhianViewer.viewer.tokenPoint(p, a, i)", [panel, axis, i])
    page.mouse.move(pt["x"], pt["y"])
    return page.evaluate("dhianViewer.state.highlight")


def canvas(page: Any) -> str:
    return page.evaluate("document.querySelector('[data-role=heatmap]').toDataURL()")


def test_page_translates_and_explores_attention(browser, serve, tiny_dirs, tmp_path):
    url = serve(tiny_dirs["transformer"])
    sentence = "Und Gott sah das Licht."
    context, page, requests, errors = open_page(browser, url)
    submit(page, sentence)
    expected = httpx.post(f"{url}/translate", json={"text": sentence}).json()["results"][0]
    assert page.inner_text("#result .answer") == expected["translation"]
    assert page.get_attribute("#result", "data-state") == "done"
    payload = httpx.post(f"{url}/attention", json={"text": sentence}).json()
    weights = {k["id"]: decode_weights(k) for k in payload["kinds"]}
    kinds = page.eval_on_selector_all("[data-role=kind] option", "os => os.map(o => o.value)")
    assert kinds == ["encoder", "decoder", "cross"]
    assert page.inner_text(".dv-title") == "rnnsearch0/model attention".replace(
        "rnnsearch0", "transformer0"
    )

    page.select_option("[data-role=layer]", "1")
    page.select_option("[data-role=head]", "1")
    wait_idle(page, "dhianViewer.state.layer === 1 && dhianViewer.state.head === 1")
    before = canvas(page)
    hl = hover(page, "heatmap", "row", 2)
    assert (hl["axis"], hl["index"], hl["token"]) == ("row", 2, payload["tokens"]["src"][2])
    np.testing.assert_allclose(hl["values"], weights["encoder"][1, 1, 2], atol=2e-4)
    assert canvas(page) != before  # the hovered row is drawn highlighted
    page.select_option("[data-role=head]", "0")  # the mouse stays on the token
    wait_idle(page, "dhianViewer.state.head === 0")
    hl0 = page.evaluate("dhianViewer.state.highlight")
    np.testing.assert_allclose(hl0["values"], weights["encoder"][1, 0, 2], atol=2e-4)
    assert not np.allclose(hl0["values"], hl["values"], atol=1e-3)

    page.select_option("[data-role=kind]", "cross")
    wait_idle(page, "dhianViewer.state.kind === 'cross'")
    hl = hover(page, "heatmap", "row", 0)
    assert hl["token"] == payload["tokens"]["tgt"][0]
    page.screenshot(path=str(tmp_path / "serve.png"), full_page=True)
    assert (tmp_path / "serve.png").stat().st_size > 20_000

    submit(page, "Und es ward Licht.", runs=2)  # a second sentence replaces the viewer
    assert page.evaluate("document.querySelectorAll('.dhian-viewer').length") == 1
    sent = len(requests)
    page.fill("#text", "  ")
    page.evaluate("window.dhianServe.submit()")
    page.wait_for_function("() => window.dhianServe.state.runs === 3", timeout=20_000)
    assert page.get_attribute("#result", "data-state") == "error"
    assert "type a text first" in page.inner_text("#result") and len(requests) == sent
    assert not errors, errors
    assert requests and all(u.startswith(url) for u in requests), requests
    context.close()


def test_page_classifies_and_shows_error(browser, serve, tiny_dirs):
    url = serve(tiny_dirs["bert-cls"])
    context, page, _requests, errors = open_page(browser, url)
    submit(page, "a good film")
    expected = httpx.post(f"{url}/classify", json={"text": "a good film"}).json()["results"][0]
    assert page.inner_text("#result .answer") == expected["label"]
    assert page.evaluate("dhianViewer.state.kind") == "encoder"
    assert page.evaluate("dhianViewer.state.tq") == 5  # <cls> a good film <sep>
    page.evaluate("document.getElementById('text').removeAttribute('maxlength')")
    page.fill("#text", "x" * 2001)
    page.click("#go")
    page.wait_for_function("() => window.dhianServe.state.runs === 2", timeout=20_000)
    assert page.get_attribute("#result", "data-state") == "error"
    assert "2001 characters" in page.inner_text("#result")
    assert [e for e in errors if "status of 413" not in e] == [], errors
    context.close()


@pytest.mark.skipif(
    os.environ.get("DHIAN_WRITE_DOCS_IMG") != "1", reason="set DHIAN_WRITE_DOCS_IMG=1"
)
@pytest.mark.skipif(not TRAINED.is_dir(), reason=f"{TRAINED} missing (configs/rnnsearch-tiny)")
def test_write_docs_screenshot(browser, serve):
    """docs/img/serve.png: the page serving the trained tiny RNNsearch, one output token hovered."""
    url = serve(TRAINED)
    context, page, _requests, errors = open_page(browser, url)
    page.set_viewport_size({"width": 1280, "height": 1000})
    submit(page, "Und Jesus sprach zu ihnen.")
    hover(page, "lines", "row", 1)
    out = REPO / "docs" / "img" / "serve.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out), full_page=True)
    assert out.stat().st_size > 20_000 and not errors
    context.close()
