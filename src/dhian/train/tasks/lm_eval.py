"""Causal-LM data and scoring: documents of any corpus spec or text file, evaluation blocks, and
per-token / per-character perplexity (:func:`evaluate_lm`, used by ``dhian evaluate`` and by the
LM task's validation).

Owns :func:`lm_documents` (documents of one split of a corpus spec; ``text:FILE`` — a single
plain-text file — is cut into train/dev/test 90/5/5 by characters at document breaks),
:func:`file_documents` (all documents of a text file), :func:`eval_blocks` (documents packed
behind a leading end-of-text token, so every token of every document is predicted exactly
once), :class:`LMScore` (summed NLL, token and character counts → loss, ppl, ppl_char, bpc),
:func:`score_documents` / :func:`evaluate_lm`, :func:`lm_logits` (the logits of any causal LM's
output: GPT's ``.logits``, LLaMA's ``(logits, weights)``) and :func:`end_of_text_id` (the token
that separates documents).

Per-character perplexity ``exp(total NLL / characters)`` counts the characters of each
document's *decoded* text (the tokenizer's round trip: whitespace runs → one space, unknown
characters dropped); the NLL includes the prediction of each document's end-of-text token. A
char model and a BPE model trained on the same text therefore score the same characters and
compare directly, while per-token perplexities do not.
Notation: B batch, T block length, V vocabulary.
Imports: stdlib, torch, tqdm, :mod:`dhian.data`, :mod:`dhian.metrics`, :mod:`dhian.errors`,
:mod:`dhian.train.tasks`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from dhian import metrics
from dhian.data.batching import collate
from dhian.data.corpus import MonolingualCorpus, ParallelCorpus, check_split
from dhian.data.corpus_loader import load_corpus
from dhian.data.examples import Examples, pack_lm
from dhian.data.local_files import read_lines, split_documents
from dhian.errors import ConfigError, DataError
from dhian.train.tasks.base import token_loss

#: fractions of a single ``text:FILE`` that go to train and dev (test gets the rest)
FILE_SPLIT = (0.90, 0.05)


def file_documents(path: str | Path) -> list[str]:
    """All documents of a UTF-8 text file (separated by blank lines, as ``text:DIR``)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"text file {str(p)!r} does not exist (or is a directory); check the path")
    return split_documents(read_lines(p))


def _file_split(path: Path, split: str) -> list[str]:
    """The documents of ``split`` of a single text file: train/dev/test = 90/5/5% of its
    characters, each cut at the blank line (document break) nearest to the target share, or
    at the nearest line end when the file has no blank line."""
    lines = read_lines(path)
    ends = list(itertools.accumulate(len(x) + 1 for x in lines))  # chars up to each line end
    blanks = [i + 1 for i, x in enumerate(lines) if not x.strip()]
    cuts = [0]
    for frac in (FILE_SPLIT[0], FILE_SPLIT[0] + FILE_SPLIT[1]):
        target = frac * ends[-1]
        options = [i for i in (blanks or range(1, len(lines))) if i >= cuts[-1]] or [cuts[-1]]
        cuts.append(min(options, key=lambda i: abs(ends[i - 1] - target) if i else target))
    cuts.append(len(lines))
    index = ("train", "dev", "test").index(split)
    docs = split_documents(lines[cuts[index] : cuts[index + 1]])
    if not docs:
        raise DataError(
            f"text file {str(path)!r} ({len(lines)} lines) is too small to give its {split} split "
            "text (train/dev/test = 90/5/5% of the characters, cut at blank lines or line ends); "
            "use a longer file or text:DIR with train.txt and dev.txt"
        )
    return docs


def lm_documents(spec: str, split: str, quiet: bool = False) -> list[str]:
    """Documents of one ``split`` of corpus ``spec`` for language modelling.

    Monolingual corpora give their documents, parallel ones their target side, classification
    ones their texts (as :func:`dhian.data.training_data.prepare_lm`). ``text:FILE`` (a file rather
    than a directory) is cut into train/dev/test = 90/5/5% of its characters at the nearest
    blank lines (document breaks), or line ends when it has none.
    """
    check_split(split)
    if spec.startswith("text:") and Path(spec[5:]).expanduser().is_file():
        return _file_split(Path(spec[5:]).expanduser(), split)
    corpus = load_corpus(spec, split, quiet=quiet)
    if isinstance(corpus, MonolingualCorpus):
        return list(corpus.docs)
    if isinstance(corpus, ParallelCorpus):
        return list(corpus.targets)
    return corpus.texts()


#: the document separator of GPT-2 style byte-level vocabularies (SmolLM2's pretraining too)
END_OF_TEXT = "<|endoftext|>"


def end_of_text_id(tok: Any) -> int:
    """The id that ends each document in packed LM data: the vocabulary's ``<|endoftext|>``
    when it has one (an instruction-tuned model's EOS is its end-of-turn token, and often its
    padding too, which the loss would ignore), else the tokenizer's EOS."""
    lookup = getattr(tok, "token_to_id", None)
    found = lookup(END_OF_TEXT) if lookup is not None else None
    return int(tok.eos_id) if found is None else int(found)


def lm_logits(out: Any) -> torch.Tensor:
    """The (B, T, V) logits of a causal LM's forward output: an object with ``.logits`` (GPT)
    or a tuple whose first item they are (LLaMA: ``(logits, weights)``)."""
    return out[0] if isinstance(out, tuple) else out.logits


