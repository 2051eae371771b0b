"""Confusion matrix picture and table: counts in, PNG + Markdown out, checked against the input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from dhian.metrics import confusion_matrix
from dhian.viz.confusion import confusion_markdown, confusion_plot, row_shares

LABELS = ["World", "Sports", "Business", "Sci/Tech"]
GOLD = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 1]
PRED = [0, 0, 1, 1, 1, 2, 3, 2, 2, 3, 0, 1]


def test_plot_cells_are_row_shares_and_counts(tmp_path: Path) -> None:
    m = confusion_matrix(PRED, GOLD, 4)
    out = tmp_path / "cm.png"
    fig = confusion_plot(m, LABELS, out, title="dev")
    assert out.is_file() and imread(out).shape[0] > 100
    ax = fig.axes[0]
    shown = np.asarray(ax.images[0].get_array(), dtype=float)
    counts = np.array(m, dtype=float)
    # independent reference: each gold row divided by the number of gold examples of that class
    per_class = np.array([GOLD.count(c) for c in range(4)], dtype=float)[:, None]
    np.testing.assert_allclose(shown, counts / per_class)
    texts = [t.get_text() for t in ax.texts]
    assert texts == [str(int(v)) for v in counts.flatten()]
    assert [t.get_text() for t in ax.get_yticklabels()] == LABELS
    assert ax.get_xlabel() == "predicted" and ax.get_ylabel() == "gold"
    assert ax.get_title() == "dev"


def test_markdown_table_is_exact() -> None:
    m = [[3, 1], [0, 2]]
    md = confusion_markdown(m, ["neg|ative", "positive"])
    assert md == (
        "| gold \\ predicted | neg\\|ative | positive | total |\n"
        "|---|---:|---:|---:|\n"
        "| **neg\\|ative** | 3 | 1 | 4 |\n"
        "| **positive** | 0 | 2 | 2 |\n"
        "| total | 3 | 3 | 6 |\n"
    )


def test_markdown_totals_match_counts() -> None:
    m = confusion_matrix(PRED, GOLD, 4)
    rows = confusion_markdown(m, LABELS).splitlines()
    assert len(rows) == 2 + 4 + 1
    last = rows[-1].strip("| ").split(" | ")
    assert last[0] == "total"
    assert [int(x) for x in last[1:5]] == [PRED.count(c) for c in range(4)]
    assert int(last[5]) == len(GOLD)


def test_empty_rows_and_bad_input() -> None:
    np.testing.assert_array_equal(row_shares([[0, 0], [1, 3]]), [[0, 0], [0.25, 0.75]])
    with pytest.raises(ValueError, match=r"shape \(C, C\) = \(3, 3\)"):
        confusion_plot([[1, 2], [3, 4]], ["a", "b", "c"])
    with pytest.raises(ValueError, match="non-negative"):
        confusion_markdown([[1, -2], [3, 4]], ["a", "b"])
    with pytest.raises(ValueError, match="list of token strings"):
        confusion_plot([[1]], "a")


def test_module_imports_no_torch() -> None:
    code = "import sys, dhian.viz.confusion; print(any(m.split('.')[0] == 'torch' for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
