"""Alignment pictures of translations: one heatmap PNG per sentence (Bahdanau et al., 2015,
Fig. 3 — source subword tokens on x, output tokens on y) with its numbers beside it as JSON.

Owns :func:`write_alignments`, used by ``dhian translate --attention-out``. It takes
:class:`dhian.inference.translate.Translation` records (``attention`` (Tt, Ts), ``src_tokens``,
``out_tokens``) and draws with :func:`dhian.viz.alignment_heatmap`.
Imports: stdlib, :mod:`dhian.viz`, :mod:`dhian.errors`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dhian.errors import ConfigError
from dhian.viz import alignment_heatmap

__all__ = ["alignment_stem", "write_alignments"]

TITLE_CHARS = 70


def alignment_stem(line: int, total: int) -> str:
    """File stem of 1-based input ``line`` of ``total``: zero-padded so names sort (``0007``)."""
    return f"{line:0{max(4, len(str(total)))}d}"


def write_alignments(
    translations: Sequence[Any], out_dir: str | Path, annotate: bool = False
) -> list[Path]:
    """Write ``NNNN.png`` (heatmap) and ``NNNN.json`` (``source``, ``translation``,
    ``src_tokens``, ``out_tokens``, ``weights`` (Tt, Ts) as nested lists) for every translation
    that carries attention; NNNN is the 1-based input line. Returns the PNG paths."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--attention-out {out} is a file; give a directory")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for k, tr in enumerate(translations):
        if tr.attention is None:
            continue
        stem = alignment_stem(k + 1, len(translations))
        weights = tr.attention.float().cpu()  # (Tt, Ts)
        source = tr.source if len(tr.source) <= TITLE_CHARS else tr.source[:TITLE_CHARS] + "…"
        png = out / f"{stem}.png"
        alignment_heatmap(
            weights, tr.src_tokens, tr.out_tokens, png, annotate=annotate, title=source
        )
        record = {
            "line": k + 1,
            "source": tr.source,
            "translation": tr.text,
            "src_tokens": list(tr.src_tokens),
            "out_tokens": list(tr.out_tokens),
            "weights": [[round(float(v), 6) for v in row] for row in weights.tolist()],
        }
        (out / f"{stem}.json").write_text(
            json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        written.append(png)
    return written
