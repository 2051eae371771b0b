"""BERT task heads and the inference helpers that use them.

Owns :class:`BertForMaskedLM` (transform dense + activation + LayerNorm, decoder tied to the
word embeddings + an output bias), :class:`BertForSequenceClassification` (dropout + linear on
the pooled [CLS]), the preprocessing of raw texts into padded tensors (:func:`encode_texts`,
with the truncate-with-warning / error policy of :func:`dhian.models.bert.check_length`), and
the library entry points :func:`fill_mask` and :func:`classify` (the CLI only prints them).

Parameter names: ``backbone.*`` (see :mod:`dhian.models.bert.model`), ``mlm.transform.dense``,
``mlm.transform.norm``, ``mlm.bias``; ``classifier``. The tied decoder uses
``backbone.embeddings.word.weight`` directly, so the state dict holds no shared tensor.

Notation: B batch, T length, H heads, E model dim, V vocab, C classes.
Imports: torch, :mod:`dhian.nn`, :mod:`dhian.text`, :mod:`dhian.models` (bert, outputs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dhian.errors import DataError
from dhian.models.bert.config import BertConfig
from dhian.models.bert.model import BertBackbone, backbone_kwargs, check_length, init_bert_weights
from dhian.models.outputs import ClassifierOutput, LMOutput
from dhian.nn import get_activation
from dhian.text.bert_inputs import build_bert_input

__all__ = [
    "BertForMaskedLM",
    "BertForSequenceClassification",
    "ClassifyResult",
    "build_bert",
    "classify",
    "encode_texts",
    "fill_mask",
]


class MLMTransform(nn.Module):
    """LayerNorm(act(dense(h))): (B, T, E) → (B, T, E)."""

    def __init__(self, embed_dim: int, activation: str, layer_norm_eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(embed_dim, embed_dim)
        self.act = get_activation(activation)
        self.norm = nn.LayerNorm(embed_dim, eps=layer_norm_eps)

    def forward(self, h: Tensor) -> Tensor:
        """h (B, T, E) → (B, T, E)."""
        return self.norm(self.act(self.dense(h)))


class MLMHead(nn.Module):
    """Masked-LM head: ``transform`` then logits = h · Wᵀ + ``bias`` with W the (tied) word
    embedding (V, E) passed to :meth:`forward`."""

    def __init__(self, embed_dim: int, vocab_size: int, activation: str, eps: float) -> None:
        super().__init__()
        self.transform = MLMTransform(embed_dim, activation, eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, h: Tensor, word_weight: Tensor) -> Tensor:
        """h (B, T, E), word_weight (V, E) → logits (B, T, V)."""
        return F.linear(self.transform(h), word_weight, self.bias)


class BertForMaskedLM(nn.Module):
    """Backbone + masked-LM head (decoder tied to ``backbone.embeddings.word``)."""

    input_style = "bert"

    def __init__(
        self,
        backbone: BertBackbone,
        activation: str = "gelu",
        layer_norm_eps: float = 1e-12,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        vocab, dim = backbone.word_embeddings.weight.shape
        self.mlm = MLMHead(dim, vocab, activation, layer_norm_eps)
        self.mlm.apply(lambda m: init_bert_weights(m, init_std))

    def forward(
        self,
        input_ids: Tensor,
        lengths: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        need_weights: bool = False,
    ) -> LMOutput:
        """input_ids (B, T) (+ lengths (B,) or attention_mask (B, T)) → ``logits`` (B, T, V)
        and, when ``need_weights``, ``attention`` per layer (B, H, T, T)."""
        out = self.backbone(
            input_ids, lengths, token_type_ids, attention_mask, need_weights=need_weights
        )
        logits = self.mlm(out.last_hidden, self.backbone.word_embeddings.weight)  # (B, T, V)
        return LMOutput(logits, out.attentions)


class BertForSequenceClassification(nn.Module):
    """Backbone (with pooler) + dropout + linear (E → C) on the pooled [CLS] vector.

    ``labels``: the C class names (kept for :func:`classify`; not parameters).
    """

    input_style = "bert"

    def __init__(
        self,
        backbone: BertBackbone,
        num_labels: int,
        dropout: float = 0.1,
        labels: Sequence[str] = (),
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        if backbone.pooler is None:
            raise ValueError("BertForSequenceClassification needs a backbone built with pooler")
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(backbone.embed_dim, num_labels)
        init_bert_weights(self.classifier, init_std)
        self.labels = tuple(labels) or tuple(str(i) for i in range(num_labels))

    def forward(
        self,
        input_ids: Tensor,
        lengths: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        need_weights: bool = False,
    ) -> ClassifierOutput:
        """input_ids (B, T) (+ lengths (B,) or attention_mask (B, T)) → ``logits`` (B, C) and,
        when ``need_weights``, ``attention`` per layer (B, H, T, T)."""
        out = self.backbone(
            input_ids, lengths, token_type_ids, attention_mask, need_weights=need_weights
        )
        assert out.pooled is not None
        return ClassifierOutput(self.classifier(self.dropout(out.pooled)), out.attentions)


# --------------------------------------------------------------------------- preprocessing


def _max_positions(model: nn.Module) -> tuple[int, str]:
    """(longest input, too_long policy) of a BERT-style or plain classifier model."""
    inner = getattr(model, "backbone", model)
    max_len = getattr(inner, "max_positions", None) or getattr(model, "max_len", None)
    if max_len is None:
        raise ValueError(f"{type(model).__name__} does not say its maximum input length")
    return int(max_len), str(getattr(inner, "too_long", "truncate"))


def encode_texts(
    tokenizer: Any,
    texts: Sequence[str],
    max_len: int,
    too_long: str = "truncate",
    style: str = "bert",
) -> tuple[Tensor, Tensor, Tensor]:
    """Tokenise and pad B texts → (ids (B, T), token_type_ids (B, T), lengths (B,)).

    ``style="bert"``: ``[CLS] x [SEP]``; ``"plain"``: the tokens only. A text longer than
    ``max_len`` ids is truncated with a warning, or raises :class:`DataError` when
    ``too_long="error"``. Padding uses ``tokenizer.pad_id``.
    """
    rows: list[list[int]] = []
    extra = 2 if style == "bert" else 0
    for i, ids in enumerate(tokenizer.encode_batch(list(texts))):
        keep = check_length(len(ids) + extra, max_len, too_long, f"text {i}") - extra
        if style == "bert":
            rows.append(build_bert_input(tokenizer, ids[: max(keep, 0)], None, max_len)[0])
        else:
            rows.append(ids[:keep])
    t = max((len(r) for r in rows), default=0) or 1
    out = torch.full((len(rows), t), int(tokenizer.pad_id), dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    return out, torch.zeros_like(out), lengths


# --------------------------------------------------------------------------- inference


@torch.no_grad()
def fill_mask(
    model: nn.Module, tokenizer: Any, text: str, top_k: int = 5
) -> list[list[tuple[str, float]]]:
    """Top-``top_k`` (token, probability) for each [MASK] of ``text``, most probable first.

    One list per mask token, in text order. Probabilities are the softmax over the whole
    vocabulary, so each list sums to at most 1.
    """
    if not isinstance(model, BertForMaskedLM):
        raise DataError(
            f"fill-mask needs a BERT masked-LM model, got {type(model).__name__} "
            "(import an MLM checkpoint or train with model.task=mlm)"
        )
    if top_k < 1:
        raise DataError(f"top_k must be at least 1, got {top_k}")
    max_len, too_long = _max_positions(model)
    ids, types, lengths = encode_texts(tokenizer, [text], max_len, too_long)
    where = (ids[0, : int(lengths[0])] == int(tokenizer.mask_id)).nonzero().flatten()  # (M,)
    if where.numel() == 0:
        mask_tok = tokenizer.id_to_token(int(tokenizer.mask_id))
        raise DataError(f"no {mask_tok} token in the (possibly truncated) text: {text!r}")
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        logits = model(ids.to(device), lengths.to(device), types.to(device)).logits  # (1, T, V)
    finally:
        model.train(was_training)
    probs = torch.softmax(logits[0, where.to(device)].float(), dim=-1)  # (M, V)
    top = probs.topk(min(top_k, probs.size(-1)), dim=-1)  # (M, k)
    return [
        [(tokenizer.id_to_token(int(i)), float(p)) for p, i in zip(ps, ix, strict=True)]
        for ps, ix in zip(top.values.cpu(), top.indices.cpu(), strict=True)
    ]


class ClassifyResult(NamedTuple):
    """The predicted ``label`` and ``probs``: class name → probability (sums to 1)."""

    label: str
    probs: dict[str, float]


@torch.no_grad()
def classify(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    batch_size: int = 32,
    labels: Sequence[str] | None = None,
) -> list[ClassifyResult]:
    """Label and class probabilities of each text, run ``batch_size`` texts at a time.

    Works for any classifier returning :class:`ClassifierOutput` from
    ``model(ids, lengths, ...)``: BERT (``[CLS] x [SEP]`` inputs) or the Keras-style model
    (plain ids). ``labels`` default to the model's own ``labels``. Results are in input order;
    texts are batched by length so padding stays small.
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be at least 1, got {batch_size}")
    names = tuple(labels) if labels is not None else tuple(getattr(model, "labels", ()))
    style = str(getattr(model, "input_style", "bert"))
    max_len, too_long = _max_positions(model)
    device = next(model.parameters()).device
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    results: dict[int, ClassifyResult] = {}
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            ids, _types, lengths = encode_texts(
                tokenizer, [texts[i] for i in chunk], max_len, too_long, style
            )
            logits = model(ids.to(device), lengths.to(device)).logits  # (B, C)
            probs = torch.softmax(logits.float(), dim=-1).cpu()  # (B, C)
            if not names:
                names = tuple(str(c) for c in range(probs.size(-1)))
            if len(names) != probs.size(-1):
                raise DataError(f"{len(names)} label names for {probs.size(-1)} classes")
            for i, row in zip(chunk, probs, strict=True):
                values = [float(p) for p in row]
                best = max(range(len(values)), key=values.__getitem__)
                results[i] = ClassifyResult(names[best], dict(zip(names, values, strict=True)))
    finally:
        model.train(was_training)
    return [results[i] for i in range(len(texts))]


def build_bert(
    cfg: BertConfig,
    src_vocab_size: int | None = None,
    tgt_vocab_size: int | None = None,
    **_: Any,
) -> nn.Module:
    """The model of ``cfg.task``: :class:`BertBackbone` (``backbone``),
    :class:`~dhian.models.bert_heads.BertForMaskedLM` (``mlm``) or
    :class:`~dhian.models.bert_heads.BertForSequenceClassification` (``classification``).
    ``src_vocab_size`` (the tokenizer's V) overrides ``cfg.vocab_size`` when given."""
    backbone = BertBackbone(**backbone_kwargs(cfg, src_vocab_size))
    if cfg.task == "backbone":
        return backbone
    if cfg.task == "mlm":
        return BertForMaskedLM(
            backbone, activation=cfg.activation, layer_norm_eps=cfg.layer_norm_eps
        )
    drop = cfg.dropout if cfg.classifier_dropout is None else cfg.classifier_dropout
    return BertForSequenceClassification(backbone, cfg.num_labels, drop, labels=cfg.label_names)
