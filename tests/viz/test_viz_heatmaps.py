"""alignment_heatmap, head_grid, head_view: files written, labels, values, shape errors."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.collections import LineCollection
from matplotlib.image import imread
from viz_synthetic import softmax

from dhian.viz import alignment_heatmap, head_grid, head_view
from dhian.viz.style import new_figure

SRC = ["the", "cat", "sat", "on", "the", "mat", "</s>"]
TGT = ["le", "chat", "s'est", "assis", "</s>"]


def _cross(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return softmax(rng.normal(0, 2, (len(TGT), len(SRC))))


def _self(layers: int, heads: int, t: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return softmax(rng.normal(0, 2, (layers, heads, t, t)))


def test_alignment_heatmap_png_labels_and_values(tmp_path):
    w = _cross()
    out = tmp_path / "sub" / "align.png"
    fig = alignment_heatmap(w, SRC, TGT, path=out, title="t")
    assert out.exists() and out.stat().st_size > 5_000
    h, wpx = imread(out).shape[:2]
    assert 200 < wpx < 4000 and 200 < h < 4000
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == SRC
    assert [t.get_text() for t in ax.get_yticklabels()] == TGT
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), w)
    assert ax.xaxis.get_ticks_position() == "top"  # source on top, as in Bahdanau Fig. 3
    assert ax.images[0].get_cmap().name == "gray"
    assert not ax.texts


def test_alignment_heatmap_annotate_writes_every_value():
    w = _cross(1)
    fig = alignment_heatmap(w, SRC, TGT, annotate=True)
    texts = fig.axes[0].texts
    assert len(texts) == len(SRC) * len(TGT)
    row, col = np.unravel_index(np.argmax(w), w.shape)
    expected = f"{w[row, col]:.2f}".lstrip("0")
    assert any(t.get_text() == expected and t.get_position() == (col, row) for t in texts)


@pytest.mark.parametrize(("suffix", "magic"), [(".svg", b"<?xml"), (".pdf", b"%PDF")])
def test_alignment_heatmap_format_by_extension(tmp_path, suffix, magic):
    out = tmp_path / f"a{suffix}"
    alignment_heatmap(_cross(), SRC, TGT, path=out)
    assert out.read_bytes().startswith(magic)


def test_alignment_heatmap_rejects_unknown_extension(tmp_path):
    with pytest.raises(ValueError, match=r"\.png"):
        alignment_heatmap(_cross(), SRC, TGT, path=tmp_path / "a.jpg")


def test_alignment_heatmap_bad_shape_names_expected_and_received():
    with pytest.raises(ValueError, match=r"\(5, 7\).*received \(5, 6\)"):
        alignment_heatmap(np.ones((5, 6)) / 6, SRC, TGT)
    with pytest.raises(ValueError, match="list of token strings"):
        alignment_heatmap(_cross(), "the cat", TGT)


def test_alignment_heatmap_accepts_torch_and_axes_and_dollar_tokens():
    torch = pytest.importorskip("torch")
    src = ["$", "5", "$", "x"]
    tgt = ["$5", "$"]
    w = torch.softmax(torch.randn(1, 2, 4), dim=-1)  # a batch of one is squeezed
    fig, ax = new_figure((4, 3))
    out = alignment_heatmap(w, src, tgt, ax=ax, colorbar=False)
    assert out is fig
    assert [t.get_text() for t in ax.get_xticklabels()] == src
    fig.canvas.draw()  # mathtext would choke on "$ 5 $" pairs if it were parsed


def test_head_grid_layout_values_and_labels(tmp_path):
    toks = ["[CLS]", "a", "b", "c", "[SEP]"]
    w = _self(2, 3, len(toks))
    out = tmp_path / "grid.png"
    fig = head_grid(w, toks, path=out)
    assert out.stat().st_size > 5_000
    axes = fig.axes
    assert len(axes) == 2 * 3
    for k, ax in enumerate(axes):
        layer, head = divmod(k, 3)
        np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), w[layer, head])
    assert [t.get_text() for t in axes[0].get_yticklabels()] == toks
    assert [t.get_text() for t in axes[0].get_xticklabels()] == toks
    assert axes[1].get_yticklabels() == [] or not axes[1].get_yticks().size
    assert [ax.get_title() for ax in axes[:3]] == ["head 0", "head 1", "head 2"]
    assert axes[3].get_ylabel() == "layer 1"


def test_head_grid_accepts_list_of_layers_and_cross_tokens():
    tq, tk = ["x", "y"], ["a", "b", "c"]
    layers = [softmax(np.random.default_rng(i).normal(size=(2, 2, 3))) for i in range(3)]
    fig = head_grid(layers, tq, tk, heads=[1])
    assert len(fig.axes) == 3
    np.testing.assert_allclose(np.asarray(fig.axes[2].images[0].get_array()), layers[2][1])


def test_head_grid_hides_labels_for_long_sequences():
    toks = [f"t{i}" for i in range(40)]
    fig = head_grid(_self(1, 2, 40), toks)
    assert all(len(ax.get_xticks()) == 0 for ax in fig.axes)


def test_head_grid_bad_shapes():
    with pytest.raises(ValueError, match=r"\(L, H, Tq, Tk\).*received shape \(3, 3\)"):
        head_grid(np.eye(3), ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"= \(1, 2, 4, 4\).*received \(1, 2, 3, 3\)"):
        head_grid(_self(1, 2, 3), ["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="layer 1 of shape"):
        head_grid([np.ones((2, 3, 3)), np.ones((2, 3, 4))], ["a", "b", "c"])
    with pytest.raises(ValueError, match="head 5 is out of range"):
        head_grid(_self(1, 2, 3), ["a", "b", "c"], heads=[5])


def test_head_view_lines_follow_weights(tmp_path):
    toks = ["[CLS]", "the", "cat", "sat", "down", "[SEP]"]
    w = _self(3, 4, len(toks), seed=3)
    out = tmp_path / "hv.svg"
    fig = head_view(w, toks, token_index=2, layer=-1, path=out)
    assert out.exists()
    panels = [ax for ax in fig.axes if any(isinstance(c, LineCollection) for c in ax.collections)]
    assert len(panels) == 4
    for head, ax in enumerate(panels):
        (lines,) = [c for c in ax.collections if isinstance(c, LineCollection)]
        widths = np.asarray(lines.get_linewidths())
        assert len(widths) == len(toks)
        row = w[2, head, 2]  # layer -1 is layer 2
        assert np.argmax(widths) == np.argmax(row)
        assert np.all(np.diff(widths[np.argsort(row)]) >= -1e-9)  # wider = more weight
        assert ax.get_title() == f"head {head}"
    assert any("'cat'" in t.get_text() for t in fig.texts)


def test_head_view_rejects_bad_index():
    toks = ["a", "b", "c"]
    with pytest.raises(ValueError, match=r"token_index 3 is out of range; expected 0\.\.2"):
        head_view(_self(1, 1, 3), toks, token_index=3, layer=0)
    with pytest.raises(ValueError, match="layer 2 is out of range"):
        head_view(_self(2, 1, 3), toks, token_index=0, layer=2)
