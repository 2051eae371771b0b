"""The CTranslate2 peer of the decoding scenarios (optional: ``pip install ctranslate2``).

The Marian directory that :func:`bench.decode.build_pair` exports is converted by CTranslate2's
``TransformersConverter`` — the code behind ``ct2-transformers-converter``, run in process to
save two interpreter start-ups (the equivalent command is :func:`command`) — with
``quantization="int8"`` for the timed peer; a float32 conversion checks the pipeline: its
tokens must equal dhian's. The converter needs a tokenizer
in the directory and follows real Marian checkpoints in two places, which the benchmark model
is built to match:

- the decoder starts from a *zero* embedding (Marian's pad token): the model's BOS embedding
  row is zero (see ``build_pair``), so dhian's and HF's first step are the same;
- the last vocabulary entry is dropped as Marian's ``<pad>``: the benchmark model's PAD is the
  last id (V - 1), which dhian and HF never generate either and the sources never contain.

Tokens are strings for CTranslate2: id i is ``t{i}``, with ``<pad>`` (V - 1), ``<s>`` (BOS),
``</s>`` (EOS) and ``<unk>`` (the first other id, an ordinary token of the random model) at the
model's ids. Decoding runs exactly ``out_len`` steps
(``min_decoding_length = max_decoding_length = out_len``, the EOS step of dhian/HF replaced by
one more ordinary token), the same number of decoder steps as dhian and HF; the first
``out_len - 1`` tokens are compared.
"""

from __future__ import annotations

import atexit
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bench.peer_process import PeerProcess

#: how to get the optional peer
INSTALL = "pip install ctranslate2"


def unavailable() -> str | None:
    """Why the CTranslate2 peer cannot run here, or None when it can."""
    try:
        import ctranslate2.converters  # noqa: F401
    except ImportError as exc:
        return f"ctranslate2 is not installed ({exc}); {INSTALL}"
    return None


def token_names(vocab: int, pad_id: int, bos_id: int, eos_id: int) -> list[str]:
    """The string of every id: ``t{i}``, the specials at their ids (PAD must be the last)."""
    if pad_id != vocab - 1:
        raise RuntimeError(f"CTranslate2's Marian loader drops the last id as PAD; PAD is {pad_id}")
    names = [f"t{i}" for i in range(vocab)]
    specials = {pad_id: "<pad>", bos_id: "<s>", eos_id: "</s>"}
    unk = next(i for i in range(vocab) if i not in specials)
    for i, name in {**specials, unk: "<unk>"}.items():
        names[i] = name
    return names


def write_tokenizer(folder: Path, names: list[str]) -> None:
    """A word-level ``tokenizer.json`` (+ ``tokenizer_config.json``) over ``names``, so that
    ``AutoTokenizer`` (and so the converter) can read the exported Marian dir."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    vocab = {name: i for i, name in enumerate(names)}
    Tokenizer(WordLevel(vocab, unk_token="<unk>")).save(str(folder / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def command(folder: Path, out: Path, quantization: str | None) -> str:
    """The ``ct2-transformers-converter`` command line that :func:`convert` runs in process."""
    quant = f" --quantization {quantization}" if quantization else ""
    return f"ct2-transformers-converter --model {folder} --output_dir {out}{quant} --force"


def convert(folder: Path, out: Path, quantization: str | None) -> Path:
    """Convert the Marian dir ``folder`` into ``out`` (see :func:`command`); a failure is a
    RuntimeError naming the command."""
    from ctranslate2.converters import TransformersConverter

    try:
        TransformersConverter(str(folder)).convert(str(out), quantization=quantization, force=True)
    except Exception as exc:  # the converter raises anything from transformers to ValueError
        raise RuntimeError(f"{command(folder, out, quantization)} failed: {exc}") from exc
    return out


class CT2Decoder:
    """A CTranslate2 ``Translator`` on the converted dir, pinned to ``threads`` intra-op threads
    (one translation at a time), decoding id batches into id lists."""

    def __init__(self, path: Path, compute_type: str, threads: int, names: list[str]) -> None:
        import ctranslate2

        self.translator: Any = ctranslate2.Translator(
            str(path),
            device="cpu",
            compute_type=compute_type,
            inter_threads=1,
            intra_threads=threads,
        )
        self.names = names
        self.ids = {name: i for i, name in enumerate(names)}

    def decode(self, src: Tensor, out_len: int, beam: int) -> list[list[int]]:
        """``src`` (B, Ts) ids → per sentence the first ``out_len - 1`` of exactly ``out_len``
        generated tokens (BOS suppressed as dhian and HF do; PAD is not in CTranslate2's
        vocabulary)."""
        tokens = [[self.names[i] for i in row] for row in src.tolist()]
        results = self.translator.translate_batch(
            tokens,
            beam_size=beam,
            max_decoding_length=out_len,
            min_decoding_length=out_len,
            length_penalty=1.0,
            suppress_sequences=[["<s>"]],
            max_batch_size=0,
        )
        return [[self.ids[t] for t in r.hypotheses[0]][: out_len - 1] for r in results]


def setup(folder: Path, model: Any, vocab: int) -> tuple[dict[str, Any], list[str]]:
    """Convert ``folder`` (float32 and int8) and load both, each :class:`CT2Decoder` in its own
    process (:mod:`bench.peer_process`: CTranslate2's OpenMP threads in this process would slow
    torch's); returns ({"fp32", "int8"} → decoder, token names). ``model``: the dhian model
    (its pad/bos/eos ids). Close a decoder (``.close()``) when done with it."""
    names = token_names(vocab, model.pad_id, model.bos_id, model.eos_id)
    write_tokenizer(folder, names)
    threads = torch.get_num_threads()
    out: dict[str, CT2Decoder] = {}
    for tag, quant, compute in (("fp32", None, "float32"), ("int8", "int8", "int8")):
        path = folder.with_name(f"{folder.name}-ct2-{tag}")
        atexit.register(shutil.rmtree, path, ignore_errors=True)
        convert(folder, path, quant)
        out[tag] = PeerProcess(CT2Decoder, path, compute, threads, names)
    return out, names
