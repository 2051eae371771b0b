"""Special tokens and their fixed ids for tokenizers that dhian trains.

Owns the names and ids of pad/unk/bos/eos/mask/cls/sep (ids 0..6). Imports nothing from dhian
but :mod:`dhian.errors`; no torch.
"""

from __future__ import annotations

PAD = "<pad>"
UNK = "<unk>"
BOS = "<s>"
EOS = "</s>"
MASK = "<mask>"
CLS = "<cls>"
SEP = "<sep>"

#: Special tokens of trained tokenizers, in id order: pad 0, unk 1, bos 2, eos 3, mask 4,
#: cls 5, sep 6.
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, BOS, EOS, MASK, CLS, SEP)

PAD_ID, UNK_ID, BOS_ID, EOS_ID, MASK_ID, CLS_ID, SEP_ID = range(7)

#: Role name → token string for trained tokenizers.
TRAINED_ROLES: dict[str, str] = {
    "pad": PAD,
    "unk": UNK,
    "bos": BOS,
    "eos": EOS,
    "mask": MASK,
    "cls": CLS,
    "sep": SEP,
}

#: Role name → token string for BERT-style WordPiece vocabularies (bos/eos reuse cls/sep).
BERT_ROLES: dict[str, str] = {
    "pad": "[PAD]",
    "unk": "[UNK]",
    "bos": "[CLS]",
    "eos": "[SEP]",
    "mask": "[MASK]",
    "cls": "[CLS]",
    "sep": "[SEP]",
}
