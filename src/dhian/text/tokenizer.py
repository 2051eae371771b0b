"""The :class:`Tokenizer` every dhian model talks to, and loading it from a directory.

Owns encode/decode (single and batched), token strings for plots, special ids, and the on-disk
format (``tokenizer.json`` from HF ``tokenizers`` + ``dhian_tokenizer.json`` with the kind and
special-token roles). Loading also accepts a pretrained HF/BERT directory (``tokenizer.json``
and/or ``vocab.txt``). Building/training lives in :mod:`dhian.text.training`.
Imports: HF ``tokenizers``, :mod:`dhian.errors`, :mod:`dhian.text.specials`; never torch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer

from dhian.errors import DataError
from dhian.text.specials import BERT_ROLES, TRAINED_ROLES

META_FILE = "dhian_tokenizer.json"
HF_FILE = "tokenizer.json"
KINDS = ("bpe", "bytebpe", "char", "wordpiece")


def clean_text(text: str) -> str:
    """``text`` with every lone surrogate (U+D800–U+DFFF) replaced by U+FFFD.

    Python strings can hold surrogates that UTF-8 cannot: undecodable argv bytes
    (``surrogateescape``), JSON ``"\\udc80"``. HF ``tokenizers`` refuses them with a TypeError, so
    every encode path passes text through here. A surrogate *pair* becomes the character it
    stands for. Cheap when there is nothing to do: O(1) for ASCII, one C-level UTF-8 encode
    otherwise.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


class Tokenizer:
    """A text ↔ ids mapping on top of an HF ``tokenizers.Tokenizer``.

    ``kind`` is one of ``bpe``, ``bytebpe``, ``char``, ``wordpiece``. ``roles`` maps the role
    names pad/unk/bos/eos/mask/cls/sep to token strings present in the vocabulary. Trained
    tokenizers have ids pad 0, unk 1, bos 2, eos 3, mask 4, cls 5, sep 6; a pretrained WordPiece
    keeps its own ids (bos/eos are its [CLS]/[SEP]). ``chat_template``: the jinja2 chat template
    of an instruction-tuned LLM's vocabulary (rendered by :mod:`dhian.text.chat_template`), kept
    with the tokenizer as HF does; ``None`` for vocabularies without one.
    """

    def __init__(
        self,
        hf: HFTokenizer,
        kind: str,
        roles: Mapping[str, str],
        chat_template: str | None = None,
    ) -> None:
        if kind not in KINDS:
            raise DataError(f"unknown tokenizer kind {kind!r}; valid: {', '.join(KINDS)}")
        self.hf = hf
        self.kind = kind
        self.roles = dict(roles)
        self.chat_template = chat_template
        self._ids: dict[str, int] = {}
        for role, token in self.roles.items():
            tid = hf.token_to_id(token)
            if tid is None:
                raise DataError(
                    f"tokenizer vocabulary has no {role} token {token!r}; "
                    "add it to the vocab or train the tokenizer with dhian"
                )
            self._ids[role] = tid
        self.special_ids: frozenset[int] = frozenset(self._ids.values())

    # ---- ids -------------------------------------------------------------------------------
    def _role(self, role: str) -> int:
        if role not in self._ids:
            raise DataError(f"this {self.kind} tokenizer has no {role} token")
        return self._ids[role]

    @property
    def vocab_size(self) -> int:
        """Number of ids (V), including special tokens."""
        return int(self.hf.get_vocab_size(with_added_tokens=True))

    @property
    def pad_id(self) -> int:
        """Id of the padding token."""
        return self._role("pad")

    @property
    def unk_id(self) -> int:
        """Id of the unknown token."""
        return self._role("unk")

    @property
    def bos_id(self) -> int:
        """Id of the begin-of-sequence token ([CLS] for BERT vocabularies)."""
        return self._role("bos")

    @property
    def eos_id(self) -> int:
        """Id of the end-of-sequence token ([SEP] for BERT vocabularies)."""
        return self._role("eos")

    @property
    def mask_id(self) -> int:
        """Id of the mask token (MLM)."""
        return self._role("mask")

    @property
    def cls_id(self) -> int:
        """Id of the classification token."""
        return self._role("cls")

    @property
    def sep_id(self) -> int:
        """Id of the separator token."""
        return self._role("sep")

    def token_to_id(self, token: str) -> int | None:
        """Id of a token string, or None if it is not in the vocabulary."""
        tid = self.hf.token_to_id(clean_text(token))
        return None if tid is None else int(tid)

    def id_to_token(self, tid: int) -> str:
        """Token string of an id."""
        tok = self.hf.id_to_token(tid)
        if tok is None:
            raise DataError(f"id {tid} is outside the vocabulary (size {self.vocab_size})")
        return str(tok)

    # ---- encode / decode -------------------------------------------------------------------
    def _wrap(self, ids: list[int], add_bos: bool, add_eos: bool) -> list[int]:
        if add_bos:
            ids = [self.bos_id, *ids]
        if add_eos:
            ids = [*ids, self.eos_id]
        return ids

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Ids of ``text`` (length T); BOS/EOS only when asked. Lone surrogates count as U+FFFD."""
        ids = list(self.hf.encode(clean_text(text), add_special_tokens=False).ids)
        return self._wrap(ids, add_bos, add_eos)

    def encode_batch(
        self, texts: Sequence[str], add_bos: bool = False, add_eos: bool = False
    ) -> list[list[int]]:
        """Ids of each text (B lists of varying length T), encoded in parallel."""
        encs = self.hf.encode_batch([clean_text(t) for t in texts], add_special_tokens=False)
        return [self._wrap(list(e.ids), add_bos, add_eos) for e in encs]

    def decode(self, ids: Iterable[int]) -> str:
        """Plain text of ``ids`` with special tokens dropped (ready for sacrebleu)."""
        return str(self.hf.decode([int(i) for i in ids], skip_special_tokens=True))

    def decode_batch(self, batch: Iterable[Iterable[int]]) -> list[str]:
        """:meth:`decode` for each row of ``batch`` (B rows)."""
        rows = [[int(i) for i in row] for row in batch]
        return [str(s) for s in self.hf.decode_batch(rows, skip_special_tokens=True)]

    def tokens(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[str]:
        """Token strings of ``text`` (for attention plots), aligned with :meth:`encode`."""
        return [self.id_to_token(i) for i in self.encode(text, add_bos, add_eos)]

    def ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        """Token strings of ``ids`` (specials included), for plotting model inputs/outputs."""
        return [self.id_to_token(int(i)) for i in ids]

    # ---- persistence -----------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``tokenizer.json`` and ``dhian_tokenizer.json`` into ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        _atomic_text(d / HF_FILE, self.hf.to_str(pretty=False))
        meta: dict[str, object] = {"format": 1, "kind": self.kind, "roles": self.roles}
        if self.chat_template is not None:
            meta["chat_template"] = self.chat_template
        _atomic_text(d / META_FILE, json.dumps(meta, indent=2) + "\n")
        return d

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size})"


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


__all__ = [
    "BERT_ROLES",
    "KINDS",
    "TRAINED_ROLES",
    "Tokenizer",
    "clean_text",
]
