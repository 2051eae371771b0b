"""Every attention weight of any dhian model family for one input text.

Owns :func:`extract_attention` → :class:`AttentionResult` (tokens, self-attention per kind,
cross attention, a short description) and :meth:`AttentionResult.payload` (the viewer's JSON,
:func:`dhian.viz.attention_payload`). What is extracted:

- translation, RNNsearch: the additive/dot/general cross attention of every decoder step
  (1 layer × 1 head); transformer: encoder self, decoder self and cross attention of every
  layer and head. Without ``target`` the source is decoded greedily and that output is then
  teacher-forced, which reproduces the weights of decoding exactly; with ``target`` the given
  text is teacher-forced. Target rows are labelled by the token produced at that step
  (y1 … yn, then ``</s>``).
- BERT (dhian or HF dirs: backbone, MLM, classifier, token classifier, QA) and the Keras-style
  classifier: self attention of every layer and head over ``[CLS] x [SEP]`` (or the plain
  ids); a QA model given a ``context`` reads ``[CLS] question [SEP] context [SEP]``. The
  prediction goes in the meta: the label (classifier), the word tags (token classifier), the
  answer span (QA).
- GPT: causal self attention of every layer and head over the prompt.
- LLaMA family (e.g. ``smollm2``): the same, from the eager weights path; with grouped-query
  attention every head is labelled with the KV head it reads (``h3 (kv1)``:
  :func:`kv_head_labels`), and the meta says how many query heads share each KV head.

Notation: L layers, H heads, Ts/Tt source/target length, T length. Arrays are float32 numpy.
Imports: torch, numpy, :mod:`dhian.decoding`, :mod:`dhian.models`, :mod:`dhian.viz`,
:mod:`dhian.text` (question + context pairs),
:mod:`dhian.serve` (inference, tokens), :mod:`dhian.errors`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dhian.decoding import greedy_decode
from dhian.errors import DataError
from dhian.inference.capabilities import has_attention, model_device, model_family, model_type
from dhian.inference.display_tokens import display_tokens
from dhian.inference.encode import encode_sources, encode_texts, input_limit
from dhian.inference.generate import context_size, uses_static_cache
from dhian.inference.translate import pad_rows
from dhian.models.model_dir import LoadedModel
from dhian.text.bert_inputs import encode_pair
from dhian.viz import attention_payload

__all__ = ["AttentionResult", "extract_attention", "kv_head_labels"]


@dataclasses.dataclass
class AttentionResult:
    """Attention of one input. ``self_attention``: name → (L, H, T, T) (``encoder``/``decoder``;
    names with "dec" are over ``tokens_tgt`` when there is one); ``cross_attention``
    (L, H, Tt, Ts) or None; ``output``: the decoded translation / predicted label, if any;
    ``head_labels``: a name per self-attention head where plain numbers would hide something
    (grouped-query attention: ``h3 (kv1)``), else None."""

    model_type: str
    kind: str
    tokens_src: list[str]
    tokens_tgt: list[str] | None
    self_attention: dict[str, np.ndarray]
    cross_attention: np.ndarray | None
    meta: dict[str, Any]
    output: str | None = None
    head_labels: list[str] | None = None

    def tokens_for(self, name: str) -> list[str]:
        """The tokens a self-attention kind is over (decoder → target tokens)."""
        if "dec" in name and self.tokens_tgt is not None:
            return self.tokens_tgt
        return self.tokens_src

    def payload(self, title: str | None = None) -> dict[str, Any]:
        """The viewer's JSON data (see :mod:`dhian.viz.payload`)."""
        return attention_payload(
            tokens_src=self.tokens_src,
            tokens_tgt=self.tokens_tgt,
            self_attention=self.self_attention or None,
            cross_attention=self.cross_attention,
            title=title or f"{self.model_type} attention",
            meta=self.meta,
            head_labels=self.labels_by_kind(),
        )

    def labels_by_kind(self) -> dict[str, list[str]] | None:
        """``head_labels`` for every self-attention kind (the payload's form), or None."""
        if self.head_labels is None:
            return None
        return {name: list(self.head_labels) for name in self.self_attention}


def _stack(weights: Any) -> np.ndarray:
    """Per-layer (1, H, Tq, Tk) tensors (or one (1, Tq, Tk)) → (L, H, Tq, Tk) float32 numpy."""
    if isinstance(weights, Tensor):
        w = weights.detach().float().cpu()
        if w.dim() == 3:  # RNN cross attention (1, Tt, Ts)
            w = w[:, None]  # (1, 1, Tt, Ts)
        return w.numpy()
    return torch.cat([w.detach().float().cpu() for w in weights], dim=0).numpy()  # (L, H, ., .)


