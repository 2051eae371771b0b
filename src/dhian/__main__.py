"""``python -m dhian`` (also what ``torchrun -m dhian`` runs)."""

from __future__ import annotations

from dhian.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
