"""A byte-level BPE tokenizer built from a GGUF file's ``tokenizer.ggml.*`` metadata.

Owns :func:`tokenizer_from_gguf`: the vocabulary and merges of a ``gpt2``-model GGUF
(SmolLM2, Llama 3 …) as an HF ``tokenizers`` BPE with byte-level pre-tokenizer and decoder,
control tokens (token type 3) as special added tokens and user-defined ones (type 4) as added
tokens — the construction HF transformers uses for ``from_pretrained(dir, gguf_file=...)``
(``integrations/gguf/gguf_tokenizer_mapping.py``), so ids match it. Pre-tokenizer names that
transformers gives their own split regex (``llama-bpe``, ``qwen2`` …) are not supported here
yet and raise; ``smollm`` and ``gpt2``/``default`` use the GPT-2 byte-level regex.
Returns a :class:`dhian.text.tokenizer.Tokenizer` (kind ``bytebpe``; saved as
``tokenizer.json`` + ``dhian_tokenizer.json``).
Imports: HF ``tokenizers``, ``gguf`` (lazily), :mod:`dhian.text.tokenizer`, :mod:`dhian.errors`;
no torch.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import gguf
from tokenizers import AddedToken, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from dhian.errors import DataError
from dhian.text.tokenizer import Tokenizer

__all__ = ["byte_alphabet", "tokenizer_from_gguf", "tokenizer_from_gguf_metadata"]

_CONTROL, _USER_DEFINED = 3, 4
_GPT2_REGEX_PRE = ("smollm", "gpt2", "default")


@lru_cache(maxsize=1)
def byte_alphabet() -> dict[int, str]:
    """GPT-2's byte → printable character table (``bytes_to_unicode``)."""
    return {b: c for b, c in zip(*_byte_table(), strict=True)}


def _byte_table() -> tuple[list[int], list[str]]:
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = list(bs)
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return bs, [chr(c) for c in cs]


def tokenizer_from_gguf_metadata(metadata: dict[str, Any]) -> Tokenizer:
    """The tokenizer that ``metadata`` (GGUF key → value) describes."""
    model = metadata.get("tokenizer.ggml.model")
    if model != "gpt2":
        raise DataError(
            f"GGUF tokenizer model {model!r} is not supported (only byte-level BPE 'gpt2')"
        )
    pre = metadata.get("tokenizer.ggml.pre", "default")
    if pre not in _GPT2_REGEX_PRE:
        raise DataError(
            f"GGUF pre-tokenizer {pre!r} is not supported yet; supported: {', '.join(_GPT2_REGEX_PRE)}"
        )
    tokens: list[str] = list(metadata["tokenizer.ggml.tokens"])
    types: list[int] = list(metadata.get("tokenizer.ggml.token_type") or [])
    merges_raw = metadata.get("tokenizer.ggml.merges")
    if merges_raw is None:
        raise DataError("GGUF byte-level tokenizer without tokenizer.ggml.merges")
    spelling = byte_alphabet()
    alphabet = set(spelling.values())
    vocab = {
        t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8")): i
        for i, t in enumerate(tokens)
    }
    merges = [tuple(m.split(" ")) for m in merges_raw]
    hf = HFTokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(
        add_prefix_space=False, trim_offsets=True, use_regex=True
    )
    hf.decoder = decoders.ByteLevel()
    control = [
        AddedToken(t, normalized=False, special=True)
        for t, ty in zip(tokens, types, strict=False)
        if ty == _CONTROL and set(t) <= alphabet
    ]
    hf.add_special_tokens(control)
    user = [
        AddedToken(t, normalized=False, special=False)
        for t, ty in zip(tokens, types, strict=False)
        if ty == _USER_DEFINED and t in vocab
    ]
    hf.add_tokens(user)
    roles: dict[str, str] = {}
    for role, key in (("bos", "bos"), ("eos", "eos"), ("pad", "padding"), ("unk", "unknown")):
        tid = metadata.get(f"tokenizer.ggml.{key}_token_id")
        if tid is not None:
            roles[role] = tokens[int(tid)]
    template = metadata.get("tokenizer.chat_template")
    return Tokenizer(hf, "bytebpe", roles, None if template is None else str(template))


def tokenizer_from_gguf(file: Any) -> Tokenizer:
    """The tokenizer of a :class:`dhian.interop.gguf.GGUFFile` (anything with ``metadata``) or
    of a GGUF file path (read with :class:`gguf.GGUFReader`)."""
    if hasattr(file, "metadata"):
        return tokenizer_from_gguf_metadata(file.metadata)
    reader = gguf.GGUFReader(str(file))
    fields = {k: f for k, f in reader.fields.items() if k.startswith("tokenizer.")}
    return tokenizer_from_gguf_metadata({k: f.contents() for k, f in fields.items()})
