"""dhian.viz stays on its side of the layering: no model code, not even torch."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("dhian.models", "dhian.nn", "dhian.decoding", "dhian.train", "dhian.serve", "torch")


def test_viz_imports_no_model_code_and_no_torch():
    code = (
        "import sys, dhian.viz, dhian.viz.html, dhian.viz.payload\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or "
        f"any(m == f or m.startswith(f + '.') for f in {FORBIDDEN!r}))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "", f"dhian.viz imported {out.stdout.strip()}"


def test_public_api():
    import dhian.viz as viz

    for name in viz.__all__:
        assert callable(getattr(viz, name)), name
    from dhian.viz import confusion

    for name in ("confusion_plot", "confusion_markdown", "row_shares"):
        assert name in viz.__all__ and getattr(viz, name) is getattr(confusion, name)