@torch.no_grad()
def extract_attention(
    loaded: LoadedModel, text: str, target: str | None = None, *, context: str | None = None
) -> AttentionResult:
    """All attention weights of ``loaded``'s model for ``text`` (see the module docstring).

    ``target`` (translation only) is teacher-forced instead of the greedy output; ``context``
    (question answering only) is the passage read after the question ``text``.
    Raises :class:`~dhian.errors.DataError` for a model without attention (``rnnencdec``),
    a ``target`` given to a model that has none, or a text with no token.
    """
    if not has_attention(loaded):
        raise DataError(
            f"a {model_type(loaded)!r} model has no attention weights to show "
            "(rnnencdec compresses the source into one vector; use rnnsearch or transformer)"
        )
    family = model_family(loaded)
    if target is not None and family != "seq2seq":
        raise DataError(
            f"target is only for translation models; this one is a {loaded.kind!r} model"
        )
    if context is not None and loaded.kind != "question_answering":
        raise DataError(
            f"context is only for question-answering models; this one is a {loaded.kind!r} model"
        )
    was_training = loaded.model.training
    loaded.model.eval()
    try:
        if family == "seq2seq":
            return _seq2seq(loaded, text, target)
        if family == "causal_lm":
            return _causal(loaded, text)
        return _encoder(loaded, text, context)
    finally:
        loaded.model.train(was_training)


def _seq2seq(loaded: LoadedModel, text: str, target: str | None) -> AttentionResult:
    model: Any = loaded.model
    src_tok, tgt_tok = loaded.tokenizers["src"], loaded.tokenizers["tgt"]
    rows, cut = encode_sources(loaded, [text])
    if not rows[0]:
        raise DataError(f"the source text {text!r} has no tokens; give some text to translate")
    src, lengths = pad_rows(rows, model.pad_id, model_device(model))  # (1, Ts), (1,)
    if target is None:
        out_ids = greedy_decode(model, src, lengths)[0].tokens
        how = "greedy decoding"
    else:
        out_ids = tgt_tok.encode(target)
        how = "teacher-forced target"
    tgt_in = torch.tensor([[model.bos_id, *out_ids]], dtype=torch.long, device=src.device)
    out = model(src, lengths, tgt_in, need_weights=True)  # tgt_in (1, Tt)
    if out.attention is None:
        raise DataError(f"the {model_type(loaded)!r} model returned no attention weights")
    self_att: dict[str, np.ndarray] = {}
    if getattr(out, "encoder_attention", None):
        self_att["encoder"] = _stack(out.encoder_attention)  # (L, H, Ts, Ts)
    if getattr(out, "decoder_attention", None):
        self_att["decoder"] = _stack(out.decoder_attention)  # (L, H, Tt, Tt)
    cross = _stack(out.attention)  # (L, H, Tt, Ts)
    translation = tgt_tok.decode(out_ids)
    meta = {
        "model": model_type(loaded),
        "output": how,
        "translation": translation,
        "layers × heads": f"{cross.shape[0]} × {cross.shape[1]}",
    }
    if cut[0]:
        meta["note"] = f"source truncated to {len(rows[0])} tokens"
    return AttentionResult(
        model_type(loaded),
        loaded.kind,
        display_tokens(src_tok, rows[0]),
        display_tokens(tgt_tok, [*out_ids, model.eos_id]),
        self_att,
        cross,
        meta,
        translation,
    )


def _encoder(loaded: LoadedModel, text: str, context: str | None = None) -> AttentionResult:
    model: Any = loaded.model
    tok = loaded.tokenizers["src"]
    style = str(getattr(model, "input_style", "bert"))
    max_len, too_long = input_limit(model)
    if context is not None:  # [CLS] question [SEP] context [SEP], types 0 / 1
        row, segs = encode_pair(tok, text, context, max_len)
        ids, types = torch.tensor([row]), torch.tensor([segs])  # (1, T)
        lengths = torch.tensor([len(row)])
    else:
        ids, types, lengths = encode_texts(tok, [text], max_len, too_long, style)  # (1, T)
    if int(lengths[0]) == 0:
        raise DataError(f"the text {text!r} has no tokens")
    device = model_device(model)
    out = model(ids.to(device), lengths.to(device), types.to(device), need_weights=True)
    weights = getattr(out, "attentions", None) or getattr(out, "attention", None)
    if not weights:
        raise DataError(f"the {model_type(loaded)!r} model returned no attention weights")
    w = _stack(weights)  # (L, H, T, T)
    meta: dict[str, Any] = {"model": model_type(loaded), "task": loaded.kind}
    meta["layers × heads"] = f"{w.shape[0]} × {w.shape[1]}"
    output = None
    if loaded.kind == "classification":
        probs = torch.softmax(out.logits[0].float(), dim=-1).cpu()  # (C,)
        labels = tuple(getattr(model, "labels", ())) or tuple(map(str, range(probs.numel())))
        best = int(probs.argmax())
        output = labels[best]
        meta["prediction"] = f"{output} ({float(probs[best]):.3f})"
    if loaded.kind == "token_classification":
        output = _token_tags(model, tok, ids[0], out.logits[0], int(lengths[0]))
        meta["tags"] = output
    if loaded.kind == "question_answering":
        output = _answer_span(tok, ids[0], types[0], out.start_logits[0], out.end_logits[0])
        meta["answer"] = output or "(no span in a context segment: give a context)"
    return AttentionResult(
        model_type(loaded),
        loaded.kind,
        display_tokens(tok, ids[0, : int(lengths[0])].tolist()),
        None,
        {"encoder": w},
        None,
        meta,
        output,
    )


