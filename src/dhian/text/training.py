"""Training tokenizers: BPE / byte-level BPE / char / WordPiece on a corpus (:func:`train_tokenizer`).

Owns the HF ``tokenizers`` pipelines (normaliser, pre-tokeniser, model, decoder) per kind, so
that decoding gives plain text (Metaspace / ByteLevel / WordPiece decoders). Trained
tokenizers get the fixed special ids of :mod:`dhian.text.specials`.
Imports: HF ``tokenizers``, :mod:`dhian.errors`, :mod:`dhian.text`; never torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from dhian.errors import DataError, nearest
from dhian.text.specials import SPECIAL_TOKENS, TRAINED_ROLES, UNK
from dhian.text.tokenizer import KINDS, Tokenizer, clean_text

#: Smallest vocabulary a trained tokenizer may ask for (specials + a few symbols).
MIN_VOCAB = len(SPECIAL_TOKENS) + 1
MAX_VOCAB = 1_000_000  # far above real vocabularies; the trainer aborts on huge values


def _normalizer(lowercase: bool) -> normalizers.Normalizer:
    """NFC, whitespace runs → one space, strip; optionally lower-case."""
    steps: list[normalizers.Normalizer] = [
        normalizers.NFC(),
        normalizers.Replace(Regex(r"\s+"), " "),
        normalizers.Strip(),
    ]
    if lowercase:
        steps.append(normalizers.Lowercase())
    return normalizers.Sequence(steps)


def normalize(text: str, lowercase: bool = False) -> str:
    """The text a trained tokenizer round-trips to: NFC, single spaces, stripped."""
    return str(_normalizer(lowercase).normalize_str(clean_text(text)))


def train_tokenizer(
    kind: str,
    texts: Iterable[str],
    vocab_size: int,
    lowercase: bool = False,
    min_frequency: int = 2,
    show_progress: bool = False,
) -> Tokenizer:
    """Train a ``kind`` tokenizer (``bpe``, ``bytebpe``, ``char``, ``wordpiece``) on ``texts``.

    Special ids are fixed: pad 0, unk 1, bos 2, eos 3, mask 4, cls 5, sep 6. ``bpe`` is
    SentencePiece-style (Metaspace ``▁``), ``bytebpe`` GPT-2 style (never produces unk),
    ``char`` one token per code point (``vocab_size`` caps the alphabet; rarer chars → unk),
    ``wordpiece`` BERT-style ``##`` pieces (its decode puts spaces around punctuation).
    """
    if kind not in KINDS:
        raise DataError(
            f"unknown tokenizer {kind!r}{nearest(kind, KINDS)}; valid: {', '.join(KINDS)}"
        )
    if vocab_size < MIN_VOCAB:
        raise DataError(f"vocab_size {vocab_size} is too small; use at least {MIN_VOCAB}")
    if vocab_size > MAX_VOCAB:  # the Rust trainer reserves memory for it and aborts the process
        raise DataError(
            f"vocab_size {vocab_size} is too large; use at most {MAX_VOCAB:,} "
            "(real vocabularies are 8k-256k)"
        )
    specials = list(SPECIAL_TOKENS)
    hf: HFTokenizer
    trainer: trainers.Trainer
    if kind == "bpe":
        hf = HFTokenizer(models.BPE(unk_token=UNK))
        hf.normalizer = _normalizer(lowercase)
        hf.pre_tokenizer = pre_tokenizers.Metaspace()
        hf.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=specials,
            limit_alphabet=vocab_size - len(specials),  # rarest chars → unk if over budget
            show_progress=show_progress,
        )
    elif kind == "bytebpe":
        hf = HFTokenizer(models.BPE())
        hf.normalizer = _normalizer(lowercase)
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=max(vocab_size, len(specials) + 256),
            min_frequency=min_frequency,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=show_progress,
        )
    elif kind == "char":
        hf = HFTokenizer(models.WordLevel(unk_token=UNK))
        hf.normalizer = _normalizer(lowercase)
        hf.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Metaspace(), pre_tokenizers.Split(Regex("."), "isolated")]
        )
        hf.decoder = decoders.Metaspace()
        trainer = trainers.WordLevelTrainer(
            vocab_size=vocab_size,
            min_frequency=1,
            special_tokens=specials,
            show_progress=show_progress,
        )
    else:  # wordpiece trained from scratch
        return _train_wordpiece(texts, vocab_size, lowercase, min_frequency, show_progress)
    _train(hf, trainer, (clean_text(t) for t in texts), kind)
    return Tokenizer(hf, kind, TRAINED_ROLES)


def _train(hf: HFTokenizer, trainer: trainers.Trainer, texts: Iterable[str], kind: str) -> None:
    """Train ``hf`` on ``texts`` (already cleaned); errors on no text or moved special ids."""
    count = 0

    def counted() -> Iterator[str]:
        nonlocal count
        for t in texts:
            count += 1
            yield t

    hf.train_from_iterator(counted(), trainer=trainer)
    if count == 0:
        raise DataError(f"cannot train a {kind} tokenizer on no text; the training split is empty")
    for i, tok in enumerate(SPECIAL_TOKENS):
        if hf.token_to_id(tok) != i:  # pragma: no cover - guards a tokenizers behaviour change
            raise DataError(f"special token {tok!r} did not get id {i}; report this bug")


def _wordpiece_pipeline(hf: HFTokenizer, lowercase: bool) -> HFTokenizer:
    """``hf`` with the BERT-style normaliser, pre-tokeniser and ``##`` decoder set."""
    hf.normalizer = _normalizer(lowercase)
    hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    hf.decoder = decoders.WordPiece(prefix="##")
    return hf


def _train_wordpiece(
    texts: Iterable[str], vocab_size: int, lowercase: bool, min_frequency: int, show_progress: bool
) -> Tokenizer:
    """A WordPiece tokenizer that is the same on every run for the same text.

    The ``tokenizers`` trainer (<= 0.23, huggingface/tokenizers#1794) creates the ``##c``
    continuation pieces while iterating a hash map, so their ids, and with them the merge
    chosen among equally frequent pairs, change from process to process: the same recipe
    trained a different vocabulary, hence a different model, each time. Here the continuation
    pieces of every character that continues a word are handed to the trainer up front, in
    sorted order (the trainer then reuses them instead of numbering them as it meets them),
    and the trained vocabulary is moved into a fresh tokenizer whose only special tokens are
    :data:`SPECIAL_TOKENS`, so ``##c`` stays an ordinary piece.
    """
    cleaned = [clean_text(t) for t in texts]
    norm, pre = _normalizer(lowercase), pre_tokenizers.BertPreTokenizer()
    continuing: set[str] = set()
    for text in cleaned:
        for word, _ in pre.pre_tokenize_str(norm.normalize_str(text)):
            continuing.update(word[1:])
    seeded = list(SPECIAL_TOKENS) + [f"##{c}" for c in sorted(continuing)]
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=seeded,
        limit_alphabet=vocab_size - len(SPECIAL_TOKENS),
        show_progress=show_progress,
    )
    trained = _wordpiece_pipeline(
        HFTokenizer(models.WordPiece(unk_token=UNK, max_input_chars_per_word=100)), lowercase
    )
    _train(trained, trainer, cleaned, "wordpiece")
    vocab = trained.get_vocab(with_added_tokens=False)
    hf = _wordpiece_pipeline(
        HFTokenizer(models.WordPiece(vocab, unk_token=UNK, max_input_chars_per_word=100)),
        lowercase,
    )
    hf.add_special_tokens(list(SPECIAL_TOKENS))
    return Tokenizer(hf, "wordpiece", TRAINED_ROLES)
