"""The causal language-modelling task: documents → tokenizer (char or byte-level BPE) → packed
fixed-length blocks with an end-of-text token → next-token cross entropy; validation = dev
loss, per-token perplexity (``dev_ppl``) and per-character perplexity (``dev_ppl_char``), plus
one greedy continuation of a dev prompt as a sample.

Owns :class:`LMTask` (registered for the causal-LM families, ``model.type: gpt`` and ``llama``;
saved models have kind ``lm``, which ``dhian generate`` and ``dhian evaluate`` load) and
:func:`check_lm_config` (one-line ConfigErrors for block and vocabulary sizes). A llama usually
continues pretraining from ``train.init_from`` (``smollm2``, a GGUF file, an HF or dhian dir):
its own tokenizer, never retrained, and the recipe's ``model`` section must equal the source's.
Documents end with :func:`~dhian.train.tasks.lm_eval.end_of_text_id` (``<|endoftext|>`` where
the vocabulary has it, else EOS). Data: any corpus spec (``news``, ``bible:en``,
``text:DIR``, ``text:FILE``…, see :func:`dhian.train.tasks.lm_eval.lm_documents`); training blocks
come from :func:`dhian.data.examples.pack_lm`, dev blocks from
:func:`dhian.train.tasks.lm_eval.eval_blocks` (every dev token predicted once, as ``evaluate_lm``).
Notation: B batch, T block length, V vocabulary.
Imports: torch, :mod:`dhian.config`, :mod:`dhian.errors`, :mod:`dhian.text`, :mod:`dhian.data`,
:mod:`dhian.models`, :mod:`dhian.inference.generate`, :mod:`dhian.train.tasks`,
:mod:`dhian.train.tasks.lm_eval`, :mod:`dhian.train.warmstart`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from dhian.config import RunConfig
from dhian.data.examples import pack_lm
from dhian.data.training_data import load_tokenizers
from dhian.errors import ConfigError, DataError
from dhian.inference.generate import generate_text, llm_generate_text
from dhian.models import model_dir as model_io
from dhian.models.families import model_types_of
from dhian.models.llama.config import LlamaConfig
from dhian.text import train_tokenizer
from dhian.train.tasks.base import EvalResult, IteratorStream, LossTerms, Task, token_loss
from dhian.train.tasks.lm_eval import (
    LMScore,
    decoded_chars,
    end_of_text_id,
    eval_blocks,
    evaluate_lm,
    lm_documents,
    lm_logits,
    score_blocks,
)
from dhian.train.warmstart import resolve_init

__all__ = ["LMTask", "check_lm_config", "evaluate_lm"]

LM_TOKENIZERS = ("char", "bytebpe", "bpe")


def check_lm_config(config: RunConfig) -> None:
    """Raise ConfigError when ``data.block_size`` exceeds the model's longest context
    (``model.block_size``, for llama ``model.max_seq_len``) or the tokenizer kind cannot mark
    documents for a causal LM."""
    data, model = config.data, config.model
    if data.block_size < 1:
        raise ConfigError(f"data.block_size must be >= 1, got {data.block_size}")
    field = "max_seq_len" if isinstance(model, LlamaConfig) else "block_size"
    limit = int(getattr(model, field))
    if data.block_size > limit:
        raise ConfigError(
            f"data.block_size={data.block_size} > model.{field}={limit} (the "
            f"model's longest context); lower data.block_size or raise model.{field}"
        )
    if not data.tokenizer_path and data.tokenizer not in LM_TOKENIZERS:
        raise ConfigError(
            f"data.tokenizer {data.tokenizer!r} is not meant for language modelling; use "
            f"{', '.join(LM_TOKENIZERS)} (bytebpe = GPT-2 style byte-level BPE)"
        )


def _same(a: Any, b: Any) -> bool:
    """Equal config values; floats to float32 precision (a GGUF stores ``1e-5`` as float32)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-6)
    return bool(a == b)


