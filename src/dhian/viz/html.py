"""Self-contained interactive attention viewer: one HTML file, all JS/CSS inline, no network.

Owns :func:`write_attention_html` (a standalone page), :func:`viewer_html` (the same viewer as
an HTML fragment, embedding a payload or fetching it from an API URL, for the web server) and
:func:`viewer_assets` (the CSS and JS alone). The page renders with ``window.dhianViewer``:
``render(element, payload)``, ``load(element, url)``, ``state`` (test hook: kind, layer, head,
hover, highlighted values, timings), ``viewer.tokenPoint(panel, axis, i)``.
Data format: :mod:`dhian.viz.payload`. Colours: :mod:`dhian.viz.style`.
Imports: the standard library and :mod:`dhian.viz` modules (no model code).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dhian.viz import style
from dhian.viz._viewer_core_js import CORE_JS
from dhian.viz._viewer_draw_js import DRAW_JS
from dhian.viz.payload import Precision, attention_payload

__all__ = ["VIEWER_CSS", "viewer_assets", "viewer_html", "write_attention_html"]

VIEWER_CSS = """
.dhian-viewer { font: 13px/1.45 ui-sans-serif, system-ui, "DejaVu Sans", "Liberation Sans", Arial,
  sans-serif; color: #1d1d1f; background: #fff; padding: 14px 18px 16px; box-sizing: border-box; }
.dhian-viewer * { box-sizing: border-box; }
.dhian-viewer .dv-header { display: flex; align-items: baseline; gap: 14px; flex-wrap: wrap;
  border-bottom: 1px solid #e6e6e6; padding-bottom: 8px; margin-bottom: 10px; }
.dhian-viewer .dv-title { font-size: 18px; font-weight: 650; margin: 0; }
.dhian-viewer .dv-meta { display: flex; flex-wrap: wrap; gap: 6px; }
.dhian-viewer .dv-chip { background: #f1f1f3; border-radius: 10px; padding: 1px 9px; font-size: 12px;
  color: #444; }
.dhian-viewer .dv-chip b { font-weight: 600; color: #222; }
.dhian-viewer .dv-controls { display: flex; flex-wrap: wrap; align-items: center; gap: 16px;
  margin-bottom: 12px; }
.dhian-viewer label { font-size: 12px; color: #555; display: flex; align-items: center; gap: 6px; }
.dhian-viewer select { font: inherit; font-size: 13px; padding: 3px 6px; border: 1px solid #c9c9cf;
  border-radius: 6px; background: #fff; color: #1d1d1f; }
.dhian-viewer .dv-legend { display: flex; gap: 3px; align-items: center; flex-wrap: wrap; }
.dhian-viewer .dv-swatch { min-width: 20px; height: 20px; padding: 0 3px; border-radius: 5px;
  cursor: pointer; border: 2px solid transparent; font-size: 10px; color: #fff; display: flex;
  align-items: center; justify-content: center; font-weight: 600; user-select: none; }
.dhian-viewer .dv-swatch.dv-on { border-color: #111; box-shadow: 0 0 0 1px #fff inset; }
.dhian-viewer .dv-body { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
.dhian-viewer .dv-panel { border: 1px solid #e6e6e6; border-radius: 10px; padding: 8px 12px 12px;
  background: #fff; box-shadow: 0 1px 2px rgba(0,0,0,.04); max-width: 100%; overflow-x: auto; }
.dhian-viewer .dv-panel h3 { margin: 0 0 1px; font-size: 13px; font-weight: 650; }
.dhian-viewer .dv-caption { font-size: 11px; color: #777; margin-bottom: 8px; max-width: 620px; }
.dhian-viewer .dv-scroll { max-height: 640px; overflow-y: auto; }
.dhian-viewer canvas { display: block; }
.dhian-viewer .dv-info { margin-top: 12px; min-height: 22px; font-size: 12.5px; color: #222;
  font-variant-numeric: tabular-nums; background: #fafafa; border-radius: 8px; padding: 6px 10px; }
.dhian-viewer .dv-status { margin-top: 6px; font-size: 11px; color: #888; }
.dhian-viewer .dv-error { color: #b00020; }
"""

_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


def _style_json() -> str:
    return json.dumps(
        {
            "lut": style.colormap_lut(style.ATTENTION_CMAP),
            "palette": list(style.PALETTE),
            "accent": style.ACCENT,
        }
    )


def viewer_assets() -> tuple[str, str]:
    """``(css, js)`` of the viewer. The JS defines ``window.dhianViewer`` once (a second copy
    on the same page only runs ``autoload``) and renders every ``.dhian-viewer[data-dv-autoload]``.
    """
    js = (
        "(function () {\n"
        '"use strict";\n'
        "if (window.dhianViewer && window.dhianViewer.__dhian) {"
        " window.dhianViewer.autoload(); return; }\n"
        f"const STYLE = {_style_json()};\n"
        f"{CORE_JS}\n{DRAW_JS}\n"
        "window.dhianViewer = api;\n"
        'if (document.readyState === "loading") '
        'document.addEventListener("DOMContentLoaded", autoload);\n'
        "else autoload();\n"
        "})();\n"
    )
    return VIEWER_CSS, js


def _script_json(payload: Mapping[str, Any] | str) -> str:
    """JSON safe inside ``<script type="application/json">`` (no ``</script>``, no ``<!--``)."""
    text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def viewer_html(
    payload: Mapping[str, Any] | str | None = None,
    *,
    api_url: str | None = None,
    element_id: str = "dhian-viewer",
    include_assets: bool = True,
) -> str:
    """The viewer as an HTML fragment (``<style>``, a ``<div>``, ``<script>``s).

    Give ``payload`` (a dict from :func:`dhian.viz.payload.attention_payload` or its JSON
    string) to embed the data, or ``api_url`` for the page to fetch that JSON (server mode),
    or neither and call ``window.dhianViewer.render("#<element_id>", data)`` yourself.
    ``include_assets=False`` leaves out the CSS/JS when the page already has them (several
    viewers on one page).
    """
    if not _ID.match(element_id):
        raise ValueError(
            f"viewer_html: element_id must match {_ID.pattern}, received {element_id!r}"
        )
    if payload is not None and api_url is not None:
        raise ValueError("viewer_html: give payload or api_url, not both")
    css, js = viewer_assets()
    attrs = f'class="dhian-viewer" id="{element_id}"'
    data = ""
    if payload is not None:
        attrs += f' data-dv-autoload data-dv-data="{element_id}-data"'
        data = (
            f'<script type="application/json" id="{element_id}-data">'
            f"{_script_json(payload)}</script>\n"
        )
    elif api_url is not None:
        attrs += f' data-dv-autoload data-dv-api="{html.escape(api_url, quote=True)}"'
    parts = [f"<style>{css}</style>\n" if include_assets else ""]
    parts.append(f'<div {attrs}><div class="dv-status">loading attention viewer…</div></div>\n')
    parts.append(data)
    parts.append(
        f"<script>{js}</script>\n"
        if include_assets
        else "<script>window.dhianViewer && window.dhianViewer.autoload();</script>\n"
    )
    return "".join(parts)


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; \
script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: blob:">
<meta name="generator" content="dhian.viz">
<title>{title}</title>
<style>body {{ margin: 0; background: #f6f6f8; }}</style>
</head>
<body>
{fragment}</body>
</html>
"""


def write_attention_html(
    path: str | Path,
    *,
    tokens_src: Sequence[str],
    tokens_tgt: Sequence[str] | None = None,
    self_attention: Mapping[str, Any] | None = None,
    cross_attention: Any = None,
    title: str = "Attention",
    meta: Mapping[str, Any] | None = None,
    precision: Precision = "auto",
    head_labels: Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """Write one self-contained HTML file showing the attention given; returns its path.

    ``self_attention``: {name: (L, H, T, T)} (e.g. "encoder", "decoder"; names with "dec"
    use ``tokens_tgt``); ``cross_attention``: (L, H, Tt, Ts) or an RNN's (Tt, Ts).
    The page has a picker for kind, layer and head (or the average of heads), a canvas
    heatmap and a head view, hover to highlight a token's row/column and read its values.
    ``head_labels``: kind name → a name per head (see :func:`attention_payload`).
    No CDN and no network: a Content-Security-Policy forbids any request.
    """
    out = Path(path)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"write_attention_html: path must end in .html, received {out.name!r}")
    payload = attention_payload(
        tokens_src=tokens_src,
        tokens_tgt=tokens_tgt,
        self_attention=self_attention,
        cross_attention=cross_attention,
        title=title,
        meta=meta,
        precision=precision,
        head_labels=head_labels,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    page = _PAGE.format(title=html.escape(str(title)), fragment=viewer_html(payload))
    out.write_text(page, encoding="utf-8")
    return out
