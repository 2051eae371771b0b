"""One look for every dhian plot: colours, fonts, figure creation and saving.

Owns the visual constants shared by the static plots (matplotlib, Agg) and by the HTML viewer
(which embeds :func:`colormap_lut` and :data:`PALETTE`), so a heatmap in a PNG and in the browser
read the same. Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot
global state, Agg canvas), so plotting never touches the user's backend and is safe in servers.

Imports: matplotlib and numpy only (no dhian model code).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import matplotlib
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "ACCENT",
    "ATTENTION_CMAP",
    "DPI",
    "ENTROPY_CMAP",
    "PALETTE",
    "RC",
    "SAVE_FORMATS",
    "colormap_lut",
    "head_color",
    "new_figure",
    "save_figure",
    "style_context",
    "text_color_for",
    "token_fontsize",
]

#: Attention weights in grey scale, 0 black and 1 white, as in Bahdanau et al. (2015), Fig. 3.
ATTENTION_CMAP = "gray"
#: Per-head entropy (a different quantity, so a different map).
ENTROPY_CMAP = "viridis"
#: Colour-blind-safe palette (Okabe-Ito, black swapped for Tol's indigo, then Tol's muted
#: colours): one colour per system / head, cycled.
PALETTE: tuple[str, ...] = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#CC79A7",
    "#56B4E9",
    "#F0E442",
    "#332288",
    "#882255",
    "#44AA99",
    "#999933",
    "#AA4499",
)
#: Highlight colour (hovered token, selected head).
ACCENT = "#E69F00"
DPI = 150
SAVE_FORMATS = (".png", ".svg", ".pdf")

RC: dict[str, Any] = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.labelsize": 9,
    "figure.titlesize": 11,
    "figure.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "grid.color": "#dddddd",
    "grid.linewidth": 0.6,
    "legend.frameon": False,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "savefig.dpi": DPI,
    "savefig.bbox": "tight",
    "svg.fonttype": "none",
}


@contextmanager
def style_context() -> Iterator[None]:
    """Apply :data:`RC` for the duration of a plot (restores the caller's settings after)."""
    with matplotlib.rc_context(cast(Any, RC)):
        yield


def new_figure(
    figsize: tuple[float, float], nrows: int = 1, ncols: int = 1, **subplot_kw: Any
) -> tuple[Figure, Any]:
    """A pyplot-free figure with an Agg canvas and its axes (an array when nrows*ncols > 1)."""
    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=True, **subplot_kw)
    return fig, axes


def target_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """``ax``'s figure and ``ax``, or a new figure of ``figsize`` with one axes."""
    if ax is not None:
        fig = ax.figure
        if not isinstance(fig, Figure):  # a SubFigure: return its top-level Figure
            fig = fig.figure
        return fig, ax
    return new_figure(figsize)


def save_figure(fig: Figure, path: str | Path | None) -> Path | None:
    """Save ``fig`` to ``path``; the extension picks the format (.png, .svg or .pdf).

    Parent folders are created. Returns the path written, or None when ``path`` is None.
    """
    if path is None:
        return None
    out = Path(path)
    if out.suffix.lower() not in SAVE_FORMATS:
        raise ValueError(
            f"save_figure: cannot save {out.name!r}; use one of {', '.join(SAVE_FORMATS)}"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    with style_context():
        fig.savefig(out, dpi=DPI, bbox_inches="tight", metadata=_metadata(out.suffix.lower()))
    return out


def _metadata(suffix: str) -> dict[str, Any]:
    """Stable files: no timestamps in SVG/PDF, a creator tag in PNG."""
    if suffix == ".png":
        return {"Software": "dhian.viz"}
    if suffix == ".svg":
        return {"Date": None, "Creator": "dhian.viz"}
    return {"CreationDate": None, "Creator": "dhian.viz"}


def colormap_lut(name: str = ATTENTION_CMAP, n: int = 256) -> list[str]:
    """``n`` hex colours sampling colormap ``name`` from 0 to 1 (embedded in the HTML viewer)."""
    cmap = colormaps[name].resampled(n)
    out = []
    for i in range(n):
        r, g, b, _ = cmap(i)
        out.append(f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}")
    return out


def head_color(index: int) -> str:
    """The palette colour of head (or system) ``index`` (cycled)."""
    return PALETTE[index % len(PALETTE)]


def text_color_for(value: float, cmap: str = ATTENTION_CMAP) -> str:
    """Black or white, whichever reads better on colormap ``cmap`` at ``value`` in [0, 1]."""
    r, g, b, _ = colormaps[cmap](float(min(max(value, 0.0), 1.0)))
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return "#000000" if luminance > 0.5 else "#ffffff"


def token_fontsize(n: int, base: float = 9.0) -> float:
    """Font size for ``n`` tick labels: ``base`` up to 20 tokens, shrinking to 4 pt."""
    if n <= 20:
        return base
    return max(4.0, base * (20 / n) ** 0.5)
