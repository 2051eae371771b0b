"""The extractive question-answering task (SQuAD v1.1 / v2.0) on a BERT backbone, and the
library evaluation of a trained QA model on any SQuAD split.

Owns :class:`QuestionAnsweringTask` (registered as ``question_answering``: ``model.type`` bert
with ``model.task: question_answering``): SQuAD JSON (``data.corpus: squad:DIR``,
:mod:`dhian.data.squad`) → tokenizer (pretrained WordPiece of ``train.init_from`` /
``data.tokenizer_path``, else trained on the questions and contexts) → windows of
``data.max_len`` ids sharing ``data.doc_stride`` context tokens, labelled with the answer's
start / end token ([CLS] when a window lacks it) → loss = (cross entropy of the start + of the
end) / 2 per window, summed. Validation: dev loss over windows and SQuAD exact match / F1 of
the best span per question (``exact_match``, ``f1``; for v2 dev sets the no-answer score competes
at threshold 0). Also owns :func:`evaluate_question_answering` (``dhian evaluate``).
Notation: B windows, T length.
Imports: torch, :mod:`dhian.data`, :mod:`dhian.inference.answer`, :mod:`dhian.metrics`,
:mod:`dhian.models.model_dir`, :mod:`dhian.train`, :mod:`dhian.errors`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dhian import metrics
from dhian.data.squad import QAExample, QAFeatures, encode_squad, read_squad, squad_path
from dhian.errors import ConfigError, DataError
from dhian.inference.answer import pick_answer, window_logits
from dhian.models import model_dir as model_io
from dhian.models.families import model_types_of
from dhian.train.tasks.base import EvalResult, IteratorStream, LossTerms, Task
from dhian.train.tasks.classification import load_bert_init
from dhian.train.tasks.token_classification import task_tokenizer

__all__ = ["QuestionAnsweringTask", "evaluate_question_answering", "score_features"]

MAX_ANSWER_LEN = 30


def span_loss(start: torch.Tensor, end: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """Summed (CE(start) + CE(end)) / 2 of logits (B, T) vs gold (B, 2) token positions."""
    return 0.5 * (
        F.cross_entropy(start.float(), gold[:, 0], reduction="sum")
        + F.cross_entropy(end.float(), gold[:, 1], reduction="sum")
    )


def score_features(
    model: torch.nn.Module, feats: QAFeatures, batch_size: int = 32
) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """SQuAD scores (``exact_match``, ``f1`` in percent, ``loss`` per window) of ``model`` on
    encoded windows, and (question, gold, predicted) samples."""
    logits = window_logits(model, feats.windows, batch_size)
    assert feats.data.spans is not None
    total = 0.0
    for (s, e), span in zip(logits, feats.data.spans, strict=True):
        gold = torch.tensor([span], dtype=torch.long)
        total += float(span_loss(s[None], e[None], gold))
    v2 = any(ex.impossible for ex in feats.examples)
    by_example: dict[int, list[int]] = {}
    for k, owner in enumerate(feats.example):
        by_example.setdefault(owner, []).append(k)
    preds: dict[str, str] = {}
    golds: dict[str, list[str]] = {}
    samples: list[tuple[str, str, str]] = []
    for i, ex in enumerate(feats.examples):
        ks = by_example[i]
        ans = pick_answer(
            ex.context,
            [feats.windows[k] for k in ks],
            [logits[k] for k in ks],
            MAX_ANSWER_LEN,
            0.0 if v2 else None,
        )
        preds[ex.id] = ans.text
        golds[ex.id] = [] if ex.impossible else [a for a, _ in ex.answers]
        if len(samples) < 3:
            samples.append(
                (ex.question, " | ".join(golds[ex.id]) or "(none)", ans.text or "(none)")
            )
    scores: dict[str, Any] = dict(metrics.squad_scores(preds, golds))
    scores["loss"] = total / max(len(logits), 1)
    return scores, samples


class QuestionAnsweringTask(Task):
    """Extractive QA on a SQuAD corpus (``data.corpus``)."""

    name = "question_answering"
    model_types = model_types_of("encoder")
    metrics = ("loss", "exact_match", "f1")

    @classmethod
    def fits(cls, model_cfg: Any) -> bool:
        return (
            getattr(model_cfg, "type", "") == "bert"
            and getattr(model_cfg, "task", "") == "question_answering"
        )

    def setup(self, tokenizer_dir: Path | None) -> None:
        data = self.config.data
        if tokenizer_dir is not None:
            data = dataclasses.replace(data, tokenizer_path=str(tokenizer_dir))
        limit = int(self.config.model.max_positions)
        if not 8 <= data.max_len <= limit:
            raise ConfigError(
                f"data.max_len={data.max_len} must be in 8..{limit} (model.max_positions)"
            )
        train = read_squad(squad_path(data.corpus, "train"))
        dev = read_squad(squad_path(data.corpus, "dev"))
        if data.max_train_examples > 0:
            train = train[: data.max_train_examples]
        if data.max_eval_examples > 0:
            dev = dev[: data.max_eval_examples]
        if not train or not dev:
            raise DataError(f"the train or dev split of {data.corpus!r} has no question")
        contexts = list(dict.fromkeys(ex.context for ex in train))
        tok = task_tokenizer(data, contexts + [ex.question for ex in train])
        self.tokenizers = {"src": tok, "tgt": tok}
        self.train_feats = encode_squad(train, tok, data.max_len, data.doc_stride)
        self.dev_feats = encode_squad(dev, tok, data.max_len, data.doc_stride)
        self.train_data = self.train_feats.data
        answered = sum(1 for s in self.train_data.spans or [] if s != (0, 0))
        self.log(
            f"data: train {len(train)} questions → {len(self.train_data)} windows ({answered} "
            f"holding the answer); dev {len(dev)} questions → {len(self.dev_feats.data)} windows; "
            f"{tok.kind} vocabulary of {tok.vocab_size}"
        )

    def build_kwargs(self) -> dict[str, Any]:
        return self.shared_vocab_kwargs("src")

    def init_weights(self, model: torch.nn.Module, path: str) -> None:
        load_bert_init(model, path, self.log)

    def train_stream(self, seed: int) -> IteratorStream:
        return IteratorStream(self.batches(self.train_data, seed, shuffle=True))

    def count(self, batch: Any) -> int:
        return len(batch)

    def loss(self, model: torch.nn.Module, batch: Any, label_smoothing: float) -> LossTerms:
        out = model(batch.src, batch.src_lengths, batch.type_ids)  # start/end (B, T)
        return LossTerms(span_loss(out.start_logits, out.end_logits, batch.labels), len(batch))

    @torch.no_grad()
    def evaluate(
        self, model: torch.nn.Module, device: torch.device, beam: int, max_examples: int
    ) -> EvalResult:
        feats = self.dev_feats
        if max_examples > 0:
            feats = _first(feats, max_examples)
        scores, samples = score_features(model, feats)
        return EvalResult({k: float(scores[k]) for k in self.metrics}, {}, samples)


def _first(feats: QAFeatures, n: int) -> QAFeatures:
    """The windows of the first ``n`` questions."""
    keep = [k for k, o in enumerate(feats.example) if o < n]
    d = feats.data
    assert d.type_ids is not None and d.spans is not None
    data = dataclasses.replace(
        d,
        src=[d.src[k] for k in keep],
        ids=list(range(len(keep))),
        type_ids=[d.type_ids[k] for k in keep],
        spans=[d.spans[k] for k in keep],
    )
    return QAFeatures(
        data, [feats.windows[k] for k in keep], [feats.example[k] for k in keep], feats.examples[:n]
    )


def evaluate_question_answering(
    loaded: model_io.LoadedModel,
    corpus: str | None = None,
    split: str = "dev",
    max_examples: int = 0,
) -> dict[str, Any]:
    """SQuAD exact match / F1 (official normalisation) and window loss of a QA model on
    ``split`` of a SQuAD corpus (default: the one it was trained on; the ``test`` split falls
    back to ``dev``, which is what SQuAD publishes)."""
    spec = corpus or str(loaded.config.data.corpus)
    if corpus is None and not (spec.startswith("squad:") or Path(spec).exists()):
        raise DataError(
            f"this model was not trained on a SQuAD corpus ({spec!r}); give --corpus squad:DIR"
        )
    try:
        path = squad_path(spec, split)
    except DataError:
        if split != "test":
            raise
        path = squad_path(spec, "dev")
    examples: Sequence[QAExample] = read_squad(path)
    if max_examples > 0:
        examples = examples[:max_examples]
    if not examples:
        raise DataError(f"{path} has no question")
    cfg = loaded.config
    limit = int(getattr(cfg.model, "max_positions", 512))
    max_len = min(cfg.data.max_len, limit) if cfg.data.max_len >= 8 else min(limit, 384)
    tok = loaded.tokenizers["src"]
    feats = encode_squad(examples, tok, max_len, cfg.data.doc_stride, fit_stride=True)
    was_training = loaded.model.training
    loaded.model.eval()
    try:
        scores, _ = score_features(loaded.model, feats)
    finally:
        loaded.model.train(was_training)
    return {"corpus": spec, "file": str(path), "questions": len(examples), **scores}
