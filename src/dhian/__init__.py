"""dhian (ਧਿਆਨ, "attention"): attention mechanisms and transformers, end to end.

Layers import one way: text → data → nn → models → decoding · metrics · viz → train → cli · serve.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
