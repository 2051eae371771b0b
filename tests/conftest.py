"""Suite-wide test settings.

Tiny models run many times faster on one torch thread than on two when the machine's two
cores are shared, so every test runs single-threaded unless it sets its own count.
"""

from __future__ import annotations

import os

import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(1)