class LMTask(Task):
    """Causal LM (GPT, LLaMA) on the documents of ``data.corpus``; batches of packed blocks."""

    name = "lm"
    model_types = model_types_of("causal_lm")
    # ``ppl_char`` is reported too, but dhian.metrics does not know it is lower-is-better yet,
    # so it is not offered to early stopping
    metrics = ("loss", "ppl")

    eval_batch_size = 16
    sample_prompt_chars = 40
    sample_new_tokens = 48

    def setup(self, tokenizer_dir: Path | None) -> None:

        check_lm_config(self.config)
        data = self.config.data
        train_docs = lm_documents(data.corpus, "train")
        dev_docs = lm_documents(data.corpus, "dev")
        if data.max_train_examples > 0:
            train_docs = train_docs[: data.max_train_examples]
        if data.max_eval_examples > 0:
            dev_docs = dev_docs[: data.max_eval_examples]
        source = tokenizer_dir or (Path(data.tokenizer_path) if data.tokenizer_path else None)
        if source is not None:
            tok = load_tokenizers(source)[1]
        else:
            tok = train_tokenizer(data.tokenizer, train_docs, data.vocab_size, data.lowercase)
        if tok.eos_id is None:
            raise ConfigError(
                f"the tokenizer ({tok.kind}) has no end-of-text (EOS) token to separate documents"
            )
        want = int(getattr(self.config.model, "vocab_size", 0))
        if 0 < want < tok.vocab_size:
            raise ConfigError(
                f"model.vocab_size={want} < the tokenizer's {tok.vocab_size} tokens; set "
                "model.vocab_size: 0 (take the tokenizer's)"
            )
        self.tokenizers = {"src": tok, "tgt": tok}
        block, eot = data.block_size, end_of_text_id(tok)
        self.train_data = pack_lm(tok.encode_batch(train_docs), block, eot, tok.pad_id)
        dev_ids = tok.encode_batch(dev_docs)
        self.dev_data = eval_blocks(dev_ids, block, eot, tok.pad_id)
        self.dev_chars = decoded_chars(tok, dev_ids)
        self.dev_docs = dev_docs
        if len(self.train_data) == 0:
            raise DataError(f"the train split of {data.corpus!r} has no text to train on")
        if self.dev_chars == 0:
            raise DataError(f"the dev split of {data.corpus!r} is empty; validation needs text")
        n_train = sum(len(b) - 1 for b in self.train_data.src)
        n_dev = sum(len(b) - 1 for b in self.dev_data.src)
        self.log(
            f"data: train {len(train_docs)} documents → {len(self.train_data)} blocks of "
            f"{block} ({n_train:,} tokens); dev {len(dev_docs)} documents ({n_dev:,} tokens, "
            f"{self.dev_chars:,} characters); {tok.kind} vocabulary of {tok.vocab_size}"
        )

    def build_kwargs(self) -> dict[str, Any]:
        return self.shared_vocab_kwargs("tgt", bos_eos=True)

    def train_stream(self, seed: int) -> IteratorStream:
        return IteratorStream(self.batches(self.train_data, seed, shuffle=True))

    def loss(self, model: torch.nn.Module, batch: Any, label_smoothing: float) -> LossTerms:
        logits = lm_logits(model(batch.src))  # (B, T, V)
        return token_loss(logits, batch.tgt_out, batch.ignore_index, label_smoothing)

    def init_weights(self, model: torch.nn.Module, path: str) -> None:
        """Copy ``path``'s weights; a llama's ``model`` section must equal the source's (the
        architecture, special ids and context are the pretrained model's, not the recipe's)."""
        source = resolve_init(path)
        if isinstance(self.config.model, LlamaConfig) and (source / model_io.CONFIG).is_file():
            theirs = model_io.read_run_config(source).model.to_dict()
            ours = self.config.model.to_dict()
            diffs = [
                f"{k}: {ours.get(k)!r} here, {v!r} there"
                for k, v in theirs.items()
                if not _same(ours.get(k), v)
            ]
            if diffs:
                raise ConfigError(
                    f"the model section differs from train.init_from {path!r} in "
                    f"{'; '.join(diffs[:3])}; copy the model section of {source / model_io.CONFIG}"
                )
        super().init_weights(model, str(source))

    @torch.no_grad()
    def evaluate(
        self, model: torch.nn.Module, device: torch.device, beam: int, max_examples: int
    ) -> EvalResult:
        nll, tokens = score_blocks(model, self.dev_data, device, self.eval_batch_size)
        result = LMScore(nll, tokens, self.dev_chars).metrics()
        del result["bpc"]
        return EvalResult(result, samples=self._sample(model))

    def _sample(self, model: torch.nn.Module) -> list[tuple[str, str, str]]:
        """(prompt, true continuation, greedy continuation) of the first dev document."""
        tok = self.tokenizers["tgt"]
        text = tok.decode(tok.encode(self.dev_docs[0]))
        cut = text.rfind(" ", 0, self.sample_prompt_chars + 1)
        prompt = text[: cut if cut > 0 else self.sample_prompt_chars]
        if not prompt:
            return []
        if isinstance(self.config.model, LlamaConfig):
            (hyp,) = llm_generate_text(
                model, tok, [prompt], max_new_tokens=self.sample_new_tokens, temperature=0.0
            )
        else:
            (hyp,) = generate_text(
                model,
                tok,
                [prompt],
                max_new_tokens=self.sample_new_tokens,
                temperature=0.0,
                new_document=True,
            )
        ref = text[len(prompt) : len(prompt) + len(hyp) + 1]
        return [(prompt, ref, hyp)]
