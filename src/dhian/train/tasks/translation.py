"""The translation task: parallel corpus → tokenizers → token-budget batches → label-smoothed
cross entropy; validation = dev loss / perplexity + BLEU and chrF of decoded dev sentences.

Owns :class:`TranslationTask` (registered for every seq2seq ``model.type``). Models must follow
the seq2seq contract of docs/design.md (``forward`` → ``Seq2SeqOutput``, ``start``/``step``/
``reorder`` + ``pad_id``/``bos_id``/``eos_id`` for decoding).
Notation: B batch, Ts/Tt source/target length, V target vocabulary.
Imports: torch, :mod:`dhian.text`, :mod:`dhian.data`, :mod:`dhian.decoding`, :mod:`dhian.metrics`,
:mod:`dhian.train.tasks`, :mod:`dhian.errors`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from dhian import metrics
from dhian.data.batching import collate
from dhian.data.training_data import prepare_translation
from dhian.decoding import beam_search, greedy_decode
from dhian.errors import DataError
from dhian.models.families import model_types_of
from dhian.text import normalize
from dhian.train.tasks.base import EvalResult, IteratorStream, LossTerms, Task, token_loss


class TranslationTask(Task):
    """Sequence-to-sequence translation on a parallel corpus (``data.corpus``)."""

    name = "translation"
    model_types = model_types_of("seq2seq")
    metrics = ("loss", "ppl", "bleu", "chrf")

    eval_batch_size = 32
    num_samples = 3

    def setup(self, tokenizer_dir: Path | None) -> None:

        data = self.config.data
        if tokenizer_dir is not None:
            data = dataclasses.replace(data, tokenizer_path=str(tokenizer_dir))
        prepared = prepare_translation(data)
        if len(prepared.train) == 0:
            raise DataError(f"the train split of {data.corpus!r} has no usable example")
        if len(prepared.dev) == 0:
            raise DataError(f"the dev split of {data.corpus!r} is empty; validation needs one")
        self.tokenizers = {"src": prepared.src_tok, "tgt": prepared.tgt_tok}
        self.train_data, self.dev_data = prepared.train, prepared.dev
        self.dev_pairs = list(prepared.dev_corpus.pairs)
        src, tgt = prepared.src_tok, prepared.tgt_tok
        vocab = (
            f"joint {src.kind} vocabulary of {src.vocab_size}"
            if src is tgt
            else f"{src.kind} vocabularies of {src.vocab_size} / {tgt.vocab_size}"
        )
        self.log(f"data: train {self.train_data.report()}; dev {self.dev_data.report()}; {vocab}")

    def build_kwargs(self) -> dict[str, Any]:
        src, tgt = self.tokenizers["src"], self.tokenizers["tgt"]
        return {
            "src_vocab_size": int(src.vocab_size),
            "tgt_vocab_size": int(tgt.vocab_size),
            "pad_id": int(tgt.pad_id),
            "bos_id": int(tgt.bos_id),
            "eos_id": int(tgt.eos_id),
        }

    def train_stream(self, seed: int) -> IteratorStream:
        return IteratorStream(self.batches(self.train_data, seed, shuffle=True))

    def loss(self, model: torch.nn.Module, batch: Any, label_smoothing: float) -> LossTerms:
        out = model(batch.src, batch.src_lengths, batch.tgt_in)
        return token_loss(out.logits, batch.tgt_out, batch.ignore_index, label_smoothing)

    @torch.no_grad()
    def evaluate(
        self, model: torch.nn.Module, device: torch.device, beam: int, max_examples: int
    ) -> EvalResult:

        total, count = 0.0, 0
        for batch in self.batches(self.dev_data, 0, shuffle=False):
            batch = batch.to(device)
            terms = self.loss(model, batch, 0.0)
            total += float(terms.loss)
            count += terms.count
        mean = total / max(count, 1)
        result: dict[str, float] = {"loss": mean, "ppl": metrics.perplexity(mean)}

        n = len(self.dev_data) if max_examples <= 0 else min(max_examples, len(self.dev_data))
        tgt_tok = self.tokenizers["tgt"]
        hyps: list[str] = []
        for start in range(0, n, self.eval_batch_size):
            idx = list(range(start, min(n, start + self.eval_batch_size)))
            batch = collate(self.dev_data, idx).to(device)
            step_model: Any = model
            guard = self.config.train.eval_no_repeat_ngram
            if beam > 1:
                alpha = self.config.train.eval_length_penalty
                nbest = beam_search(
                    step_model, batch.src, batch.src_lengths, beam, alpha, no_repeat_ngram=guard
                )
                best = [h[0] for h in nbest]
            else:
                best = greedy_decode(
                    step_model, batch.src, batch.src_lengths, no_repeat_ngram=guard
                )
            hyps.extend(tgt_tok.decode(h.tokens) for h in best)
        lower = self.config.data.lowercase
        pairs = [self.dev_pairs[i] for i in self.dev_data.ids[:n]]
        refs = [normalize(p[1], lower) for p in pairs]
        bleu = metrics.bleu(hyps, refs)
        chrf = metrics.chrf(hyps, refs)
        result["bleu"], result["chrf"] = bleu.score, chrf.score
        samples = [(p[0], r, h) for p, r, h in zip(pairs, refs, hyps, strict=True)]
        return EvalResult(
            result,
            {"bleu_signature": bleu.signature, "chrf_signature": chrf.signature},
            samples[: self.num_samples],
        )
