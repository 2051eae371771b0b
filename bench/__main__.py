"""``python -m bench SCENARIO [--runs 5] [--warmup 1] [--threads 2] [--quick] [--out DIR]``."""

from __future__ import annotations

import sys

import bench.bert  # registers bert-base-32x128
import bench.decode  # registers the decoding scenarios
import bench.gpt  # registers gpt-generate-b8
import bench.llm  # registers llm-generate-smollm2
import bench.train  # noqa: F401  (registers train-6x6-d512)
from bench.harness import main

if __name__ == "__main__":
    sys.exit(main())
