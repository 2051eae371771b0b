"""A tiny generated English→German tsv corpus and a tiny RNNsearch recipe for end-to-end training
tests that run real ``dhian train`` processes (torchrun DDP, kill -9 trials).

Helpers also read ``metrics.jsonl`` rows, wait for a training step, and compare weights.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file

WORDS = {
    "one": "eins",
    "two": "zwei",
    "three": "drei",
    "red": "rot",
    "blue": "blau",
    "house": "haus",
    "cat": "katze",
    "big": "gross",
}
TIMING = ("wall", "tokens_per_s")


def corpus(root: Path, n_train: int = 64, n_dev: int = 6) -> Path:
    """Write ``root/corpus/{train,dev}.tsv`` (2–4 word sentences) and return the folder."""
    rng = random.Random(0)
    d = root / "corpus"
    d.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("dev", n_dev)):
        rows = []
        for _ in range(n):
            en = [rng.choice(list(WORDS)) for _ in range(rng.randint(2, 4))]
            rows.append(" ".join(en) + "\t" + " ".join(WORDS[w] for w in en))
        (d / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return d


def recipe(root: Path, dropout: float = 0.0, **train: Any) -> Path:
    """A tiny RNNsearch recipe on :func:`corpus` (char tokenizer, constant LR); returns its path."""
    cfg = {
        "model": {"type": "rnnsearch", "embed_dim": 16, "hidden_dim": 16, "dropout": dropout},
        "data": {
            "corpus": f"tsv:{corpus(root)}",
            "tokenizer": "char",
            "vocab_size": 60,
            "max_len": 40,
        },
        "train": {
            "out_dir": str(root / "run"),
            "max_steps": 8,
            "batch_size": 4,
            "max_tokens": 0,
            "lr": 3e-3,
            "schedule": "constant",
            "warmup_steps": 0,
            "label_smoothing": 0.0,
            "eval_every": 4,
            "eval_max_examples": 4,
            "log_every": 1,
            "save_every": 4,
            "num_threads": 1,
            **train,
        },
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def rows(out: Path, event: str | None = None) -> list[dict[str, Any]]:
    """``out/metrics.jsonl`` rows without timing fields (a torn last line is ignored)."""
    found = []
    path = out / "metrics.jsonl"
    if not path.is_file():
        return []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event is None or row["event"] == event:
            found.append({k: v for k, v in row.items() if k not in TIMING})
    return found


def wait_for(
    check: Callable[[], bool], timeout: float, alive: Callable[[], bool], poll: float = 0.005
) -> bool:
    """Poll ``check`` until it holds (True), ``alive`` turns False or ``timeout`` passes."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        if not alive():
            return check()
        time.sleep(poll)
    raise TimeoutError(f"condition not met within {timeout} s")


def weights(directory: Path) -> dict[str, torch.Tensor]:
    """The tensors of ``directory/model.safetensors``."""
    return load_file(str(directory / "model.safetensors"))


def same_weights(a: Path, b: Path) -> bool:
    """Bitwise equality of two model dirs' weights."""
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
