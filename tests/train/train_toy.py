"""A toy task for engine tests: predict ``(x + 1) mod V`` for every token of random sequences.

Small and fast; examples have different lengths (so padding and token normalisation matter);
the model is per-token (embedding → dropout → linear), so a batch of 2b equals two batches of b.
Hooks: ``nan_calls`` (loss call numbers that return NaN) and ``eval_script`` (dev metrics to
report, in order) let tests drive divergence and early stopping.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dhian.config import DataConfig, RunConfig, TrainConfig
from dhian.train.tasks import EvalResult, LossTerms, Task, token_loss

PAD = 0


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    type: str = "train_toy"
    dim: int = 8
    dropout: float = 0.0


class ToyTokenizer:
    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        self.pad_id = PAD

    def save(self, directory: str | Path) -> None:
        Path(directory, "toy_tokenizer.json").write_text(json.dumps({"vocab": self.vocab_size}))

    @classmethod
    def load(cls, directory: str | Path) -> ToyTokenizer:
        data = json.loads(Path(directory, "toy_tokenizer.json").read_text())
        return cls(int(data["vocab"]))


class ToyModel(nn.Module):
    def __init__(self, cfg: ToyConfig, src_vocab_size: int, tgt_vocab_size: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(src_vocab_size, cfg.dim, padding_idx=PAD)
        self.drop = nn.Dropout(cfg.dropout)
        self.norm = nn.LayerNorm(cfg.dim)
        self.out = nn.Linear(cfg.dim, tgt_vocab_size)

    def forward(self, src: torch.Tensor) -> torch.Tensor:
        """src (B, T) → logits (B, T, V)."""
        return self.out(self.norm(self.drop(self.embed(src))))


def build_toy(cfg: ToyConfig, src_vocab_size: int, tgt_vocab_size: int) -> ToyModel:
    return ToyModel(cfg, src_vocab_size, tgt_vocab_size)


@dataclasses.dataclass
class ToyBatch:
    src: torch.Tensor  # (B, T)
    tgt: torch.Tensor  # (B, T)

    @property
    def num_tokens(self) -> int:
        return int((self.tgt != PAD).sum())

    def to(self, device: Any) -> ToyBatch:
        return ToyBatch(self.src.to(device), self.tgt.to(device))


def make_examples(n: int, vocab: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(1, vocab) for _ in range(rng.randint(2, 7))] for _ in range(n)]


def collate(seqs: list[list[int]], vocab: int) -> ToyBatch:
    width = max(len(s) for s in seqs)
    src = torch.full((len(seqs), width), PAD, dtype=torch.long)
    tgt = torch.full((len(seqs), width), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        src[i, : len(s)] = torch.tensor(s)
        tgt[i, : len(s)] = torch.tensor([(x % (vocab - 1)) + 1 for x in s])  # x+1, skipping pad
    return ToyBatch(src, tgt)


class ToyStream:
    """Shuffled fixed-size batches, epoch after epoch; position = (epoch, index)."""

    def __init__(self, examples: list[list[int]], batch_size: int, seed: int, vocab: int) -> None:
        self.examples, self.batch_size, self.seed, self.vocab = examples, batch_size, seed, vocab
        self.epoch, self.index = 0, 0

    def _plan(self) -> list[list[int]]:
        order = list(range(len(self.examples)))
        random.Random(self.seed * 7919 + self.epoch).shuffle(order)
        b = self.batch_size
        return [order[i : i + b] for i in range(0, len(order) - b + 1, b)]  # drop the remainder

    def __next__(self) -> ToyBatch:
        plan = self._plan()
        if self.index >= len(plan):
            self.epoch, self.index = self.epoch + 1, 0
            plan = self._plan()
        idx = plan[self.index]
        self.index += 1
        return collate([self.examples[i] for i in idx], self.vocab)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])

    @property
    def epochs_done(self) -> float:
        return self.epoch + self.index / len(self._plan())


class ToyTask(Task):
    name = "toy"
    model_types = ("train_toy",)
    metrics = ("loss", "accuracy")
    vocab = 11

    def __init__(self, config: RunConfig, log: Any = print, **hooks: Any) -> None:
        super().__init__(config, log)
        self.nan_calls: set[int] = set(hooks.get("nan_calls", ()))
        self.eval_script: list[float] = list(hooks.get("eval_script", ()))
        self.loss_calls = 0
        self.evals = 0

    def setup(self, tokenizer_dir: Path | None) -> None:
        tok = ToyTokenizer.load(tokenizer_dir) if tokenizer_dir else ToyTokenizer(self.vocab)
        self.tokenizers = {"src": tok, "tgt": tok}
        n = self.config.data.max_train_examples or 48
        self.train_examples = make_examples(n, self.vocab, seed=1)
        self.dev = collate(make_examples(16, self.vocab, seed=2), self.vocab)

    def build_kwargs(self) -> dict[str, Any]:
        return {"src_vocab_size": self.vocab, "tgt_vocab_size": self.vocab}

    def build_model(self) -> nn.Module:
        return build_toy(self.config.model, **self.build_kwargs())

    def train_stream(self, seed: int) -> ToyStream:
        bs = self.config.train.batch_size or 4
        return ToyStream(self.train_examples, bs, seed, self.vocab)

    def loss(self, model: nn.Module, batch: Any, label_smoothing: float) -> LossTerms:
        self.loss_calls += 1
        terms = token_loss(model(batch.src), batch.tgt, PAD, label_smoothing)
        if self.loss_calls in self.nan_calls:
            terms.loss = terms.loss * float("nan")
        return terms

    def evaluate(self, model: nn.Module, device: Any, beam: int, max_examples: int) -> EvalResult:
        batch = self.dev.to(device)
        logits = model(batch.src)
        terms = token_loss(logits, batch.tgt, PAD)
        mask = batch.tgt != PAD
        acc = float((logits.argmax(-1) == batch.tgt)[mask].float().mean())
        loss = float(terms.loss) / terms.count
        if self.evals < len(self.eval_script):
            loss = self.eval_script[self.evals]
        self.evals += 1
        return EvalResult({"loss": loss, "accuracy": acc}, {"note": "toy"})


def toy_config(out_dir: Path, **train: Any) -> RunConfig:
    model = {k: train.pop(k) for k in ("dim", "dropout") if k in train}
    defaults: dict[str, Any] = {
        "out_dir": str(out_dir),
        "max_steps": 6,
        "batch_size": 4,
        "lr": 1e-2,
        "warmup_steps": 2,
        "schedule": "linear",
        "log_every": 2,
        "eval_every": 3,
        "save_every": 0,
        "label_smoothing": 0.1,
        "early_stop_metric": "loss",
    }
    defaults.update(train)
    return RunConfig(ToyConfig(**model), DataConfig(corpus="toy"), TrainConfig(**defaults))
