"""``python -m bench SCENARIO [--runs 5] [--warmup 1] [--threads 2] [--quick] [--out DIR]``."""

from __future__ import annotations

import sys

import bench.decode  # noqa: F401  (registers the decoding scenarios)
from bench.harness import main

if __name__ == "__main__":
    sys.exit(main())
