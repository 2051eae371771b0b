"""``python -m bench SCENARIO [--runs 5] [--warmup 1] [--threads 2] [--quick] [--out DIR]``."""

from __future__ import annotations

import sys

import bench.bert  # registers bert-base-32x128
import bench.decode  # registers the decoding scenarios
import bench.gpt  # noqa: F401  (registers gpt-generate-b8)
from bench.harness import main

if __name__ == "__main__":
    sys.exit(main())
