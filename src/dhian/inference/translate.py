"""Translate lists of sentences with a loaded translation model: load, encode, sort, batch,
decode (greedy or beam), restore the input order, and collect attention for alignment plots.

Owns :func:`load_translation_model` (:func:`dhian.inference.load.load_model` plus a one-line
error naming the kind and the right verb for a model of another kind), :func:`translate_texts` and its
:class:`Translation` record, and :func:`pad_rows` (id lists → one right-padded batch).

Conventions of :func:`translate_texts`: sentences are sorted by source length (longest first)
and decoded ``batch_size`` at a time, then returned in input order. An empty (or all-blank) line
gives an empty translation without being decoded. A source longer than the model's limit
(``max_src_len``: by default the transformer's ``max_positions``; RNNs have none) is truncated
and reported through ``warn``. Output lengths are capped at
``floor(max_len_ratio * src_len + max_len_offset)`` tokens and, for transformers, at
``max_positions - 1`` (the decoder's position table).

Attention: RNNsearch gives its per-step weights; transformers the last decoder layer's cross
attention averaged over heads, or with ``layer``/``head`` the chosen layer/head (recomputed by one
teacher-forced pass over the decoded tokens). Each :class:`Translation.attention` is (Tt, Ts):
Tt = output tokens + EOS, Ts = source tokens (their strings are ``out_tokens``/``src_tokens``).

Notation: B sentences per batch, Ts/Tt source/output lengths, H heads, L decoder layers.
Imports: stdlib, torch, tqdm, :mod:`dhian.decoding` searches, :mod:`dhian.inference.load`,
:mod:`dhian.interop.hf_dirs`, :mod:`dhian.models.model_dir`, :mod:`dhian.errors`.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from dhian.decoding.base import Hypothesis
from dhian.decoding.beam import beam_search
from dhian.decoding.cancel import ShouldStop
from dhian.decoding.greedy import greedy_decode
from dhian.errors import ConfigError, DataError, ModelLoadError
from dhian.inference.display_tokens import display_tokens
from dhian.inference.encode import source_limit
from dhian.inference.load import load_model, require_task, resolve_model_dir
from dhian.interop.hf_dirs import hf_model_type
from dhian.models.model_dir import LoadedModel

__all__ = [
    "Translation",
    "default_no_repeat",
    "default_src_eos",
    "forced_attention",
    "load_translation_model",
    "max_source_length",
    "pad_rows",
    "require_translation",
    "translate_batch",
    "translate_texts",
]


@dataclasses.dataclass
class Translation:
    """One translated line.

    ``text``: the best hypothesis, detokenised ("" for an empty line). ``score``: its
    (length-penalised) log-probability, None for an empty line. ``nbest``: (text, score) of the
    ``n_best`` best hypotheses, best first. ``src_tokens`` (Ts) / ``out_tokens`` (Tt, ending with
    EOS) and ``attention`` (Tt, Ts) float32 CPU tensor when weights were asked for and the model
    has attention. ``truncated``: the source was cut to the model's limit. ``ids``: the best
    hypothesis's token ids (no BOS/EOS); ``log_prob``: its unpenalised log-probability of
    ``ids`` + EOS (None for an empty line).
    """

    source: str
    text: str
    score: float | None = None
    nbest: list[tuple[str, float]] = dataclasses.field(default_factory=list)
    src_tokens: list[str] = dataclasses.field(default_factory=list)
    out_tokens: list[str] = dataclasses.field(default_factory=list)
    attention: Tensor | None = None
    truncated: bool = False
    ids: list[int] = dataclasses.field(default_factory=list)
    log_prob: float | None = None


# --------------------------------------------------------------------------- loading


def load_translation_model(
    path: str | Path, verb: str = "translate", device: str = "cpu", dtype: str = "fp32"
) -> LoadedModel:
    """:func:`load_model`, refusing models that are not translation models (one line naming
    the model's kind and the verb that serves it) and dirs without a readable tokenizer."""
    loaded = load_model(path, device, dtype)
    require_translation(loaded, path, verb)
    return loaded


def require_translation(loaded: LoadedModel, path: str | Path, verb: str) -> None:
    """Raise :class:`ModelLoadError` unless ``loaded`` is a translation model with tokenizers."""
    require_task(loaded, path, verb, "translation")
    if not loaded.tokenizers or loaded.tokenizers.get("src") is None:
        raise ModelLoadError(
            f"{path} has no tokenizer dhian can read (tokenizer.json / dhian_tokenizer.json); "
            "export it with `dhian export-hf` or save one beside the weights"
        )


def default_src_eos(path: str | Path) -> bool:
    """Whether sources should end with EOS: yes for HF Marian dirs (their convention), no for
    dhian-trained models (trained without it)."""
    return hf_model_type(resolve_model_dir(path)) == "marian"


def default_no_repeat(loaded: LoadedModel) -> int:
    """The model's repetition guard for decoding: ``train.eval_no_repeat_ngram`` (0 = off)."""
    return int(getattr(loaded.config.train, "eval_no_repeat_ngram", 0) or 0)


def max_source_length(loaded: LoadedModel) -> int | None:
    """The longest source the model accepts: transformers' ``max_positions``; RNNs: None."""
    limit = int(getattr(loaded.config.model, "max_positions", 0) or 0)
    return limit if limit > 0 else None


# --------------------------------------------------------------------------- translating


def pad_rows(
    rows: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Right-pad B id lists → ids (B, T) long, lengths (B,) long (T >= 1, also for B = 0 or
    empty rows)."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)  # (B,)
    t = max((len(r) for r in rows), default=0) or 1
    src = torch.full((len(rows), t), int(pad_id), dtype=torch.long)  # (B, T)
    for i, r in enumerate(rows):
        src[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
    return src.to(device), lengths.to(device)


def _search(
    model: Any, rows: Sequence[Sequence[int]], opts: dict[str, Any], max_len: int | None
) -> list[list[Hypothesis]]:
    """Decode one batch of id lists; per sentence its n-best hypotheses."""
    src, lengths = pad_rows(rows, model.pad_id, opts["device"])
    common = {
        "max_len": max_len,
        "max_len_ratio": opts["max_len_ratio"],
        "max_len_offset": opts["max_len_offset"],
        "need_weights": opts["need_weights"],
        "should_stop": opts.get("should_stop"),
        "no_repeat_ngram": opts["no_repeat_ngram"],
    }
    if opts["beam"] == 1:
        return [[h] for h in greedy_decode(model, src, lengths, **common)]
    return beam_search(
        model,
        src,
        lengths,
        opts["beam"],
        opts["length_penalty"],
        n_best=opts["n_best"],
        **common,
    )


def _decode_batch(
    model: Any, rows: Sequence[Sequence[int]], opts: dict[str, Any]
) -> list[list[Hypothesis]]:
    """Decode a batch, giving sentences whose ratio limit passes ``opts["cap"]`` that cap."""
    cap = opts["cap"]
    if cap is None:
        return _search(model, rows, opts, None)
    ratio, offset = opts["max_len_ratio"], opts["max_len_offset"]
    over = [int(ratio * len(r) + offset) > cap for r in rows]
    out: list[list[Hypothesis] | None] = [None] * len(rows)
    for capped in (False, True):
        idx = [i for i, o in enumerate(over) if o == capped]
        if idx:
            got = _search(model, [rows[i] for i in idx], opts, cap if capped else None)
            for i, h in zip(idx, got, strict=True):
                out[i] = h
    return [h for h in out if h is not None]


def forced_attention(
    model: Any,
    rows: Sequence[Sequence[int]],
    outputs: Sequence[Sequence[int]],
    layer: int | None,
    head: int | None,
) -> list[Tensor]:
    """Cross attention of a transformer re-reading its own outputs (teacher forcing).

    ``rows``: source ids per sentence; ``outputs``: generated ids (no BOS/EOS). Returns per
    sentence (len(output) + 1, len(source)) weights of decoder layer ``layer`` (default: last),
    head ``head`` (default: mean over heads).
    """
    src, lengths = pad_rows(rows, model.pad_id, next(model.parameters()).device)
    tgt_rows = [[model.bos_id, *o] for o in outputs]
    tgt_in, _ = pad_rows(tgt_rows, model.pad_id, src.device)  # (B, Tt)
    with torch.no_grad():
        per_layer = model(src, lengths, tgt_in, need_weights=True).attention  # L x (B, H, Tt, Ts)
    n_layers = len(per_layer)
    li = n_layers - 1 if layer is None else layer
    if not -n_layers <= li < n_layers:
        raise ConfigError(f"--layer {layer} is out of range: the decoder has {n_layers} layers")
    w = per_layer[li].float()  # (B, H, Tt, Ts)
    if head is not None and not -w.size(1) <= head < w.size(1):
        raise ConfigError(f"--head {head} is out of range: layers have {w.size(1)} heads")
    w = w.mean(dim=1) if head is None else w[:, head]  # (B, Tt, Ts)
    return [
        w[b, : len(outputs[b]) + 1, : len(rows[b])].cpu().clone() for b in range(len(rows))
    ]  # (Tt_b, Ts_b) each


def translate_texts(
    loaded: LoadedModel,
    texts: Sequence[str],
    *,
    beam: int = 5,
    length_penalty: float = 1.0,
    batch_size: int = 32,
    max_len_ratio: float = 1.5,
    max_len_offset: int = 10,
    n_best: int = 1,
    need_weights: bool = False,
    layer: int | None = None,
    head: int | None = None,
    src_eos: bool = False,
    max_src_len: int | None = None,
    progress: bool = False,
    warn: Callable[[str], None] | None = None,
    should_stop: ShouldStop | None = None,
    no_repeat_ngram: int | None = None,
) -> list[Translation]:
    """Translate ``texts`` (one sentence each) with ``loaded`` (a translation LoadedModel).

    ``beam`` 1 = greedy; else beam search with GNMT ``length_penalty``. ``n_best`` ≤ ``beam``.
    ``src_eos`` appends EOS to each source (HF Marian models expect it). ``max_src_len``
    overrides :func:`max_source_length`. ``progress`` draws a tqdm bar on stderr.
    ``should_stop`` is checked before every decoding step (raises
    :class:`~dhian.decoding.cancel.Cancelled`). ``no_repeat_ngram``: never repeat an n-gram of
    that size (0 = off; None = the model's ``train.eval_no_repeat_ngram``). Returns one
    :class:`Translation` per text, in input order.
    """
    if beam < 1:
        raise ConfigError(f"beam must be >= 1, got {beam}")
    if not 1 <= n_best <= beam:
        raise ConfigError(f"n-best must be between 1 and the beam size {beam}, got {n_best}")
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    model: Any = loaded.model
    mtype = str(getattr(loaded.config.model, "type", ""))
    if (layer is not None or head is not None) and mtype != "transformer":
        raise ConfigError(f"--layer/--head choose a transformer's attention; {mtype} has one")
    src_tok, tgt_tok = loaded.tokenizers["src"], loaded.tokenizers["tgt"]
    limit = max_src_len if max_src_len is not None else max_source_length(loaded)
    positions = max_source_length(loaded)
    opts = {
        "device": next(model.parameters()).device,
        "beam": beam,
        "length_penalty": length_penalty,
        "n_best": n_best,
        "max_len_ratio": max_len_ratio,
        "max_len_offset": max_len_offset,
        "need_weights": need_weights,
        "cap": None if positions is None else positions - 1,
        "should_stop": should_stop,
        "no_repeat_ngram": default_no_repeat(loaded)
        if no_repeat_ngram is None
        else no_repeat_ngram,
    }

    out = [Translation(source=t, text="") for t in texts]
    ids: list[list[int]] = [[] for _ in texts]
    todo = [i for i, t in enumerate(texts) if t.strip()]
    encoded = src_tok.encode_batch([texts[i] for i in todo])
    for i, row in zip(todo, encoded, strict=True):
        if src_eos:
            row = [*row, model.eos_id]
        if limit is not None and len(row) > limit:
            if warn is not None:
                warn(f"line {i + 1}: {len(row)} source tokens > limit {limit}; truncated")
            row = [*row[: limit - 1], model.eos_id] if src_eos else row[:limit]
            out[i].truncated = True
        ids[i] = row
    todo = [i for i in todo if ids[i]]  # a line that encodes to no token stays empty
    todo.sort(key=lambda i: (-len(ids[i]), i))  # longest first: little padding, stable order

    with tqdm(
        total=len(todo), unit="sent", file=sys.stderr, disable=not progress, leave=False
    ) as bar:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            rows = [ids[i] for i in chunk]
            nbest = _decode_batch(model, rows, opts)
            best = [h[0] for h in nbest]
            if need_weights and (layer is not None or head is not None):
                att = forced_attention(model, rows, [h.tokens for h in best], layer, head)
                for h, a in zip(best, att, strict=True):
                    h.attention = a
            for i, row, hyps in zip(chunk, rows, nbest, strict=True):
                _fill(out[i], row, hyps, src_tok, tgt_tok, model.eos_id, need_weights)
            bar.update(len(chunk))
    return out


def _fill(
    tr: Translation,
    row: Sequence[int],
    hyps: Sequence[Hypothesis],
    src_tok: Any,
    tgt_tok: Any,
    eos_id: int,
    need_weights: bool,
) -> None:
    """Write the decoded ``hyps`` of one sentence (source ids ``row``) into ``tr``."""
    if not hyps:
        raise DataError(f"decoding produced no hypothesis for {tr.source!r}")
    texts = [tgt_tok.decode(h.tokens) for h in hyps]
    tr.text, tr.score = texts[0], float(hyps[0].score)
    tr.ids, tr.log_prob = list(hyps[0].tokens), float(hyps[0].log_prob)
    tr.nbest = [(t, float(h.score)) for t, h in zip(texts, hyps, strict=True)]
    if need_weights:
        tr.src_tokens = src_tok.ids_to_tokens(row)
        tr.out_tokens = tgt_tok.ids_to_tokens([*hyps[0].tokens, eos_id])
        att = hyps[0].attention
        tr.attention = None if att is None else att.float().cpu()


# --------------------------------------------------------------------------- the server's batch


def translate_batch(
    loaded: LoadedModel,
    texts: Sequence[str],
    beam: int = 1,
    length_penalty: float | None = None,
    should_stop: ShouldStop | None = None,
) -> list[dict[str, Any]]:
    """Translate B texts as one decoder batch (greedy for ``beam == 1``, else beam search) with
    :func:`dhian.inference.translate.translate_texts`, sources cut to :func:`source_limit`.

    Returns per text the ``/translate`` result: ``{"source", "translation", "tokens"`` (display
    tokens, EOS excluded), ``"log_prob"`` (of tokens + EOS under the model), ``"truncated"}``.
    Empty sources translate to ``""`` without running the model. ``length_penalty`` defaults
    to the model's ``train.eval_length_penalty`` (GNMT alpha, beam search only).
    ``should_stop``: see :mod:`dhian.decoding.cancel` (the server's abandoned requests).
    """
    if loaded.kind != "translation":
        raise DataError(f"translation needs a translation model, this one is {loaded.kind!r}")
    if beam < 1:
        raise DataError(f"beam must be >= 1, got {beam}")
    alpha = length_penalty
    if alpha is None:
        alpha = float(getattr(loaded.config.train, "eval_length_penalty", 1.0))
    tgt = loaded.tokenizers["tgt"]
    found = translate_texts(
        loaded,
        texts,
        beam=beam,
        length_penalty=alpha,
        batch_size=max(len(texts), 1),
        max_src_len=source_limit(loaded),
        should_stop=should_stop,
    )
    return [
        {
            "source": tr.source,
            "translation": tr.text,
            "tokens": display_tokens(tgt, tr.ids),
            "log_prob": 0.0 if tr.log_prob is None else tr.log_prob,
            "truncated": tr.truncated,
        }
        for tr in found
    ]


# --------------------------------------------------------------------------- other tasks
