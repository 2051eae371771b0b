"""Text layer: tokenizers (BPE, byte-level BPE, char, WordPiece) on HF ``tokenizers``.

Owns special tokens and their fixed ids (pad 0, unk 1, bos 2, eos 3, mask 4, cls 5, sep 6 for
trained tokenizers), training, save/load, renumbering, batched encode/decode and BERT-style
inputs.
May import: HF ``tokenizers``, :mod:`dhian.errors`. Never torch or any other dhian layer.
"""

from __future__ import annotations

from dhian.text.bert_inputs import build_bert_input, encode_for_bert, encode_pair
from dhian.text.reorder import pad_last_order, reorder_vocab
from dhian.text.specials import (
    BOS_ID,
    CLS_ID,
    EOS_ID,
    MASK_ID,
    PAD_ID,
    SEP_ID,
    SPECIAL_TOKENS,
    UNK_ID,
)
from dhian.text.tokenizer import KINDS, Tokenizer, clean_text
from dhian.text.tokenizer_files import (
    load_tokenizer,
    wordpiece_from_tokenizer_json,
    wordpiece_from_vocab,
)
from dhian.text.training import normalize, train_tokenizer

__all__ = [
    "BOS_ID",
    "CLS_ID",
    "EOS_ID",
    "KINDS",
    "MASK_ID",
    "PAD_ID",
    "SEP_ID",
    "SPECIAL_TOKENS",
    "UNK_ID",
    "Tokenizer",
    "build_bert_input",
    "clean_text",
    "encode_for_bert",
    "encode_pair",
    "load_tokenizer",
    "normalize",
    "pad_last_order",
    "reorder_vocab",
    "train_tokenizer",
    "wordpiece_from_tokenizer_json",
    "wordpiece_from_vocab",
]