def eval_blocks(
    docs: Sequence[Sequence[int]], block_size: int, eot_id: int, pad_id: int = 0
) -> Examples:
    """Pack ``EOT doc1 EOT doc2 EOT …`` into blocks of ``block_size + 1`` ids: every id of every
    document, and each document's closing EOT, is a target exactly once (the first document is
    predicted from EOT, like every later one)."""
    return pack_lm([[], *docs], block_size, eot_id, pad_id)


@dataclasses.dataclass
class LMScore:
    """Summed negative log-likelihood (nats) over ``tokens`` targets and ``chars`` characters."""

    nll: float
    tokens: int
    chars: int

    def metrics(self) -> dict[str, float]:
        """``loss`` (NLL per token), ``ppl`` (exp loss), ``ppl_char`` (exp NLL per character)
        and ``bpc`` (bits per character)."""
        loss = self.nll / max(self.tokens, 1)
        per_char = self.nll / max(self.chars, 1)
        return {
            "loss": loss,
            "ppl": metrics.perplexity(loss),
            "ppl_char": metrics.perplexity(per_char),
            "bpc": per_char / math.log(2),
        }


@torch.no_grad()
def score_blocks(
    model: torch.nn.Module,
    blocks: Examples,
    device: torch.device | str,
    batch_size: int = 16,
    progress: bool = False,
) -> tuple[float, int]:
    """(summed NLL in nats, number of targets) of causal-LM ``blocks`` under ``model``.

    ``model(ids)`` maps (B, T) ids to an output with (B, T, V) logits (:func:`lm_logits`). Padding at the
    end of the last block is ignored (causal attention never lets it reach a real token).
    """
    total, count = 0.0, 0
    starts = range(0, len(blocks), batch_size)
    for start in tqdm(starts, desc="scoring", unit="batch", disable=not progress, leave=False):
        idx = list(range(start, min(len(blocks), start + batch_size)))
        batch = collate(blocks, idx).to(device)
        assert batch.tgt_out is not None  # lm blocks always carry targets
        logits = lm_logits(model(batch.src))  # (B, T, V)
        terms = token_loss(logits, batch.tgt_out, batch.ignore_index)
        total += float(terms.loss)
        count += terms.count
    return total, count


def decoded_chars(tok: Any, docs: Sequence[Sequence[int]]) -> int:
    """Characters of the decoded text of each document (ids), summed."""
    return sum(len(tok.decode(list(d))) for d in docs)


def score_documents(
    model: torch.nn.Module,
    tok: Any,
    docs: Sequence[str],
    block_size: int,
    device: torch.device | str | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> LMScore:
    """Encode ``docs`` with ``tok``, pack them with :func:`eval_blocks` and score them."""
    if not docs:
        raise DataError("there is no document to evaluate (the split or file is empty)")
    ids = tok.encode_batch(list(docs))
    blocks = eval_blocks(ids, block_size, end_of_text_id(tok), tok.pad_id)
    if device is None:
        device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        nll, tokens = score_blocks(model, blocks, device, batch_size, progress)
    finally:
        model.train(was_training)
    return LMScore(nll, tokens, decoded_chars(tok, ids))


def model_and_tokenizer(loaded: Any, kind: str, need: str) -> tuple[Any, Any]:
    """(model, tokenizer) of a loaded model of ``kind``; else ConfigError ``need`` + what it got."""
    if getattr(loaded, "kind", None) != kind:
        raise ConfigError(f"{need}, got a {getattr(loaded, 'kind', '?')!r} model")
    return loaded.model, loaded.tokenizers.get("tgt") or loaded.tokenizers.get("src")


def evaluate_lm(
    loaded: Any,
    corpus: str | None = None,
    split: str = "test",
    *,
    file: str | Path | None = None,
    block_size: int = 0,
    batch_size: int = 16,
    max_docs: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Perplexity of a loaded language model (:class:`dhian.models.model_dir.LoadedModel` of kind
    ``lm``) on ``split`` of ``corpus`` (default: the corpus it was trained on), or on the whole
    text ``file`` (documents separated by blank lines) when given.

    ``block_size`` 0 = the training ``data.block_size`` (so the numbers match its dev_ppl);
    ``max_docs`` > 0 scores only the first documents. Returns ``loss`` (NLL per token, nats),
    ``ppl``, ``ppl_char`` = exp(total NLL / characters of the decoded text), ``bpc``, and the
    counts ``tokens``, ``chars``, ``documents`` plus ``source`` (what was read).
    """
    model, tok = model_and_tokenizer(
        loaded,
        "lm",
        "perplexity evaluation needs a language model (kind 'lm', model.type gpt or llama)",
    )
    limit = int(getattr(model, "block_size", 0)) or None
    block = block_size or int(loaded.config.data.block_size)
    if limit is not None:
        block = min(block, limit)
    if block < 1:
        raise ConfigError(f"block_size must be >= 1, got {block}")
    if file is not None:
        docs = file_documents(file)
        source = str(file)
    else:
        spec = corpus or str(loaded.config.data.corpus)
        docs = lm_documents(spec, split, quiet=not progress)
        source = f"{spec} {split}"
    if max_docs > 0:
        docs = docs[:max_docs]
    score = score_documents(model, tok, docs, block, device, batch_size, progress)
    return {
        **score.metrics(),
        "tokens": score.tokens,
        "chars": score.chars,
        "documents": len(docs),
        "block_size": block,
        "source": source,
    }
