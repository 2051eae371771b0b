"""Attention you can see: static plots (matplotlib, Agg) and a self-contained HTML viewer.

Owns every picture dhian draws. Takes weights as torch tensors or numpy arrays plus token
strings and **never imports model code** (no dhian.models / nn / decoding; torch is not even
imported). Shapes: B batch, L layers, H heads, Tq/Tk query/key lengths, Ts/Tt source/target.

- :func:`alignment_heatmap` cross attention (Tt, Ts), Bahdanau et al. 2015 Fig. 3 style
- :func:`head_grid` / :func:`head_view` self attention (L, H, T, T): all heads, one token
- :func:`head_entropy` / :func:`head_summary` / :func:`entropy_heatmap` what heads do
- :func:`first_token_share` / :func:`sink_heatmap` attention sinks (weight on the first token)
- :func:`bleu_by_length_plot` / :func:`learning_curves` results
- :func:`confusion_plot` / :func:`confusion_markdown` / :func:`row_shares` classifier results
- :func:`write_attention_html` / :func:`viewer_html` / :func:`attention_payload` the viewer
"""

from __future__ import annotations

from dhian.viz.confusion import confusion_markdown, confusion_plot, row_shares
from dhian.viz.curves import bleu_by_length_plot, learning_curves
from dhian.viz.head_stats import entropy_heatmap, head_entropy, head_summary
from dhian.viz.heads import head_grid, head_view
from dhian.viz.heatmap import alignment_heatmap
from dhian.viz.html import viewer_assets, viewer_html, write_attention_html
from dhian.viz.payload import attention_payload, decode_weights
from dhian.viz.sinks import first_token_share, sink_heatmap
from dhian.viz.style import save_figure

__all__ = [
    "alignment_heatmap",
    "attention_payload",
    "bleu_by_length_plot",
    "confusion_markdown",
    "confusion_plot",
    "decode_weights",
    "entropy_heatmap",
    "first_token_share",
    "head_entropy",
    "head_grid",
    "head_summary",
    "head_view",
    "learning_curves",
    "row_shares",
    "save_figure",
    "sink_heatmap",
    "viewer_assets",
    "viewer_html",
    "write_attention_html",
]
