"""The token-classification task (named entities, BIO tags) on a BERT backbone, and the library
evaluation of a trained tagger on any CoNLL split.

Owns :class:`TokenClassificationTask` (registered as ``token_classification``: ``model.type``
bert with ``model.task: token_classification``): a CoNLL column corpus (``data.corpus:
conll:DIR``, :mod:`dhian.data.conll`) → tokenizer (the pretrained WordPiece of
``train.init_from`` / ``data.tokenizer_path``, else one trained on the train words) →
``[CLS] subwords [SEP]`` with each word's tag on its first subword and -100 elsewhere → summed
cross entropy over the tagged subwords (frozen backbone or full fine-tuning via
``train.freeze``). The tag set of the corpus becomes ``model.labels``. Validation: dev loss,
word accuracy and seqeval entity precision / recall / F1 (``entity_f1``). Also owns
:func:`predict_tags` and :func:`evaluate_token_classification` (``dhian evaluate``).
Notation: B batch, T length, C tags.
Imports: torch, :mod:`dhian.data`, :mod:`dhian.metrics`, :mod:`dhian.models.model_dir`,
:mod:`dhian.train`, :mod:`dhian.config`, :mod:`dhian.errors`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dhian import metrics
from dhian.config import DataConfig
from dhian.data.batching import BatchIterator
from dhian.data.builtin_corpora import resolve_pretrained
from dhian.data.conll import (
    IGNORE,
    TaggedSentence,
    conll_path,
    encode_tagged,
    read_conll,
    tag_names,
)
from dhian.data.examples import Examples
from dhian.errors import ConfigError, DataError
from dhian.models import model_dir as model_io
from dhian.models.families import model_types_of
from dhian.text.tokenizer import Tokenizer
from dhian.text.tokenizer_files import load_tokenizer
from dhian.text.training import train_tokenizer
from dhian.train.tasks.base import EvalResult, IteratorStream, LossTerms, Task, token_loss
from dhian.train.tasks.classification import load_bert_init, with_labels

EVAL_BATCH_SIZE = 32

__all__ = [
    "TokenClassificationTask",
    "evaluate_token_classification",
    "predict_tags",
    "task_tokenizer",
]


def task_tokenizer(data: DataConfig, texts: Sequence[str]) -> Tokenizer:
    """``data.tokenizer_path`` (a pretrained WordPiece, e.g. of ``train.init_from``) or a
    tokenizer of kind ``data.tokenizer`` trained on ``texts``."""
    if data.tokenizer_path:
        return load_tokenizer(resolve_pretrained(data.tokenizer_path), lowercase=data.lowercase)
    return train_tokenizer(data.tokenizer, texts, data.vocab_size, lowercase=data.lowercase)


def predict_tags(
    model: torch.nn.Module, data: Examples, names: Sequence[str], device: torch.device
) -> tuple[list[list[str]], list[list[str]], float, int]:
    """(predicted word tags, gold word tags, summed cross entropy, tagged words) of ``data``
    (one list per sentence, words cut by truncation left out of both)."""
    pred: dict[int, list[str]] = {}
    gold: dict[int, list[str]] = {}
    total, count = 0.0, 0
    batches = BatchIterator(data, 0, EVAL_BATCH_SIZE, shuffle=False)
    for batch in batches:
        batch = batch.to(device)
        assert batch.tgt_out is not None
        logits = model(batch.src, batch.src_lengths, batch.type_ids).logits  # (B, T, C)
        terms = token_loss(logits, batch.tgt_out, IGNORE)
        total += float(terms.loss)
        count += terms.count
        guess = logits.argmax(-1).cpu()  # (B, T)
        target = batch.tgt_out.cpu()
        for r, i in enumerate(batch.ids):
            keep = target[r] != IGNORE
            pred[i] = [names[int(k)] for k in guess[r][keep]]
            gold[i] = [names[int(k)] for k in target[r][keep]]
    order = sorted(pred)
    return [pred[i] for i in order], [gold[i] for i in order], total, count


def _scores(
    pred: list[list[str]], gold: list[list[str]], total: float, count: int
) -> dict[str, Any]:
    ent = metrics.entity_scores(pred, gold)
    right = sum(
        p == g for ps, gs in zip(pred, gold, strict=True) for p, g in zip(ps, gs, strict=True)
    )
    return {
        "loss": total / max(count, 1),
        "accuracy": right / max(count, 1),
        "entity_precision": ent["precision"],
        "entity_recall": ent["recall"],
        "entity_f1": ent["f1"],
        "entities": ent["entities"],
        "types": ent["types"],
    }


class TokenClassificationTask(Task):
    """BIO tagging of the sentences of a CoNLL corpus (``data.corpus``)."""

    name = "token_classification"
    model_types = model_types_of("encoder")
    metrics = ("loss", "accuracy", "entity_precision", "entity_recall", "entity_f1")

    @classmethod
    def fits(cls, model_cfg: Any) -> bool:
        return (
            getattr(model_cfg, "type", "") == "bert"
            and getattr(model_cfg, "task", "") == "token_classification"
        )

    def setup(self, tokenizer_dir: Path | None) -> None:
        data = self.config.data
        if tokenizer_dir is not None:
            data = dataclasses.replace(data, tokenizer_path=str(tokenizer_dir))
        limit = int(self.config.model.max_positions)
        if not 3 <= data.max_len <= limit:
            raise ConfigError(
                f"data.max_len={data.max_len} must be in 3..{limit} (model.max_positions)"
            )
        train = read_conll(conll_path(data.corpus, "train"))
        dev = read_conll(conll_path(data.corpus, "dev"))
        if data.max_train_examples > 0:
            train = train[: data.max_train_examples]
        if data.max_eval_examples > 0:
            dev = dev[: data.max_eval_examples]
        if not train or not dev:
            raise DataError(f"the train or dev split of {data.corpus!r} has no sentence")
        names = list(self.config.model.labels) or tag_names(train + dev)
        self.config = with_labels(self.config, names)
        tok = task_tokenizer(data, [" ".join(s.words) for s in train])
        self.tokenizers = {"src": tok, "tgt": tok}
        self.names = list(self.config.model.label_names)
        self.train_data = encode_tagged(train, tok, self.names, data.max_len, "train")
        self.dev_data = encode_tagged(dev, tok, self.names, data.max_len, "dev")
        self.dev_sentences: list[TaggedSentence] = dev
        self.log(
            f"data: train {self.train_data.report()}; dev {self.dev_data.report()}; "
            f"{len(self.names)} tags ({', '.join(self.names)}); {tok.kind} vocabulary of "
            f"{tok.vocab_size}"
        )

    def resume_config(self, saved: Any) -> Any:
        labels = tuple(getattr(saved.model, "labels", ()))
        model = dataclasses.replace(self.config.model, num_labels=len(labels), labels=labels)
        return dataclasses.replace(self.config, model=model)

    def build_kwargs(self) -> dict[str, Any]:
        return self.shared_vocab_kwargs("src")

    def init_weights(self, model: torch.nn.Module, path: str) -> None:
        load_bert_init(model, path, self.log)

    def train_stream(self, seed: int) -> IteratorStream:
        return IteratorStream(self.batches(self.train_data, seed, shuffle=True))

    def loss(self, model: torch.nn.Module, batch: Any, label_smoothing: float) -> LossTerms:
        logits = model(batch.src, batch.src_lengths, batch.type_ids).logits  # (B, T, C)
        return token_loss(logits, batch.tgt_out, IGNORE, label_smoothing)

    @torch.no_grad()
    def evaluate(
        self, model: torch.nn.Module, device: torch.device, beam: int, max_examples: int
    ) -> EvalResult:
        data = self.dev_data
        if max_examples > 0:
            data = _first(data, max_examples)
        pred, gold, total, count = predict_tags(model, data, self.names, device)
        scores = _scores(pred, gold, total, count)
        result = {k: float(scores[k]) for k in self.metrics}
        samples = []
        for k in range(min(3, len(pred))):
            words = self.dev_sentences[data.ids[k]].words[: len(pred[k])]
            samples.append((" ".join(words), " ".join(gold[k]), " ".join(pred[k])))
        return EvalResult(result, {}, samples)


def _first(data: Examples, n: int) -> Examples:
    assert data.tgt is not None and data.type_ids is not None
    return dataclasses.replace(
        data, src=data.src[:n], ids=data.ids[:n], tgt=data.tgt[:n], type_ids=data.type_ids[:n]
    )


def evaluate_token_classification(
    loaded: model_io.LoadedModel,
    corpus: str | None = None,
    split: str = "test",
    max_examples: int = 0,
) -> dict[str, Any]:
    """Entity P/R/F1 (seqeval), word accuracy and loss of a tagger on ``split`` of a CoNLL
    corpus (default: the one it was trained on). A gold tag the model does not know is an
    error naming it."""
    spec = corpus or str(loaded.config.data.corpus)
    if corpus is None and not (spec.startswith("conll:") or Path(spec).exists()):
        raise DataError(
            f"this model was not trained on a CoNLL corpus ({spec!r}); give --corpus conll:DIR"
        )
    sentences = read_conll(conll_path(spec, split))
    if max_examples > 0:
        sentences = sentences[:max_examples]
    if not sentences:
        raise DataError(f"the {split} split of {spec!r} has no sentence")
    model = loaded.model
    names = list(getattr(model, "labels", ()))
    limit = int(getattr(loaded.config.model, "max_positions", 512))
    max_len = min(loaded.config.data.max_len, limit) if loaded.config.data.max_len > 2 else limit
    data = encode_tagged(sentences, loaded.tokenizers["src"], names, max_len, f"{spec} {split}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            pred, gold, total, count = predict_tags(model, data, names, device)
    finally:
        model.train(was_training)
    return {
        "corpus": spec,
        "split": split,
        "sentences": len(sentences),
        "truncated": data.truncated,
        **_scores(pred, gold, total, count),
    }
