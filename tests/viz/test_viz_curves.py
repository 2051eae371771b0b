"""bleu_by_length_plot and learning_curves: data plotted, panels, errors."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.patches import Rectangle

from dhian.viz import bleu_by_length_plot, learning_curves
from dhian.viz.curves import metric_family

TABLE = {
    "RNNsearch-50": [("0-10", 26.0), ("10-20", 27.5), ("20-30", 26.1), ("30+", 24.0)],
    "RNNenc-50": [("0-10", 25.0), ("10-20", 21.0), ("30+", 12.0)],  # one bucket missing
}


def test_bleu_by_length_lines(tmp_path):
    out = tmp_path / "bleu.png"
    fig = bleu_by_length_plot(TABLE, out, title="BLEU by length")
    assert out.stat().st_size > 5_000
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0-10", "10-20", "20-30", "30+"]
    lines = ax.get_lines()
    assert [ln.get_label() for ln in lines] == list(TABLE)
    np.testing.assert_allclose(lines[0].get_ydata(), [26.0, 27.5, 26.1, 24.0])
    y = np.asarray(lines[1].get_ydata(), dtype=float)
    assert np.isnan(y[2]) and y[3] == 12.0
    assert lines[0].get_color() != lines[1].get_color()
    assert lines[0].get_linestyle() != lines[1].get_linestyle()


def test_bleu_by_length_bars():
    fig = bleu_by_length_plot(TABLE, kind="bar")
    bars = [p for p in fig.axes[0].patches if isinstance(p, Rectangle)]
    assert len(bars) == 2 * 4
    assert max(b.get_height() for b in bars) == pytest.approx(27.5)


def test_bleu_by_length_errors():
    with pytest.raises(ValueError, match="empty"):
        bleu_by_length_plot({})
    with pytest.raises(ValueError, match=r"\(bucket_label, bleu\) pairs"):
        bleu_by_length_plot({"a": [("0-10", 1.0, 2.0)]})  # type: ignore[list-item]
    with pytest.raises(ValueError, match="kind"):
        bleu_by_length_plot(TABLE, kind="pie")  # type: ignore[arg-type]


def _records() -> list[dict]:
    rows: list[dict] = []
    for step in range(0, 500, 50):
        row = {"step": step, "epoch": step // 200, "train_loss": 5.0 / (1 + step / 100), "lr": 1e-3}
        if step % 100 == 0:
            row.update({"dev_loss": 5.5 / (1 + step / 100), "dev_bleu": step / 20, "note": "x"})
        rows.append(row)
    return rows


def test_learning_curves_panels_and_sparse_dev(tmp_path):
    out = tmp_path / "curves.pdf"
    fig = learning_curves(_records(), out, title="run")
    assert out.read_bytes().startswith(b"%PDF")
    titled = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    assert set(titled) == {"loss", "bleu", "lr"}  # epoch/note/step never plotted
    loss = {ln.get_label(): ln for ln in titled["loss"].get_lines()}
    assert set(loss) == {"train_loss", "dev_loss"}
    np.testing.assert_array_equal(loss["dev_loss"].get_xdata(), [0, 100, 200, 300, 400])
    assert len(loss["train_loss"].get_xdata()) == 10
    # one colour per split, the same in every panel
    bleu = titled["bleu"].get_lines()[0]
    assert bleu.get_color() == loss["dev_loss"].get_color() != loss["train_loss"].get_color()


def test_learning_curves_metrics_subset_and_errors():
    fig = learning_curves(_records(), metrics=["dev_bleu"])
    assert [ax.get_title() for ax in fig.axes if ax.has_data()] == ["bleu"]
    with pytest.raises(ValueError, match="no numeric value"):
        learning_curves(_records(), metrics=["dev_chrf"])
    with pytest.raises(ValueError, match="empty"):
        learning_curves([])
    with pytest.raises(ValueError, match="no numeric metric"):
        learning_curves([{"step": 1, "note": "x"}])


def test_metric_family():
    assert metric_family("dev_bleu") == "bleu"
    assert metric_family("train_loss") == "loss"
    assert metric_family("lr") == "lr"
    assert metric_family("dev_") == "dev_"
