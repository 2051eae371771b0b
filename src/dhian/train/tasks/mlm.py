"""The masked-language-model task: BERT pretraining from scratch or continued from a checkpoint.

Owns :class:`MaskedLMTask` (registered as ``mlm``: ``model.type`` bert with ``model.task: mlm``):
documents of ``data.corpus`` → tokenizer (a WordPiece trained on the train split, or the one of
``train.init_from`` / ``data.tokenizer_path``) → ``[CLS] … [SEP]`` blocks of ``data.block_size``
ids packed across documents → batches masked per batch by :func:`dhian.data.mlm.mask_tokens`
(15% of the non-special tokens; 80% [MASK] / 10% random / 10% kept; labels -100 elsewhere) with
a generator seeded by (seed, epoch, batch index), so a resumed run masks exactly as a straight
one. Loss: cross entropy at the masked positions only (the output layer runs on those rows
alone). Validation: dev loss, perplexity and ``mlm_accuracy`` (argmax = original token at the
masked positions) on a fixed masking of the dev blocks.
Also owns :func:`masked_logits`.
Notation: B batch, T block length, N masked positions in a batch, E model dim, V vocab.
Imports: torch, :mod:`dhian.data`, :mod:`dhian.metrics`, :mod:`dhian.train`,
:mod:`dhian.errors`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from dhian import metrics
from dhian.data.mlm import IGNORE_INDEX
from dhian.data.training_data import prepare_lm
from dhian.errors import ConfigError, DataError
from dhian.models.families import model_types_of
from dhian.train.tasks.base import EvalResult, IteratorStream, LossTerms, Task, token_loss
from dhian.train.tasks.classification import load_bert_init


def masked_logits(model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (N, V), targets (N,)) at the N masked positions of ``batch``.

    With a :class:`~dhian.models.bert.heads.BertForMaskedLM` the MLM head runs on the masked
    rows only (the same numbers as the full (B, T, V) output, about 85% fewer head FLOPs).
    """
    chosen = batch.tgt_out != IGNORE_INDEX  # (B, T)
    backbone, head = getattr(model, "backbone", None), getattr(model, "mlm", None)
    if backbone is None or head is None:
        logits = model(batch.src, batch.src_lengths, batch.type_ids).logits  # (B, T, V)
        return logits[chosen], batch.tgt_out[chosen]
    hidden = backbone(batch.src, batch.src_lengths, batch.type_ids).last_hidden  # (B, T, E)
    logits = head(hidden[chosen], backbone.word_embeddings.weight)  # (N, V)
    return logits, batch.tgt_out[chosen]


class MaskedLMTask(Task):
    """BERT masked-LM training on the documents of ``data.corpus``."""

    name = "mlm"
    model_types = model_types_of("encoder")
    metrics = ("loss", "ppl", "mlm_accuracy")
    sample_tokens = 24

    @classmethod
    def fits(cls, model_cfg: Any) -> bool:
        return getattr(model_cfg, "type", "") == "bert" and getattr(model_cfg, "task", "") == "mlm"

    def setup(self, tokenizer_dir: Path | None) -> None:

        data = self.config.data
        if tokenizer_dir is not None:
            data = dataclasses.replace(data, tokenizer_path=str(tokenizer_dir))
        limit = int(self.config.model.max_positions)
        if not 3 <= data.block_size <= limit:
            raise ConfigError(
                f"data.block_size={data.block_size} must be in 3..{limit} "
                "(model.max_positions, the longest input of the model)"
            )
        prepared = prepare_lm(data, masked=True)
        if len(prepared.train) == 0:
            raise DataError(f"the train split of {data.corpus!r} has no text")
        if len(prepared.dev) == 0:
            raise DataError(f"the dev split of {data.corpus!r} is empty; validation needs one")
        tok = prepared.tok
        self.tokenizers = {"src": tok, "tgt": tok}
        self.train_data, self.dev_data = prepared.train, prepared.dev
        self.log(
            f"data: {len(self.train_data)} train / {len(self.dev_data)} dev blocks of <= "
            f"{data.block_size} ids; {tok.kind} vocabulary of {tok.vocab_size}"
        )

    def build_kwargs(self) -> dict[str, Any]:
        return self.shared_vocab_kwargs("src")

    def init_weights(self, model: torch.nn.Module, path: str) -> None:
        load_bert_init(model, path, self.log)

    def train_stream(self, seed: int) -> IteratorStream:
        return IteratorStream(self.batches(self.train_data, seed, shuffle=True))

    def loss(self, model: torch.nn.Module, batch: Any, label_smoothing: float) -> LossTerms:
        logits, target = masked_logits(model, batch)
        return token_loss(logits, target, IGNORE_INDEX, label_smoothing)

    @torch.no_grad()
    def evaluate(
        self, model: torch.nn.Module, device: torch.device, beam: int, max_examples: int
    ) -> EvalResult:
        total, count, correct, seen = 0.0, 0, 0, 0
        sample: tuple[str, str, str] | None = None
        for batch in self.batches(self.dev_data, 0, shuffle=False):
            if 0 < max_examples <= seen:
                break
            seen += len(batch)
            batch = batch.to(device)
            logits, target = masked_logits(model, batch)
            total += float(token_loss(logits, target, IGNORE_INDEX).loss)
            count += int(target.numel())
            guess = logits.argmax(-1)  # (N,)
            correct += int((guess == target).sum())
            if sample is None:
                sample = self._sample(batch, guess)
        mean = total / max(count, 1)
        result = {
            "loss": mean,
            "ppl": metrics.perplexity(mean),
            "mlm_accuracy": correct / max(count, 1),
        }
        return EvalResult(result, {}, [sample] if sample else [])

    def _sample(self, batch: Any, guess: torch.Tensor) -> tuple[str, str, str]:
        """(masked input, original tokens, predicted tokens) of the first dev block's start."""
        tok = self.tokenizers["src"]
        k = self.sample_tokens
        chosen = (batch.tgt_out != IGNORE_INDEX)[0, :k]  # (k,)
        first = int((batch.tgt_out[0] != IGNORE_INDEX).sum())  # masked rows of block 0 come first
        picks = guess[:first][: int(chosen.sum())]
        shown = " ".join(tok.ids_to_tokens(batch.src[0, :k].tolist()))
        ref = " ".join(tok.ids_to_tokens(batch.tgt_out[0, :k][chosen].tolist()))
        return shown, ref, " ".join(tok.ids_to_tokens(picks.tolist()))
