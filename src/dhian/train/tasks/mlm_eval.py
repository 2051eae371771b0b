"""Masked-LM evaluation of a trained BERT: ``dhian evaluate`` for models of kind ``mlm``.

Owns :func:`evaluate_mlm`: the documents of a split (default: the corpus the model was trained
on, ``dev``) → the model's tokenizer → ``[CLS] … [SEP]`` blocks of the training
``data.block_size`` → the same fixed masking the training task validates with (batches of the
unshuffled blocks from iterator seed 0: 15% of the non-special tokens, 80/10/10) → masked-token
loss, perplexity and ``mlm_accuracy`` (argmax = the original token) over every masked position.
With ``max_docs`` = the training's ``data.max_eval_examples`` (its dev documents) this
reproduces the training's last ``dev_loss`` / ``dev_mlm_accuracy``; by default every document of
the split is scored.
Notation: B blocks, T block length, N masked positions, V vocab.
Imports: torch, :mod:`dhian.data`, :mod:`dhian.metrics`, :mod:`dhian.train`, :mod:`dhian.errors`.
"""

from __future__ import annotations

from typing import Any

import torch

from dhian import metrics
from dhian.data.batching import BatchIterator
from dhian.data.examples import pack_mlm
from dhian.data.mlm import IGNORE_INDEX
from dhian.errors import ConfigError, DataError
from dhian.train.tasks.base import token_loss
from dhian.train.tasks.lm_eval import lm_documents, model_and_tokenizer
from dhian.train.tasks.mlm import masked_logits

__all__ = ["evaluate_mlm"]


@torch.no_grad()
def evaluate_mlm(
    loaded: Any,
    corpus: str | None = None,
    split: str = "dev",
    *,
    max_docs: int = 0,
    batch_size: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Masked-token accuracy, loss and perplexity of a loaded masked LM (kind ``mlm``).

    ``max_docs`` > 0 scores only the first documents; ``batch_size`` 0 = the training one (16 if
    that was 0).
    Returns ``loss`` (NLL per masked token, nats), ``ppl``, ``mlm_accuracy`` and the counts
    ``blocks``, ``masked``, ``documents`` plus ``source``.
    """
    model, tok = model_and_tokenizer(
        loaded,
        "mlm",
        "masked-LM evaluation needs a model of kind 'mlm' (model.type bert, task mlm)",
    )
    if tok is None:
        raise ConfigError("this model dir has no tokenizer; masked-LM evaluation needs one")
    spec = corpus or str(loaded.config.data.corpus)
    docs = lm_documents(spec, split, quiet=not progress)
    if max_docs > 0:
        docs = docs[:max_docs]
    blocks = pack_mlm(tok.encode_batch(docs), tok, int(loaded.config.data.block_size))
    if len(blocks) == 0:
        raise DataError(f"the {split} split of {spec!r} has no text to score")
    size = batch_size or int(loaded.config.train.batch_size) or 16  # 0 in a token-budget run
    device = next(model.parameters()).device
    total, count, correct, seen = 0.0, 0, 0, 0
    model.eval()
    for batch in BatchIterator(blocks, 0, size, shuffle=False, seed=0):
        seen += len(batch)
        batch = batch.to(device)
        logits, target = masked_logits(model, batch)  # (N, V), (N,)
        total += float(token_loss(logits.float(), target, IGNORE_INDEX).loss)
        count += int(target.numel())
        correct += int((logits.argmax(-1) == target).sum())
    mean = total / max(count, 1)
    return {
        "loss": mean,
        "ppl": metrics.perplexity(mean),
        "mlm_accuracy": correct / max(count, 1),
        "blocks": seen,
        "masked": count,
        "documents": len(docs),
        "source": f"{spec} {split}",
    }
