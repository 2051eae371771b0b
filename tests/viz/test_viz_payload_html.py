"""The viewer's payload (quantisation round trip, token sides, errors) and the HTML it lands in."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from viz_synthetic import SRC, TGT, cross_attention, self_attention

from dhian.viz import attention_payload, decode_weights, viewer_assets, viewer_html
from dhian.viz import payload as payload_mod
from dhian.viz.html import write_attention_html


def _payload(**kw):
    enc = self_attention(len(SRC), 2, 3)
    dec = self_attention(len(TGT), 2, 3, causal=True)
    return attention_payload(
        tokens_src=SRC,
        tokens_tgt=TGT,
        self_attention={"encoder": enc, "decoder": dec},
        cross_attention=cross_attention(2, 3),
        **kw,
    ), (enc, dec)


def test_payload_kinds_sides_and_u16_round_trip():
    p, (enc, dec) = _payload(title="t", meta={"bleu": 27.5})
    assert p["version"] == 1 and p["meta"] == {"bleu": 27.5}
    kinds = {k["id"]: k for k in p["kinds"]}
    assert list(kinds) == ["encoder", "decoder", "cross"]
    assert (kinds["encoder"]["query"], kinds["encoder"]["key"]) == ("src", "src")
    assert (kinds["decoder"]["query"], kinds["decoder"]["key"]) == ("tgt", "tgt")
    assert (kinds["cross"]["query"], kinds["cross"]["key"]) == ("tgt", "src")
    assert (kinds["cross"]["tq"], kinds["cross"]["tk"]) == (len(TGT), len(SRC))
    assert kinds["encoder"]["encoding"] == "u16"
    np.testing.assert_allclose(decode_weights(kinds["encoder"]), enc, atol=1e-5)
    np.testing.assert_allclose(decode_weights(kinds["decoder"]), dec, atol=1e-5)
    json.dumps(p)  # JSON-ready


@pytest.mark.parametrize("compress", [True, False])
def test_payload_u8sqrt_round_trip(compress):
    w = self_attention(20, 1, 2, seed=4)
    p = attention_payload(
        tokens_src=[str(i) for i in range(20)],
        self_attention={"encoder": w},
        precision="u8sqrt",
        compress=compress,
    )
    (kind,) = p["kinds"]
    assert kind["compression"] == ("zlib" if compress else "none")
    back = decode_weights(kind)
    assert np.abs(back - w).max() < 0.004
    small = w < 0.01  # the sqrt scale is finer near 0
    assert np.abs(back - w)[small].max() < 0.0004


def test_payload_auto_switches_to_8_bits_for_big_tensors(monkeypatch):
    monkeypatch.setattr(payload_mod, "AUTO_U16_MAX_VALUES", 100)
    p = attention_payload(tokens_src=list("abcdef"), self_attention={"x": self_attention(6, 2, 2)})
    assert p["kinds"][0]["encoding"] == "u8sqrt"


def test_payload_rnn_cross_attention_is_one_layer_one_head():
    w = cross_attention(1, 1)[0, 0]
    p = attention_payload(tokens_src=SRC, tokens_tgt=TGT, cross_attention=w)
    (kind,) = p["kinds"]
    assert (kind["layers"], kind["heads"]) == (1, 1)
    np.testing.assert_allclose(decode_weights(kind)[0, 0], w, atol=1e-5)


def test_payload_errors():
    enc = self_attention(len(SRC), 1, 1)
    with pytest.raises(ValueError, match="neither"):
        attention_payload(tokens_src=SRC)
    with pytest.raises(ValueError, match="needs tokens_tgt"):
        attention_payload(tokens_src=SRC, cross_attention=cross_attention(1, 1))
    with pytest.raises(ValueError, match=r"= \(1, 1, 15, 15\).*received \(1, 1, 14, 14\)"):
        attention_payload(tokens_src=SRC, tokens_tgt=TGT, self_attention={"decoder": enc})
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        attention_payload(tokens_src=SRC, self_attention={"encoder": enc * 3})
    with pytest.raises(ValueError, match="precision"):
        attention_payload(tokens_src=SRC, self_attention={"e": enc}, precision="f16")  # type: ignore[arg-type]


def _embedded_json(page: str, element_id: str = "dhian-viewer") -> dict:
    m = re.search(
        rf'<script type="application/json" id="{element_id}-data">(.*?)</script>', page, re.S
    )
    assert m, "payload script missing"
    return json.loads(m.group(1))


def test_html_is_one_offline_file(tmp_path):
    toks = ["<b>", "</script><script>alert(1)</script>", "&amp;", "x"]
    w = np.full((1, 1, 4, 4), 0.25)
    out = write_attention_html(
        tmp_path / "v" / "attn.html",
        tokens_src=toks,
        self_attention={"encoder": w},
        title="<Title> & co",
        meta={"model": "m"},
    )
    page = out.read_text(encoding="utf-8")
    assert page.count("</script>") == page.count("<script")  # tokens cannot close a script
    assert "<title>&lt;Title&gt; &amp; co</title>" in page
    assert not re.search(r"(src|href)\s*=", page)  # no external script, stylesheet, font, image
    assert not re.search(r"https?://", page)
    assert "default-src 'none'" in page  # CSP: the page may not fetch anything
    data = _embedded_json(page)
    assert data["tokens"]["src"] == toks and data["meta"] == {"model": "m"}
    np.testing.assert_allclose(decode_weights(data["kinds"][0]), w, atol=1e-5)
    with pytest.raises(ValueError, match=r"\.html"):
        write_attention_html(tmp_path / "a.png", tokens_src=toks, self_attention={"e": w})


def test_viewer_fragment_modes():
    p, _ = _payload()
    embedded = viewer_html(p, element_id="v1")
    assert 'data-dv-data="v1-data"' in embedded and _embedded_json(embedded, "v1") == p
    api = viewer_html(api_url="/api/attention?id=3&x=1", element_id="v2")
    assert 'data-dv-api="/api/attention?id=3&amp;x=1"' in api and "v2-data" not in api
    bare = viewer_html(element_id="v3", include_assets=False)
    assert "<style>" not in bare and "window.dhianViewer.render" not in bare
    assert "dhianViewer.autoload()" in bare
    with pytest.raises(ValueError, match="element_id"):
        viewer_html(p, element_id='x" onload="y')
    with pytest.raises(ValueError, match="not both"):
        viewer_html(p, api_url="/a")


def test_viewer_assets_share_the_style_module():
    from dhian.viz import style

    css, js = viewer_assets()
    assert ".dhian-viewer" in css
    assert "window.dhianViewer = api" in js and "</script" not in js.lower()
    lut = json.loads(re.search(r"const STYLE = (\{.*?\});", js).group(1))
    assert lut["lut"] == style.colormap_lut(style.ATTENTION_CMAP)
    assert lut["lut"][0] == "#000000" and lut["lut"][-1] == "#ffffff"  # grey scale, 1 = white
    assert lut["palette"] == list(style.PALETTE)
