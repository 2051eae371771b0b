"""Reading tokenizers from disk: a saved dhian tokenizer dir, an HF ``tokenizer.json``
(WordPiece) or a BERT ``vocab.txt`` (:func:`load_tokenizer`); :meth:`Tokenizer.save` writes the
first. Imports: HF ``tokenizers``, :mod:`dhian.errors`, :mod:`dhian.text` (specials, tokenizer);
never torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers

from dhian.errors import DataError
from dhian.text.specials import BERT_ROLES
from dhian.text.tokenizer import HF_FILE, META_FILE, Tokenizer

__all__ = ["load_tokenizer", "wordpiece_from_tokenizer_json", "wordpiece_from_vocab"]


def load_tokenizer(directory: str | Path, lowercase: bool | None = None) -> Tokenizer:
    """Load a tokenizer from ``directory``.

    Accepts a dhian tokenizer dir (``dhian_tokenizer.json`` + ``tokenizer.json``), an HF model
    dir with a WordPiece ``tokenizer.json``, or a BERT dir with only ``vocab.txt`` (then
    ``lowercase`` — default from ``tokenizer_config.json``'s ``do_lower_case``, else True —
    decides lower-casing).
    """
    d = Path(directory)
    if not d.is_dir():
        raise DataError(f"tokenizer directory {str(d)!r} does not exist; train or save one first")
    meta_path = d / META_FILE
    if meta_path.is_file():
        meta = _read_json(meta_path)
        hf = _read_hf(d / HF_FILE)
        template = meta.get("chat_template")
        return Tokenizer(
            hf, str(meta["kind"]), meta["roles"], template if isinstance(template, str) else None
        )
    if (d / HF_FILE).is_file():
        return wordpiece_from_tokenizer_json(d / HF_FILE)
    if (d / "vocab.txt").is_file():
        if lowercase is None:
            cfg_path = d / "tokenizer_config.json"
            cfg = _read_json(cfg_path) if cfg_path.is_file() else {}
            lowercase = bool(cfg.get("do_lower_case", True))
        return wordpiece_from_vocab(d / "vocab.txt", lowercase=lowercase)
    raise DataError(
        f"{str(d)!r} holds no tokenizer (expected {META_FILE}, {HF_FILE} or vocab.txt); "
        "save one with Tokenizer.save(dir)"
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(
            f"cannot read {str(path)!r} as JSON ({exc}); re-save the tokenizer"
        ) from exc
    if not isinstance(data, dict):
        raise DataError(f"{str(path)!r} must hold a JSON object; re-save the tokenizer")
    return data


def _read_hf(path: Path) -> HFTokenizer:
    try:
        return HFTokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises plain Exception subclasses
        raise DataError(
            f"cannot load {str(path)!r} as an HF tokenizer ({exc}); re-save the tokenizer"
        ) from exc


#: The roles an HF ``special_tokens_map.json`` / ``tokenizer_config.json`` may name.
_ROLE_KEYS = ("pad", "unk", "bos", "eos", "mask", "cls", "sep")


def declared_roles(directory: Path) -> dict[str, str]:
    """Role → token named by ``special_tokens_map.json`` (else ``tokenizer_config.json``) in
    ``directory`` (``"pad_token": "<pad>"`` or ``{"content": "<pad>", ...}``); {} when none."""
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        path = directory / name
        if not path.is_file():
            continue
        found: dict[str, str] = {}
        for role in _ROLE_KEYS:
            value = _read_json(path).get(f"{role}_token")
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str) and value:
                found[role] = value
        if found:
            return found
    return {}


def _roles(directory: Path, vocab: Any) -> dict[str, str]:
    """The special-token roles of a WordPiece vocabulary: those the files beside it declare
    (a dhian-trained WordPiece exported to HF uses ``<pad>``, ``<unk>``, ...), else BERT's
    ``[PAD]``, ``[UNK]``, ...; BOS/EOS default to CLS/SEP as in BERT."""
    roles = {r: t for r, t in declared_roles(directory).items() if t in vocab}
    for role, token in BERT_ROLES.items():
        if role not in roles and token in vocab:
            roles[role] = token
    for role, like in (("bos", "cls"), ("eos", "sep")):
        if role not in roles and like in roles:
            roles[role] = roles[like]
    return roles


def wordpiece_from_vocab(path: str | Path, lowercase: bool = True) -> Tokenizer:
    """A BERT WordPiece tokenizer from a ``vocab.txt`` (one token per line, id = line number).

    Matches ``transformers.BertTokenizerFast`` (BertNormalizer with Chinese-char splitting,
    accents stripped iff lower-casing, BertPreTokenizer, ``##`` continuation).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"vocab file {str(p)!r} does not exist; point at a BERT vocab.txt")
    try:
        vocab = models.WordPiece.read_file(str(p))
    except Exception as exc:
        raise DataError(f"cannot read {str(p)!r} as a WordPiece vocab.txt ({exc})") from exc
    if not vocab:
        raise DataError(f"vocab file {str(p)!r} is empty; point at a BERT vocab.txt")
    roles = _roles(p.parent, vocab)
    unk = roles.get("unk", BERT_ROLES["unk"])
    if unk not in vocab:
        raise DataError(f"vocab file {str(p)!r} has no {unk} token; it is not a BERT vocab.txt")
    hf = HFTokenizer(models.WordPiece(vocab, unk_token=unk, max_input_chars_per_word=100))
    hf.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    hf.decoder = decoders.WordPiece(prefix="##")
    hf.add_special_tokens(sorted(set(roles.values())))
    return Tokenizer(hf, "wordpiece", roles)


def wordpiece_from_tokenizer_json(path: str | Path) -> Tokenizer:
    """A pretrained WordPiece tokenizer from an HF ``tokenizer.json`` (ids kept as they are;
    special-token roles from the ``special_tokens_map.json`` beside it, else BERT's)."""
    p = Path(path)
    try:
        hf = HFTokenizer.from_file(str(p))
    except Exception as exc:
        raise DataError(f"cannot load {str(p)!r} as an HF tokenizer.json ({exc})") from exc
    hf.no_truncation()
    hf.no_padding()
    vocab = hf.get_vocab(with_added_tokens=True)
    roles = _roles(p.parent, vocab)
    if "unk" not in roles or "pad" not in roles:
        raise DataError(
            f"{str(p)!r} lacks an unknown and a padding token ([UNK]/[PAD], or those its "
            "special_tokens_map.json names); only BERT-style WordPiece tokenizer.json is supported"
        )
    return Tokenizer(hf, "wordpiece", roles)
