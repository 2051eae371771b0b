"""A tiny generated English→German word-swap corpus (``tsv:DIR``) and a tiny RNNsearch recipe on
it, for training, translation and CLI tests (in process or as real ``dhian`` processes).

Every sentence is 1–N words from :data:`WORDS`, and its German side the word-by-word
translation, so a tiny model learns it in seconds.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

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


def pair_line(rng: random.Random, lo: int, hi: int) -> str:
    """One ``english<TAB>german`` line of ``lo``..``hi`` words."""
    en = [rng.choice(list(WORDS)) for _ in range(rng.randint(lo, hi))]
    return " ".join(en) + "\t" + " ".join(WORDS[w] for w in en)


def write_corpus(root: Path, splits: Mapping[str, tuple[int, int, int]], seed: int = 0) -> Path:
    """Write ``root/corpus/{split}.tsv`` for each ``split: (lines, lo, hi)`` (one RNG over the
    splits in order); returns the folder."""
    rng = random.Random(seed)
    d = root / "corpus"
    d.mkdir(parents=True, exist_ok=True)
    for split, (n, lo, hi) in splits.items():
        rows = [pair_line(rng, lo, hi) for _ in range(n)]
        (d / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return d


def corpus(root: Path, n_train: int = 64, n_dev: int = 6) -> Path:
    """``root/corpus/{train,dev}.tsv`` of 2–4 word sentences; returns the folder."""
    return write_corpus(root, {"train": (n_train, 2, 4), "dev": (n_dev, 2, 4)})


def recipe(root: Path, dropout: float = 0.0, **train: Any) -> Path:
    """A tiny RNNsearch recipe on :func:`corpus` (char tokenizer, constant LR, 8 steps);
    ``train`` overrides its train section. Returns the path of ``root/tiny.yaml``."""
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


def train_word_swap_run(root: Path, test_max_words: int = 8, eval_every: int = 120) -> Path:
    """A tiny RNNsearch trained by ``dhian train`` (120 steps, one thread) on the word-swap
    corpus written under ``root``; returns its run dir (best/ and last/)."""
    import torch

    from dhian.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    data = write_corpus(
        root, {"train": (300, 1, 6), "dev": (8, 1, 6), "test": (24, 1, test_max_words)}
    )
    cfg = {
        "model": {"type": "rnnsearch", "embed_dim": 24, "hidden_dim": 24, "dropout": 0.0},
        "data": {"corpus": f"tsv:{data}", "tokenizer": "bpe", "vocab_size": 80, "max_len": 20},
        "train": {
            "out_dir": str(root / "run"),
            "max_steps": 120,
            "batch_size": 16,
            "max_tokens": 0,
            "lr": 1e-2,
            "schedule": "constant",
            "warmup_steps": 0,
            "eval_every": eval_every,
            "eval_max_examples": 8,
            "log_every": eval_every,
            "save_every": 0,
            "num_threads": 1,
        },
    }
    recipe_path = root / "tiny.yaml"
    recipe_path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    try:
        assert main(["train", str(recipe_path), "--quiet"]) == 0
    finally:
        torch.set_num_threads(threads)
    return root / "run"