def kv_head_labels(n_heads: int, n_kv_heads: int) -> list[str]:
    """``["h0 (kv0)", "h1 (kv0)", …]``: query head h of grouped-query attention reads KV head
    ``h // (n_heads // n_kv_heads)`` (consecutive heads share one, as in LLaMA's
    ``repeat_kv``)."""
    group = n_heads // n_kv_heads
    return [f"h{h} (kv{h // group})" for h in range(n_heads)]


def _token_tags(model: Any, tok: Any, ids: Tensor, logits: Tensor, n: int) -> str:
    """``token/LABEL`` of every non-special token (logits (T, C), first ``n`` positions)."""
    labels = tuple(getattr(model, "labels", ())) or tuple(map(str, range(logits.size(-1))))
    best = logits[:n].argmax(-1).tolist()
    shown = display_tokens(tok, ids[:n].tolist())
    special: frozenset[int] = getattr(tok, "special_ids", frozenset())
    return " ".join(f"{shown[i]}/{labels[best[i]]}" for i in range(n) if int(ids[i]) not in special)


def _answer_span(tok: Any, ids: Tensor, types: Tensor, start: Tensor, end: Tensor) -> str:
    """The text of the best start ≤ end span (≤ 30 tokens) inside the context segment."""
    ctx = (types == 1) & ~torch.isin(ids, torch.tensor(sorted(tok.special_ids) or [-1]))  # (T,)
    where = ctx.nonzero().flatten().tolist()
    best: tuple[float, int, int] | None = None
    for s in where:
        for e in where:
            if s <= e < s + 30:
                score = float(start[s] + end[e])
                if best is None or score > best[0]:
                    best = (score, s, e)
    return "" if best is None else str(tok.decode(ids[best[1] : best[2] + 1].tolist()))


def _causal(loaded: LoadedModel, text: str) -> AttentionResult:
    model: Any = loaded.model
    tok = loaded.tokenizers.get("tgt") or loaded.tokenizers["src"]
    ids = tok.encode(text)
    if not ids:
        raise DataError(f"the prompt {text!r} has no tokens")
    meta: dict[str, Any] = {"model": model_type(loaded), "task": "causal LM"}
    static = uses_static_cache(model)  # LLaMA family: forward → (logits, weights)
    block = context_size(model) if static else int(getattr(model, "block_size", len(ids)))
    if len(ids) > block:
        meta["note"] = f"prompt cropped to its last {block} tokens"
        ids = ids[-block:]
    x = torch.tensor([ids], dtype=torch.long, device=model_device(model))  # (1, T)
    labels = None
    if static:
        logits, weights = model(x, need_weights=True)  # weights (L, 1, H, T, T)
        w = weights[:, 0].detach().float().cpu().numpy()  # (L, H, T, T)
        n_heads, n_kv = int(model.cfg.n_heads), int(model.cfg.n_kv_heads)
        if n_kv < n_heads:
            labels = kv_head_labels(n_heads, n_kv)
            meta["grouped-query attention"] = (
                f"{n_heads} query heads share {n_kv} KV heads: "
                f"{n_heads // n_kv} consecutive heads per KV head"
            )
    else:
        out = model(x, need_weights=True)
        logits = out.logits
        w = _stack(out.attention)  # (L, H, T, T)
    meta["layers × heads"] = f"{w.shape[0]} × {w.shape[1]}"
    next_id = int(logits[0, -1].argmax())
    meta["next token"] = display_tokens(tok, [next_id])[0]
    return AttentionResult(
        model_type(loaded),
        loaded.kind,
        display_tokens(tok, ids),
        None,
        {"decoder": w},
        None,
        meta,
        head_labels=labels,
    )
