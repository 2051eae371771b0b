"""dhian (ਧਿਆਨ, "attention"): attention mechanisms and transformers, end to end.

Layers import one way (tests/test_imports.py; docs/design.md "Layers"): errors · config →
text · nn → data → models → interop → decoding · metrics · viz → inference → train →
apps · serve → cli.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
