"""Tokenised examples ready for batching, and the max-length policy (truncate | skip | error).

Owns :class:`Examples` (id lists per example + the task they serve) and the functions that make
them from corpus text: :func:`encode_parallel` (translation), :func:`encode_classification`,
:func:`pack_lm` (document packing with an end-of-text token) and :func:`pack_mlm`.
Lengths: ``max_len`` bounds the source and ``tgt_in``/``tgt_out`` (so target text ≤ max_len - 1).
Imports: :mod:`dhian.text`, :mod:`dhian.errors`; no torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from dhian.errors import ConfigError, DataError
from dhian.text.bert_inputs import build_bert_input
from dhian.text.tokenizer import Tokenizer

TASKS = ("seq2seq", "classify", "lm", "mlm", "tag", "span")
TOO_LONG = ("truncate", "skip", "error")


@dataclasses.dataclass
class Examples:
    """Encoded examples of one split.

    ``task``: ``seq2seq`` (``src`` + ``tgt`` content ids, BOS/EOS added at collation),
    ``classify`` (``src`` + ``labels``, optional ``type_ids``), ``lm`` (``src`` = packed blocks
    of T+1 ids; input = block[:-1], target = block[1:]), ``mlm`` (``src`` = blocks, masked at
    collation), ``tag`` (``src`` + one label per id in ``tgt``, -100 = ignored; token
    classification) or ``span`` (``src`` + ``type_ids`` + gold (start, end) token in ``spans``;
    extractive QA). ``ids`` are indices into the corpus split; ``skipped``/``truncated`` count what
    the length policy did (reported, never silent).
    """

    task: str
    src: list[list[int]]
    ids: list[int]
    tgt: list[list[int]] | None = None
    labels: list[int] | None = None
    type_ids: list[list[int]] | None = None
    spans: list[tuple[int, int]] | None = None
    pad_id: int = 0
    bos_id: int = 2
    eos_id: int = 3
    vocab_size: int = 0
    mask_id: int = 4
    special_ids: tuple[int, ...] = ()
    mlm_prob: float = 0.15
    skipped: int = 0
    truncated: int = 0

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; valid: {', '.join(TASKS)}")

    def __len__(self) -> int:
        return len(self.src)

    def cost_lengths(self) -> list[int]:
        """Per-example padded length used by the token budget: the larger side.

        seq2seq: max(len(src), len(tgt) + 1); lm: len(block) - 1; others: len(src).
        """
        if self.task == "seq2seq":
            assert self.tgt is not None
            return [max(len(s), len(t) + 1) for s, t in zip(self.src, self.tgt, strict=True)]
        if self.task == "lm":
            return [len(s) - 1 for s in self.src]
        return [len(s) for s in self.src]

    def report(self) -> str:
        """One line: how many examples, and what the length policy skipped or truncated."""
        return (
            f"{len(self)} examples ({self.skipped} skipped, {self.truncated} truncated as too long)"
        )


def check_too_long(too_long: str) -> None:
    """Raise :class:`ConfigError` unless ``too_long`` is truncate, skip or error."""
    if too_long not in TOO_LONG:
        raise ConfigError(f"data.too_long must be one of {', '.join(TOO_LONG)}, got {too_long!r}")


def _limit(ids: list[int], limit: int, too_long: str, where: str) -> tuple[list[int] | None, bool]:
    """Apply the policy to one side → (ids or None if skipped, whether truncated)."""
    if limit <= 0 or len(ids) <= limit:
        return ids, False
    if too_long == "truncate":
        return ids[:limit], True
    if too_long == "skip":
        return None, False
    raise DataError(
        f"{where} has {len(ids)} tokens > limit {limit}; raise data.max_len or set "
        "data.too_long=truncate|skip"
    )


def encode_parallel(
    pairs: Sequence[tuple[str, str]],
    src_tok: Tokenizer,
    tgt_tok: Tokenizer,
    max_len: int = 0,
    too_long: str = "truncate",
    src_eos: bool = False,
    name: str = "corpus",
) -> Examples:
    """Encode (source, target) text pairs for translation.

    Source ids ≤ ``max_len`` (with an EOS appended when ``src_eos``), target content ≤
    ``max_len - 1`` so that ``tgt_in``/``tgt_out`` have ≤ ``max_len`` ids. ``max_len`` 0 = no limit.
    """
    check_too_long(too_long)
    srcs = src_tok.encode_batch([p[0] for p in pairs], add_eos=src_eos)
    tgts = tgt_tok.encode_batch([p[1] for p in pairs])
    out = Examples(
        "seq2seq",
        [],
        [],
        tgt=[],
        pad_id=tgt_tok.pad_id,
        bos_id=tgt_tok.bos_id,
        eos_id=tgt_tok.eos_id,
    )
    assert out.tgt is not None
    for i, (s, t) in enumerate(zip(srcs, tgts, strict=True)):
        s2, ts = _limit(s, max_len, too_long, f"{name} example {i} source")
        t2, tt = _limit(
            t, max_len - 1 if max_len > 0 else 0, too_long, f"{name} example {i} target"
        )
        if s2 is None or t2 is None:
            out.skipped += 1
            continue
        if src_eos and ts:
            s2[-1] = src_tok.eos_id
        out.truncated += int(ts or tt)
        out.src.append(s2)
        out.tgt.append(t2)
        out.ids.append(i)
    return out


def encode_classification(
    examples: Sequence[tuple[str, int]],
    tok: Tokenizer,
    max_len: int = 0,
    too_long: str = "truncate",
    bert: bool = False,
    name: str = "corpus",
) -> Examples:
    """Encode (text, label) examples; ``bert=True`` builds ``[CLS] x [SEP]`` with type ids."""
    check_too_long(too_long)
    encoded = tok.encode_batch([e[0] for e in examples])
    out = Examples("classify", [], [], labels=[], pad_id=tok.pad_id)
    assert out.labels is not None
    if bert:
        out.type_ids = []
    content_limit = (max_len - 2 if bert else max_len) if max_len > 0 else 0
    for i, (ids, (_, label)) in enumerate(zip(encoded, examples, strict=True)):
        kept, trunc = _limit(ids, content_limit, too_long, f"{name} example {i}")
        if kept is None:
            out.skipped += 1
            continue
        out.truncated += int(trunc)
        if bert:
            kept, types = build_bert_input(
                tok, kept, None, max_len if max_len > 0 else len(kept) + 2
            )
            assert out.type_ids is not None
            out.type_ids.append(types)
        out.src.append(kept)
        out.labels.append(int(label))
        out.ids.append(i)
    return out


def _stream(docs: Sequence[Sequence[int]], sep: int) -> list[int]:
    stream: list[int] = []
    for d in docs:
        stream.extend(d)
        stream.append(sep)
    return stream


def pack_lm(
    docs: Sequence[Sequence[int]], block_size: int, eot_id: int, pad_id: int = 0
) -> Examples:
    """Pack documents (each followed by ``eot_id``) into blocks of ``block_size + 1`` ids.

    Consecutive blocks overlap by one id, so every id except the first is a target exactly once.
    The last block may be shorter (padded at collation). Input/target: block[:-1] / block[1:].
    """
    if block_size < 1:
        raise ConfigError(f"data.block_size must be >= 1, got {block_size}")
    stream = _stream(docs, eot_id)
    blocks = [stream[i : i + block_size + 1] for i in range(0, max(len(stream) - 1, 0), block_size)]
    return Examples("lm", blocks, list(range(len(blocks))), pad_id=pad_id, eos_id=eot_id)


def pack_mlm(
    docs: Sequence[Sequence[int]], tok: Tokenizer, block_size: int, prob: float = 0.15
) -> Examples:
    """Pack documents (separated by [SEP]) into ``[CLS] … [SEP]`` blocks of ≤ ``block_size`` ids.

    Masking happens at collation (fresh each epoch, reproducible from the iterator seed).
    """
    if block_size < 3:
        raise ConfigError(f"data.block_size must be >= 3 for MLM, got {block_size}")
    stream = _stream(docs, tok.sep_id)
    inner = block_size - 2
    blocks = [
        [tok.cls_id, *stream[i : i + inner], tok.sep_id] for i in range(0, len(stream), inner)
    ]
    return Examples(
        "mlm",
        blocks,
        list(range(len(blocks))),
        pad_id=tok.pad_id,
        vocab_size=tok.vocab_size,
        mask_id=tok.mask_id,
        special_ids=tuple(sorted(tok.special_ids)),
        mlm_prob=prob,
    )
