"""From a :class:`~dhian.config.DataConfig` to tokenizers + encoded splits, in one call per task.

Owns the wiring the training engine needs: load the corpus splits, train (or load) tokenizers on
the train split, encode with the max-length policy, and save/load tokenizers next to a model
(``tokenizer/`` holds one tokenizer, or ``src/`` and ``tgt/``). Batching is then
``BatchIterator(data.train, max_tokens=…, seed=…)``.
Imports: :mod:`dhian.config`, :mod:`dhian.text`, :mod:`dhian.data` modules, :mod:`dhian.errors`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from dhian.config import DataConfig
from dhian.data.builtin_corpora import resolve_pretrained
from dhian.data.corpus import MonolingualCorpus, ParallelCorpus, TextClassificationCorpus
from dhian.data.corpus_loader import load_corpus
from dhian.data.examples import (
    Examples,
    encode_classification,
    encode_parallel,
    pack_lm,
    pack_mlm,
)
from dhian.errors import DataError
from dhian.text.tokenizer import META_FILE, Tokenizer
from dhian.text.tokenizer_files import load_tokenizer
from dhian.text.training import train_tokenizer


@dataclasses.dataclass
class TranslationData:
    """Tokenizers (the same object when the vocabulary is joint) and encoded train/dev."""

    src_tok: Tokenizer
    tgt_tok: Tokenizer
    train: Examples
    dev: Examples
    dev_corpus: ParallelCorpus  # raw dev text (references for BLEU); dev.ids index into it


@dataclasses.dataclass
class ClassificationData:
    """Tokenizer, label names and encoded train/dev for text classification."""

    tok: Tokenizer
    label_names: list[str]
    train: Examples
    dev: Examples
    dev_corpus: TextClassificationCorpus


@dataclasses.dataclass
class LMData:
    """Tokenizer and packed train/dev blocks for causal (``lm``) or masked (``mlm``) LM."""

    tok: Tokenizer
    train: Examples
    dev: Examples


def save_tokenizers(
    directory: str | Path, src_tok: Tokenizer, tgt_tok: Tokenizer | None = None
) -> Path:
    """Save into ``directory``: one tokenizer, or ``src/`` and ``tgt/`` when they differ."""
    d = Path(directory)
    if tgt_tok is None or tgt_tok is src_tok:
        src_tok.save(d)
    else:
        src_tok.save(d / "src")
        tgt_tok.save(d / "tgt")
    return d


def load_tokenizers(directory: str | Path) -> tuple[Tokenizer, Tokenizer]:
    """(source, target) tokenizers saved by :func:`save_tokenizers` (the same object if joint);
    ``pretrained:NAME`` loads that built-in model's tokenizer."""
    d = resolve_pretrained(directory)
    if (d / "src" / META_FILE).is_file() and (d / "tgt" / META_FILE).is_file():
        return load_tokenizer(d / "src"), load_tokenizer(d / "tgt")
    tok = load_tokenizer(d)
    return tok, tok


def _train_tok(cfg: DataConfig, texts: Sequence[str]) -> Tokenizer:
    return train_tokenizer(cfg.tokenizer, texts, cfg.vocab_size, lowercase=cfg.lowercase)


def prepare_translation(cfg: DataConfig, quiet: bool = False) -> TranslationData:
    """Load ``cfg.corpus`` (parallel), get tokenizers, encode train and dev.

    ``cfg.tokenizer_path`` loads saved tokenizers; otherwise one joint (``joint_vocab``) or one
    per side is trained on the (possibly capped) train split.
    """
    train_c = load_corpus(cfg.corpus, "train", quiet=quiet)
    dev_c = load_corpus(cfg.corpus, "dev", quiet=quiet)
    if not isinstance(train_c, ParallelCorpus) or not isinstance(dev_c, ParallelCorpus):
        raise DataError(
            f"corpus {cfg.corpus!r} is {train_c.kind}, but translation needs a parallel corpus"
        )
    if cfg.max_train_examples > 0:
        train_c = dataclasses.replace(
            train_c,
            pairs=train_c.pairs[: cfg.max_train_examples],
            refs=train_c.refs[: cfg.max_train_examples],
        )
    if cfg.max_eval_examples > 0:
        dev_c = dataclasses.replace(
            dev_c,
            pairs=dev_c.pairs[: cfg.max_eval_examples],
            refs=dev_c.refs[: cfg.max_eval_examples],
        )
    if cfg.tokenizer_path:
        src_tok, tgt_tok = load_tokenizers(cfg.tokenizer_path)
    elif cfg.joint_vocab:
        src_tok = tgt_tok = _train_tok(cfg, train_c.texts())
    else:
        src_tok, tgt_tok = _train_tok(cfg, train_c.sources), _train_tok(cfg, train_c.targets)
    train = encode_parallel(
        train_c.pairs, src_tok, tgt_tok, cfg.max_len, cfg.too_long, name=f"{cfg.corpus} train"
    )
    dev = encode_parallel(
        dev_c.pairs, src_tok, tgt_tok, cfg.max_len, cfg.too_long, name=f"{cfg.corpus} dev"
    )
    return TranslationData(src_tok, tgt_tok, train, dev, dev_c)


