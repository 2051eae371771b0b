"""Attention of LLaMA-family models: causal self attention of every layer and head, heads
labelled with the KV head they share (grouped-query attention), the attention-sink picture, the
viewer payload and the served ``/attention``; SmolLM2 shows 30 layers × 9 heads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from dhian.inference.attention_maps import extract_attention, kv_head_labels
from dhian.inference.attention_report import write_attention_report
from dhian.inference.load import load_model
from dhian.models.model_dir import LoadedModel
from dhian.serve.app import create_app
from dhian.viz import decode_weights, entropy_heatmap, first_token_share, sink_heatmap
from helpers.threads import one_thread  # noqa: F401 - autouse fixture
from helpers.tiny_llama import save_tiny_llama

TEXT = "Grouped-query attention shares keys and values"
LABELS = ["h0 (kv0)", "h1 (kv0)", "h2 (kv1)", "h3 (kv1)"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load_model(save_tiny_llama(tmp_path_factory.mktemp("llama") / "model"))


def test_causal_weights_of_every_layer_and_head(tiny: LoadedModel) -> None:
    res = extract_attention(tiny, TEXT)
    n = len(tiny.tokenizers["src"].encode(TEXT))
    w = res.self_attention["decoder"]
    assert w.shape == (2, 4, n, n) and len(res.tokens_src) == n
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
    assert float(np.triu(w, k=1).max()) == 0.0  # nothing attends to the future
    assert res.head_labels == LABELS
    assert "4 query heads share 2 KV heads" in res.meta["grouped-query attention"]
    assert res.meta["layers × heads"] == "2 × 4"


def test_head_labels_name_the_kv_head_each_query_head_reads(tiny: LoadedModel) -> None:
    """Zero KV head 1's key projection: its query heads (labelled kv1) turn uniform."""
    model = tiny.model
    head_dim = model.cfg.head_dim
    attn = model.layers[0].self_attn
    if attn.k_proj is not None:
        k_proj, k0 = attn.k_proj.weight, 0
    else:  # fused for inference: qkv_proj rows are q (H·D), then k (Hkv·D), then v
        k_proj, k0 = attn.qkv_proj.weight, model.cfg.n_heads * head_dim
    saved = k_proj.detach().clone()
    try:
        with torch.no_grad():
            k_proj[k0 + head_dim : k0 + 2 * head_dim] = 0.0
        w = extract_attention(tiny, TEXT).self_attention["decoder"][0]  # (H, T, T)
    finally:
        with torch.no_grad():
            k_proj.copy_(saved)
    t = w.shape[-1]
    uniform = np.tril(np.ones((t, t))) / np.arange(1, t + 1)[:, None]
    for h, label in enumerate(LABELS):
        flat = np.allclose(w[h], uniform, atol=1e-6)
        assert flat == label.endswith("(kv1)"), label
    assert kv_head_labels(9, 3)[3:6] == ["h3 (kv1)", "h4 (kv1)", "h5 (kv1)"]
    assert kv_head_labels(4, 4) == ["h0 (kv0)", "h1 (kv1)", "h2 (kv2)", "h3 (kv3)"]


def test_report_payload_and_server_carry_the_labels(tiny: LoadedModel, tmp_path: Path) -> None:
    res = extract_attention(tiny, TEXT)
    payload = res.payload("tiny")
    assert payload["kinds"][0]["head_labels"] == LABELS
    np.testing.assert_allclose(
        decode_weights(payload["kinds"][0]), res.self_attention["decoder"], atol=1e-4
    )
    files = {p.name for p in write_attention_report(res, tmp_path, title="tiny")}
    fig = entropy_heatmap(res.self_attention["decoder"], head_labels=res.head_labels)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == LABELS
    assert {"decoder_heads.png", "decoder_sink.png", "attention.html"} <= files
    assert '"head_labels":["h0 (kv0)"' in (tmp_path / "attention.html").read_text("utf-8")
    with TestClient(create_app(tiny, name="tiny")) as client:
        body = client.post("/attention", json={"text": TEXT}).json()
    assert body["kinds"][0]["head_labels"] == LABELS and body["kinds"][0]["heads"] == 4


def test_first_token_share_and_sink_heatmap(tmp_path: Path) -> None:
    w = np.zeros((2, 3, 4, 4), dtype=np.float32)
    w[..., 0] = 1.0  # every query on token 0 ...
    w[1, 2] = np.eye(4)  # ... except layer 1 head 2, on itself
    share = first_token_share(w)
    assert share.shape == (2, 3) and share[0].tolist() == [1.0, 1.0, 1.0]
    assert share[1].tolist() == [1.0, 1.0, 0.0]  # query 0 (always on itself) is left out
    fig = sink_heatmap(w, tmp_path / "s.png", first_token="<s>", head_labels=["a", "b", "c"])
    assert (tmp_path / "s.png").stat().st_size > 1000
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="3 names"):
        sink_heatmap(w, head_labels=["a"])
    with pytest.raises(ValueError, match="at least 2 tokens"):
        first_token_share(w[:, :, :1, :1])


def test_smollm2_shows_30_layers_by_9_heads_and_a_sink() -> None:
    from helpers.smollm2 import smollm2_path

    smollm2_path()  # skips when the wheel is not available
    res = extract_attention(load_model("smollm2"), "The cat sat on the mat and looked at the dog.")
    w = res.self_attention["decoder"]
    assert w.shape[:2] == (30, 9)
    assert res.head_labels is not None and res.head_labels[8] == "h8 (kv2)"
    share = first_token_share(w)  # (30, 9)
    assert float(share[15:].mean()) > 0.5  # the deeper layers sink on the first token
