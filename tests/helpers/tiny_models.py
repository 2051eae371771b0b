"""Tiny random models of every family, saved as real model dirs (tokenizers trained here).

``save_tiny(kind, directory)`` builds one with :func:`dhian.models.families.build_model`, trains its
tokenizer(s) with :func:`dhian.text.train_tokenizer` on a dozen sentences and writes it with
:func:`dhian.models.model_dir.save_model_dir`, so loading goes through the same path as a trained run.
Kinds: rnnsearch, rnnencdec, transformer (translation), bert-cls, bert-mlm, keras (classifier),
gpt (causal LM). Weights are random but seeded: outputs are arbitrary yet deterministic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dhian.config import DataConfig, RunConfig
from dhian.models.bert.config import BertConfig
from dhian.models.families import build_model
from dhian.models.gpt.config import GPTConfig
from dhian.models.keras_classifier.config import KerasClassifierConfig
from dhian.models.model_dir import save_model_dir
from dhian.models.rnn.config import RNNSeq2SeqConfig
from dhian.models.transformer.config import TransformerConfig
from dhian.text import train_tokenizer

PAIRS = [
    ("Im Anfang schuf Gott Himmel und Erde.", "In the beginning God created heaven and earth."),
    ("Und die Erde war wüst und leer.", "And the earth was without form and void."),
    ("Und Gott sprach: Es werde Licht!", "And God said, Let there be light."),
    ("Und es ward Licht.", "And there was light."),
    ("Und Gott sah das Licht, dass es gut war.", "And God saw the light, that it was good."),
    ("Da schied Gott das Licht von der Finsternis.", "And God divided the light from the dark."),
    ("Und nannte das Licht Tag.", "And God called the light Day."),
    (
        "Da ward aus Abend und Morgen der erste Tag.",
        "And the evening and morning were the first day.",
    ),
]
TEXTS = [t for p in PAIRS for t in p] + ["a good film", "a bad film", "what a great story"]
LABELS = ("negative", "positive")
KINDS = ("rnnsearch", "rnnencdec", "transformer", "bert-cls", "bert-mlm", "keras", "gpt")


def _translation(kind: str) -> tuple[Any, Any, dict[str, Any]]:
    src = train_tokenizer("bpe", [p[0] for p in PAIRS] * 3, 120)
    tgt = train_tokenizer("bpe", [p[1] for p in PAIRS] * 3, 120)
    if kind == "transformer":
        cfg: Any = TransformerConfig(
            embed_dim=16, num_heads=2, ff_dim=32, enc_layers=2, dec_layers=2, dropout=0.0,
            max_positions=64, share_embeddings=False, tie_embeddings=False,
        )  # fmt: skip
    else:
        cfg = RNNSeq2SeqConfig(type=kind, embed_dim=16, hidden_dim=16, dropout=0.0, attention_dim=8)
    kwargs = {
        "src_vocab_size": src.vocab_size,
        "tgt_vocab_size": tgt.vocab_size,
        "pad_id": tgt.pad_id,
        "bos_id": tgt.bos_id,
        "eos_id": tgt.eos_id,
    }
    return cfg, {"src": src, "tgt": tgt}, kwargs


def build(kind: str) -> tuple[torch.nn.Module, RunConfig, Any, str, dict[str, Any]]:
    """(model in eval mode, run config, tokenizer(s), task kind, build kwargs) of ``kind``."""
    torch.manual_seed(0)
    data = DataConfig(max_len=32)
    if kind in ("rnnsearch", "rnnencdec", "transformer"):
        cfg, toks, kwargs = _translation(kind)
        task = "translation"
    elif kind in ("bert-cls", "bert-mlm", "keras"):
        toks = train_tokenizer("wordpiece", TEXTS * 3, 150, lowercase=True)
        kwargs = {"src_vocab_size": toks.vocab_size, "tgt_vocab_size": toks.vocab_size}
        if kind == "keras":
            cfg = KerasClassifierConfig(
                vocab_size=toks.vocab_size, max_len=32, embed_dim=16, heads=2, ff_dim=16,
                hidden_dim=8, dropout=0.0, labels=LABELS,
            )  # fmt: skip
            task = "classification"
        else:
            task = "classification" if kind == "bert-cls" else "mlm"
            cfg = BertConfig(
                task=task, vocab_size=toks.vocab_size, embed_dim=16, layers=2, heads=2,
                ff_dim=32, max_positions=32, dropout=0.0, attention_dropout=0.0, labels=LABELS,
            )  # fmt: skip
    elif kind == "gpt":
        toks = train_tokenizer("bytebpe", TEXTS * 3, 300)
        cfg = GPTConfig(
            vocab_size=toks.vocab_size, n_layer=2, n_head=2, n_embd=16, block_size=32, dropout=0.0
        )
        kwargs = {"src_vocab_size": toks.vocab_size, "tgt_vocab_size": toks.vocab_size}
        task = "lm"
    else:
        raise ValueError(f"unknown tiny model kind {kind!r}; one of {KINDS}")
    model = build_model(cfg, **kwargs).eval()
    return model, RunConfig(model=cfg, data=data), toks, task, kwargs


def save_tiny(kind: str, directory: Path) -> Path:
    """Build the tiny ``kind`` model and save it as a model dir at ``directory``."""
    model, run, toks, task, kwargs = build(kind)
    return save_model_dir(directory, model, run, toks, kind=task, build_kwargs=kwargs)