def prepare_classification(
    cfg: DataConfig, bert: bool = False, quiet: bool = False
) -> ClassificationData:
    """Load ``cfg.corpus`` (text + label), get a tokenizer, encode train and dev.

    ``bert=True`` encodes ``[CLS] x [SEP]`` with type ids (``max_len`` counts them).
    """
    cols = {"text_column": cfg.text_column, "label_column": cfg.label_column}
    train_c = load_corpus(cfg.corpus, "train", quiet=quiet, **cols)
    dev_c = load_corpus(cfg.corpus, "dev", quiet=quiet, **cols)
    if not isinstance(train_c, TextClassificationCorpus) or not isinstance(
        dev_c, TextClassificationCorpus
    ):
        raise DataError(
            f"corpus {cfg.corpus!r} is {train_c.kind}, but classification needs text + label"
        )
    if cfg.max_train_examples > 0:
        train_c = dataclasses.replace(train_c, examples=train_c.examples[: cfg.max_train_examples])
    if cfg.max_eval_examples > 0:
        dev_c = dataclasses.replace(dev_c, examples=dev_c.examples[: cfg.max_eval_examples])
    tok = (
        load_tokenizer(resolve_pretrained(cfg.tokenizer_path), lowercase=cfg.lowercase)
        if cfg.tokenizer_path
        else _train_tok(cfg, train_c.texts())
    )
    train = encode_classification(
        train_c.examples, tok, cfg.max_len, cfg.too_long, bert, f"{cfg.corpus} train"
    )
    dev = encode_classification(
        dev_c.examples, tok, cfg.max_len, cfg.too_long, bert, f"{cfg.corpus} dev"
    )
    return ClassificationData(tok, train_c.label_names, train, dev, dev_c)


def prepare_lm(cfg: DataConfig, masked: bool = False, quiet: bool = False) -> LMData:
    """Load ``cfg.corpus`` as documents, get a tokenizer, pack ``cfg.block_size`` blocks.

    Parallel corpora contribute their target side; classification corpora their texts.
    ``masked`` packs ``[CLS] … [SEP]`` blocks for MLM (masked at batching) instead of causal LM.
    """

    def docs(split: str) -> list[str]:
        c = load_corpus(cfg.corpus, split, quiet=quiet)
        if isinstance(c, MonolingualCorpus):
            return c.docs
        if isinstance(c, ParallelCorpus):
            return c.targets
        return c.texts()

    train_docs, dev_docs = docs("train"), docs("dev")
    if cfg.max_train_examples > 0:
        train_docs = train_docs[: cfg.max_train_examples]
    if cfg.max_eval_examples > 0:
        dev_docs = dev_docs[: cfg.max_eval_examples]
    tok = (
        load_tokenizer(resolve_pretrained(cfg.tokenizer_path), lowercase=cfg.lowercase)
        if cfg.tokenizer_path
        else _train_tok(cfg, train_docs)
    )

    def pack(texts: list[str]) -> Examples:
        ids = tok.encode_batch(texts)
        if masked:
            return pack_mlm(ids, tok, cfg.block_size)
        return pack_lm(ids, cfg.block_size, tok.eos_id, tok.pad_id)

    return LMData(tok, pack(train_docs), pack(dev_docs))
