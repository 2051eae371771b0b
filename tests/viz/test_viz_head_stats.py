"""head_entropy, head_summary, entropy_heatmap on weights with known structure."""

from __future__ import annotations

import math

import numpy as np
import pytest
from viz_synthetic import PATTERNS, self_attention

from dhian.viz import entropy_heatmap, head_entropy, head_summary


def _prev_head(t: int) -> np.ndarray:
    w = np.eye(t, k=-1)
    w[0, 0] = 1.0
    return w


def test_entropy_uniform_is_log_t_and_one_hot_is_zero():
    t = 7
    uniform = np.full((2, 3, t, t), 1.0 / t)
    np.testing.assert_allclose(head_entropy(uniform), np.full((2, 3), math.log(t)))
    one_hot = np.zeros((1, 2, t, t))
    one_hot[..., 0] = 1.0
    np.testing.assert_allclose(head_entropy(one_hot), np.zeros((1, 2)), atol=1e-12)


def test_entropy_excludes_masked_rows_and_mask():
    t = 6
    w = np.full((1, 1, t, t), 1.0 / t)
    w[0, 0, 0] = np.eye(t)[0]  # a peaked row
    w[0, 0, 4:] = 0.0  # fully masked queries: all-zero rows
    expected = (0.0 + 3 * math.log(t)) / 4
    assert head_entropy(w)[0, 0] == pytest.approx(expected)
    mask = np.array([False, True, True, True, True, True])
    assert head_entropy(w, mask=mask)[0, 0] == pytest.approx(math.log(t))
    w[:] = 0.0
    assert np.isnan(head_entropy(w)[0, 0])


def test_entropy_accepts_list_and_rejects_bad_shapes():
    layers = [np.full((4, 3, 3), 1 / 3) for _ in range(2)]
    assert head_entropy(layers).shape == (2, 4)
    with pytest.raises(ValueError, match=r"received shape \(2, 3, 3\)"):
        head_entropy(np.ones((2, 3, 3)))
    with pytest.raises(ValueError, match=r"select one example"):
        head_entropy(np.ones((1, 2, 3, 3, 3)))
    with pytest.raises(ValueError, match=r"mask must have shape \(T,\) = \(3,\), received \(2,\)"):
        head_entropy(np.ones((1, 1, 3, 3)) / 3, mask=[True, False])


def test_summary_labels_a_pure_previous_token_head():
    t = 9
    w = _prev_head(t)[None, None]
    (row,) = head_summary(w, [f"w{i}" for i in range(t)])
    assert row["label"] == "previous-token"
    assert row["prev_token"] == pytest.approx(1.0)
    assert row["entropy"] == pytest.approx(0.0)
    assert row["mean_distance"] == pytest.approx((t - 1) / t)
    assert (row["layer"], row["head"]) == (0, 0)


@pytest.mark.parametrize(
    ("name", "make", "label"),
    [
        ("identity", lambda t: np.eye(t), "diagonal"),
        ("first", lambda t: np.tile(np.eye(t)[0], (t, 1)), "first-token"),
        ("uniform", lambda t: np.full((t, t), 1.0 / t), "broad"),
        ("next", lambda t: np.eye(t, k=1) + np.diag([0.0] * (t - 1) + [1.0]), "next-token"),
        ("separator", lambda t: np.tile(np.eye(t)[t - 1], (t, 1)), "separator"),
    ],
)
def test_summary_labels_positional_heads(name, make, label):
    t = 8
    toks = ["[CLS]", *[f"w{i}" for i in range(t - 2)], "[SEP]"]
    (row,) = head_summary(make(t)[None, None], toks)
    assert row["label"] == label, (name, row)


def test_summary_separator_needs_tokens_to_know_the_separator():
    t = 6
    w = np.tile(np.eye(t)[t - 1], (t, 1))[None, None]
    (row,) = head_summary(w)  # no tokens: no separator known
    assert row["separator"] == 0.0
    assert row["label"] != "separator"


def test_summary_detects_causal_heads_for_normalised_entropy():
    t = 8
    w = np.tril(np.ones((t, t)))
    w /= w.sum(-1, keepdims=True)  # uniform over the visible prefix: broad
    (row,) = head_summary(w[None, None])
    assert row["normalized_entropy"] == pytest.approx(1.0)
    assert row["label"] == "broad"
    (forced,) = head_summary(w[None, None], causal=False)
    assert forced["normalized_entropy"] < 0.8


def test_summary_excludes_padding_tokens():
    toks = ["[CLS]", "a", "b", "c", "[PAD]", "[PAD]"]
    w = _prev_head(6)
    w[4:] = np.full(6, 1 / 6)  # padded queries attend anywhere
    (row,) = head_summary(w[None, None], toks)
    assert row["prev_token"] == pytest.approx(1.0)
    assert row["label"] == "previous-token"


def test_summary_on_structured_synthetic_heads():
    t = 16
    w = self_attention(t, 1, len(PATTERNS), seed=5, sep=t - 1)
    toks = ["[CLS]", *[f"w{i}" for i in range(t - 2)], "[SEP]"]
    rows = head_summary(w, toks)
    labels = {PATTERNS[r["head"]]: r["label"] for r in rows}
    assert labels["previous"] == "previous-token"
    assert labels["next"] == "next-token"
    assert labels["first"] == "first-token"
    assert labels["diagonal"] == "diagonal"
    assert labels["separator"] == "separator"
    assert labels["broad"] == "broad"
    assert [(r["layer"], r["head"]) for r in rows] == [(0, h) for h in range(len(PATTERNS))]


def test_summary_shape_errors():
    with pytest.raises(ValueError, match=r"square.*received \(1, 1, 2, 3\)"):
        head_summary(np.ones((1, 1, 2, 3)) / 3)
    with pytest.raises(ValueError, match=r"T = 4 tokens given, received \(1, 1, 3, 3\)"):
        head_summary(np.ones((1, 1, 3, 3)) / 3, ["a", "b", "c", "d"])


def test_entropy_heatmap_annotates_every_head_with_label(tmp_path):
    t = 10
    w = self_attention(t, 2, 4, seed=2)
    out = tmp_path / "entropy.png"
    fig = entropy_heatmap(w, out, tokens=[f"w{i}" for i in range(t)])
    assert out.stat().st_size > 3_000
    ax = fig.axes[0]
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), head_entropy(w))
    texts = [x.get_text() for x in ax.texts]
    assert len(texts) == 8
    assert texts[0].endswith("\nprev")  # layer 0 head 0 follows PATTERNS[0] == "previous"
    assert texts[0].startswith(f"{head_entropy(w)[0, 0]:.2f}")
