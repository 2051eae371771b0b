"""The HTML viewer in real headless Chromium (Debian ``chromium`` driven by Playwright).

Offline: the file is opened with networking disabled and every request recorded; only the
file itself may load. Drives the picker (kind, layer, head), hovers tokens with the mouse and
checks the highlighted values against the weights written, and the canvas pixels. Skips cleanly
without ``/usr/bin/chromium`` (``apt-get install -y chromium``) or ``pip install playwright``.
``DHIAN_VIEWER_SCREENSHOTS=<dir>`` keeps the screenshots; ``DHIAN_WRITE_DOCS_IMG=1`` rewrites
docs/img/viewer.png.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from viz_synthetic import SRC, TGT, cross_attention, self_attention

from dhian.viz import write_attention_html
from helpers.browser import launch_chromium, needs_chromium

pytestmark = needs_chromium

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch_chromium() as b:
        yield b


@pytest.fixture()
def offline_page(browser: Any) -> Iterator[tuple[Any, list[str], list[str]]]:
    """A page with networking off; yields (page, every request URL, page errors)."""
    context = browser.new_context(
        viewport={"width": 1400, "height": 1000}, offline=True, device_scale_factor=1
    )
    requests: list[str] = []
    errors: list[str] = []
    context.route(
        "**/*",
        lambda route: (
            route.continue_() if route.request.url.startswith("file://") else route.abort()
        ),
    )
    page = context.new_page()
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield page, requests, errors
    context.close()


def _shots() -> Path | None:
    d = os.environ.get("DHIAN_VIEWER_SCREENSHOTS")
    return Path(d) if d else None


def _wait_idle(page: Any, extra: str = "true") -> None:
    # a function, not an expression: polling an expression needs eval, which the page's CSP blocks
    page.wait_for_function(
        "() => window.dhianViewer && dhianViewer.state && dhianViewer.state.ready"
        f" && !dhianViewer.state.busy && ({extra})",
        timeout=20_000,
    )


def _hover(page: Any, panel: str, axis: str, i: int, j: int | None = None) -> dict:
    pt = page.evaluate(
        "([p, a, i, j]) => dhianViewer.viewer.tokenPoint(p, a, i, j)", [panel, axis, i, j]
    )
    page.mouse.move(pt["x"], pt["y"])
    return page.evaluate("dhianViewer.state.highlight")


def _canvas(page: Any, role: str) -> str:
    return page.evaluate(f"document.querySelector('[data-role={role}]').toDataURL()")


def _demo(path: Path, layers: int = 2, heads: int = 3) -> dict[str, np.ndarray]:
    enc = self_attention(len(SRC), layers, heads, seed=1, sep=len(SRC) - 1)
    dec = self_attention(len(TGT), layers, heads, seed=2, causal=True)
    cross = cross_attention(layers, heads)
    write_attention_html(
        path,
        tokens_src=SRC,
        tokens_tgt=TGT,
        self_attention={"encoder": enc, "decoder": dec},
        cross_attention=cross,
        title="synthetic demo",
        meta={"model": "synthetic demo (not a trained model)", "layers": layers, "heads": heads},
    )
    return {"encoder": enc, "decoder": dec, "cross": cross}


def test_viewer_offline_pick_hover_highlight(tmp_path, offline_page):
    page, requests, errors = offline_page
    w = _demo(tmp_path / "demo.html")
    page.goto((tmp_path / "demo.html").as_uri())
    _wait_idle(page)
    state = page.evaluate("dhianViewer.state")
    assert (state["kind"], state["layer"], state["head"]) == ("encoder", 0, -1)
    kinds = page.eval_on_selector_all("[data-role=kind] option", "os => os.map(o => o.value)")
    assert kinds == ["encoder", "decoder", "cross"]

    page.select_option("[data-role=layer]", "1")
    page.select_option("[data-role=head]", "2")
    _wait_idle(page, "dhianViewer.state.layer === 1 && dhianViewer.state.head === 2")
    before = _canvas(page, "heatmap")
    hl = _hover(page, "heatmap", "row", 4)
    assert (hl["axis"], hl["index"], hl["token"]) == ("row", 4, SRC[4])
    np.testing.assert_allclose(hl["values"], w["encoder"][1, 2, 4], atol=2e-4)
    assert hl["top"][0]["index"] == int(np.argmax(w["encoder"][1, 2, 4]))
    assert _canvas(page, "heatmap") != before  # the row is drawn highlighted
    assert page.get_attribute(".dhian-viewer", "data-hover") == "row:4:"
    assert SRC[4] in page.inner_text("[data-role=info]")

    page.select_option("[data-role=head]", "0")  # the mouse stays: same token, new head
    _wait_idle(page, "dhianViewer.state.head === 0")
    hl0 = page.evaluate("dhianViewer.state.highlight")
    assert hl0["index"] == 4
    np.testing.assert_allclose(hl0["values"], w["encoder"][1, 0, 4], atol=2e-4)
    assert not np.allclose(hl0["values"], hl["values"], atol=1e-3)
    page.click(".dv-swatch[data-head='1']")  # legend swatches pick a head too
    _wait_idle(page, "dhianViewer.state.head === 1")
    page.click(".dv-swatch[data-head='0']")
    _wait_idle(page, "dhianViewer.state.head === 0")

    hl = _hover(page, "lines", "col", 6)  # a key token in the head view
    assert (hl["axis"], hl["index"]) == ("col", 6)
    np.testing.assert_allclose(hl["values"], w["encoder"][1, 0, :, 6], atol=2e-4)

    page.select_option("[data-role=head]", "-1")  # average of heads
    _wait_idle(page, "dhianViewer.state.head === -1")
    hl = _hover(page, "heatmap", "cell", 2, 3)
    assert hl["cell"] == [2, 3]
    assert hl["value"] == pytest.approx(w["encoder"][1, :, 2, 3].mean(), abs=2e-4)

    page.select_option("[data-role=kind]", "cross")
    _wait_idle(page, "dhianViewer.state.kind === 'cross'")
    state = page.evaluate("dhianViewer.state")
    assert (state["tq"], state["tk"], state["layer"]) == (len(TGT), len(SRC), 1)
    hl = _hover(page, "lines", "row", 5)
    assert hl["token"] == TGT[5]
    np.testing.assert_allclose(hl["values"], w["cross"][1].mean(0)[5], atol=2e-4)
    page.mouse.move(2, 2)
    page.wait_for_function("() => dhianViewer.state.highlight === null")
    unit = _canvas(page, "heatmap")
    page.select_option("[data-role=scale]", "row")  # each row scaled to its maximum
    _wait_idle(page, "dhianViewer.state.scale === 'row'")
    assert _canvas(page, "heatmap") != unit

    shots = _shots() or tmp_path
    shot = shots / "viewer_demo.png"
    _hover(page, "heatmap", "row", 4)
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    assert not errors, errors
    assert requests and all(u.startswith("file://") for u in requests), requests


def test_viewer_512_tokens_6_layers_12_heads(tmp_path, offline_page):
    page, requests, errors = offline_page
    t, layers, heads = 512, 6, 12
    w = self_attention(t, layers, heads, seed=7)
    path = write_attention_html(
        tmp_path / "big.html",
        tokens_src=[f"tok{i}" for i in range(t)],
        self_attention={"encoder": w},
        title="512 tokens",
    )
    size_mb = path.stat().st_size / 1e6
    assert size_mb < 16, f"{size_mb:.1f} MB for {w.size:,} weights"  # 8-bit sqrt + zlib
    start = time.perf_counter()
    page.goto(path.as_uri())
    _wait_idle(page)
    wall = time.perf_counter() - start
    timings = page.evaluate("dhianViewer.state.timings")
    assert wall < 10 and timings["total"] < 5_000, (wall, timings)  # ~1-2 s unloaded
    heat = page.evaluate("document.querySelectorAll('canvas').length")
    assert heat < 10  # a bitmap, not 262,144 DOM cells
    start = time.perf_counter()
    page.select_option("[data-role=layer]", "5")
    page.select_option("[data-role=head]", "11")
    _wait_idle(page, "dhianViewer.state.layer === 5 && dhianViewer.state.head === 11")
    hl = _hover(page, "heatmap", "cell", 300, 299)
    assert time.perf_counter() - start < 5
    row, col = hl["cell"]  # cells are ~1 px wide here: the mouse may land on a neighbour
    assert abs(row - 300) <= 1 and abs(col - 299) <= 1
    np.testing.assert_allclose(hl["values"], w[5, 11, row], atol=4e-3)  # 8-bit sqrt scale
    hl = _hover(page, "lines", "row", 400)  # scrolled into view
    assert hl["index"] == 400
    shots = _shots()
    if shots:
        page.screenshot(path=str(shots / "viewer_512.png"))
    assert not errors, errors
    assert all(u.startswith("file://") for u in requests), requests


def test_viewer_api_mode_fetches_payload(browser, tmp_path):
    from dhian.viz import attention_payload, viewer_html

    payload = attention_payload(
        tokens_src=SRC, tokens_tgt=TGT, cross_attention=cross_attention(1, 2), title="api"
    )
    context = browser.new_context()
    served: list[str] = []

    def handle(route: Any) -> None:
        url = route.request.url
        if url.startswith("http://dhian.test/api/attention"):
            served.append(url)
            route.fulfill(json=payload)
        elif url == "http://dhian.test/":
            route.fulfill(
                content_type="text/html",
                body="<!doctype html><meta charset=utf-8><body>"
                + viewer_html(api_url="/api/attention?id=1")
                + "</body>",
            )
        else:
            route.abort()

    context.route("**/*", handle)
    page = context.new_page()
    page.goto("http://dhian.test/")
    _wait_idle(page)
    assert served == ["http://dhian.test/api/attention?id=1"]
    assert page.evaluate("dhianViewer.state.kind") == "cross"
    assert page.inner_text(".dv-title") == "api"
    context.close()


@pytest.mark.skipif(
    os.environ.get("DHIAN_WRITE_DOCS_IMG") != "1", reason="set DHIAN_WRITE_DOCS_IMG=1"
)
def test_write_docs_screenshot(tmp_path, offline_page):
    """docs/img/viewer.png: the cross attention of the synthetic demo, one token hovered."""
    page, _, errors = offline_page
    _demo(tmp_path / "demo.html", layers=6, heads=8)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto((tmp_path / "demo.html").as_uri())
    _wait_idle(page)
    page.select_option("[data-role=kind]", "cross")
    page.select_option("[data-role=layer]", "5")
    _wait_idle(page, "dhianViewer.state.kind === 'cross' && dhianViewer.state.layer === 5")
    _hover(page, "lines", "row", TGT.index("européenne"))
    out = REPO / "docs" / "img" / "viewer.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    page.locator(".dhian-viewer").screenshot(path=str(out))
    assert out.stat().st_size > 20_000 and not errors
