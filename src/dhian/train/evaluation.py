"""Evaluate translation models on a corpus split: BLEU, chrF and BLEU by source-length bucket
(Bahdanau et al., 2015, Fig. 2), for one model or several side by side, written as Markdown,
JSON, a PNG plot and hypothesis files.

Owns length buckets (:class:`Bucket`, :func:`parse_buckets`, :func:`assign_buckets`),
:func:`bleu_by_length`, :func:`evaluate_translation` → :class:`TranslationEval`, and the report
writers :func:`markdown_report` / :func:`write_report`.

Buckets count source **words** (whitespace-separated, before subword tokenisation) and are
half-open: ``10-20`` holds sentences of 10 to 19 words, ``60+`` every sentence of 60 or more.
A bucket with no sentence has BLEU ``None`` (a gap in the plot); a bucket of sentences shorter
than four words scores 0 (corpus BLEU needs 4-grams). References are normalised as
in training (:func:`dhian.text.normalize`, with the model's ``data.lowercase``).
Imports: stdlib, :mod:`dhian.text`, :mod:`dhian.data`, :mod:`dhian.models.model_dir`,
:mod:`dhian.decoding`, :mod:`dhian.metrics`, :mod:`dhian.viz`, :mod:`dhian.errors`.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dhian import metrics
from dhian.data.corpus import ParallelCorpus
from dhian.data.corpus_loader import load_corpus
from dhian.errors import ConfigError, DataError
from dhian.inference.translate import translate_texts
from dhian.metrics import MetricResult
from dhian.text import normalize
from dhian.viz import bleu_by_length_plot

__all__ = [
    "DEFAULT_BUCKETS",
    "Bucket",
    "BucketScore",
    "TranslationEval",
    "assign_buckets",
    "bleu_by_length",
    "evaluate_translation",
    "markdown_report",
    "parse_buckets",
    "write_report",
]

#: fits Bible verses (test/dev verses have up to ~65 source words; a few train verses ~90)
DEFAULT_BUCKETS = "0-10,10-20,20-30,30-40,40-50,50-60,60+"

Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Bucket:
    """Source lengths ``lo <= n < hi`` (``hi`` None: no upper end)."""

    lo: int
    hi: int | None

    @property
    def label(self) -> str:
        """``"10-20"`` or ``"60+"``."""
        return f"{self.lo}+" if self.hi is None else f"{self.lo}-{self.hi}"

    def __contains__(self, n: object) -> bool:
        return isinstance(n, int) and n >= self.lo and (self.hi is None or n < self.hi)


_BUCKET = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)|(\+))\s*$")


def parse_buckets(spec: str) -> list[Bucket]:
    """``"0-10,10-20,60+"`` → buckets, checked to be increasing and non-overlapping."""
    buckets: list[Bucket] = []
    for part in spec.split(","):
        m = _BUCKET.match(part)
        if m is None:
            raise ConfigError(
                f"bad length bucket {part.strip()!r} in --buckets {spec!r}; write LO-HI or LO+, "
                f"e.g. {DEFAULT_BUCKETS}"
            )
        lo, hi = int(m.group(1)), (None if m.group(3) else int(m.group(2)))
        if hi is not None and hi <= lo:
            raise ConfigError(f"length bucket {part.strip()!r} is empty: {hi} <= {lo}")
        if buckets:
            prev = buckets[-1]
            if prev.hi is None or lo < prev.hi:
                raise ConfigError(
                    f"length buckets overlap or are out of order at {part.strip()!r} in {spec!r}"
                )
        buckets.append(Bucket(lo, hi))
    return buckets


def assign_buckets(lengths: Sequence[int], buckets: Sequence[Bucket]) -> list[int | None]:
    """Index of the bucket of each length (None when no bucket holds it)."""
    return [next((k for k, b in enumerate(buckets) if n in b), None) for n in lengths]


@dataclasses.dataclass(frozen=True)
class BucketScore:
    """Corpus BLEU of the ``n`` sentences of one bucket (None when ``n`` is 0)."""

    bucket: str
    lo: int
    hi: int | None
    n: int
    bleu: float | None


def bleu_by_length(
    hyps: Sequence[str],
    refs: Sequence[str],
    lengths: Sequence[int],
    buckets: Sequence[Bucket],
) -> list[BucketScore]:
    """Corpus BLEU (sacrebleu) of each bucket's sentences; ``lengths`` are source lengths."""
    if not len(hyps) == len(refs) == len(lengths):
        raise DataError(
            f"{len(hyps)} hypotheses, {len(refs)} references and {len(lengths)} lengths must match"
        )
    which = assign_buckets(lengths, buckets)
    out = []
    for k, b in enumerate(buckets):
        idx = [i for i, w in enumerate(which) if w == k]
        score = metrics.bleu([hyps[i] for i in idx], [refs[i] for i in idx]).score if idx else None
        out.append(BucketScore(b.label, b.lo, b.hi, len(idx), score))
    return out


@dataclasses.dataclass
class TranslationEval:
    """One model's results on ``corpus``/``split``: texts, scores, length buckets and speed."""

    name: str
    model: str
    corpus: str
    split: str
    sources: list[str]
    refs: list[str]
    hyps: list[str]
    bleu: MetricResult
    chrf: MetricResult
    by_length: list[BucketScore]
    seconds: float
    beam: int
    length_penalty: float
    truncated: int = 0

    @property
    def sents_per_s(self) -> float:
        """Decoded sentences per second of wall time."""
        return len(self.hyps) / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> dict[str, Any]:
        """JSON-ready scores (no texts)."""
        return {
            "name": self.name,
            "model": self.model,
            "corpus": self.corpus,
            "split": self.split,
            "sentences": len(self.hyps),
            "bleu": self.bleu.score,
            "bleu_signature": self.bleu.signature,
            "chrf": self.chrf.score,
            "chrf_signature": self.chrf.signature,
            "beam": self.beam,
            "length_penalty": self.length_penalty,
            "seconds": self.seconds,
            "sentences_per_second": self.sents_per_s,
            "truncated_sources": self.truncated,
            "by_length": [dataclasses.asdict(b) for b in self.by_length],
        }


def evaluate_translation(
    loaded: Any,
    *,
    name: str,
    model_path: str = "",
    corpus: str | None = None,
    split: str = "test",
    beam: int = 5,
    length_penalty: float | None = None,
    max_examples: int = 0,
    buckets: Sequence[Bucket] | None = None,
    batch_size: int = 32,
    src_eos: bool = False,
    progress: bool = False,
    log: Log | None = None,
    no_repeat_ngram: int | None = None,
) -> TranslationEval:
    """Translate ``split`` of ``corpus`` (default: the corpus in the model's saved config) with
    ``loaded`` and score it. ``length_penalty`` None = the config's ``train.eval_length_penalty``;
    ``max_examples`` > 0 keeps the first N pairs; ``no_repeat_ngram`` None = the config's
    ``train.eval_no_repeat_ngram``."""
    spec = corpus or str(loaded.config.data.corpus)
    data = load_corpus(spec, split, quiet=True)
    if not isinstance(data, ParallelCorpus):
        raise DataError(f"corpus {spec!r} is {data.kind}; evaluating translation needs parallel")
    pairs = data.pairs[:max_examples] if max_examples > 0 else data.pairs
    if not pairs:
        raise DataError(f"the {split} split of {spec!r} is empty; choose another --split")
    alpha = (
        float(loaded.config.train.eval_length_penalty) if length_penalty is None else length_penalty
    )
    sources = [p[0] for p in pairs]
    lower = bool(loaded.config.data.lowercase)
    refs = [normalize(p[1], lower) for p in pairs]
    truncated: list[str] = []
    start = time.perf_counter()
    out = translate_texts(
        loaded,
        sources,
        beam=beam,
        length_penalty=alpha,
        batch_size=batch_size,
        src_eos=src_eos,
        progress=progress,
        warn=truncated.append,
        no_repeat_ngram=no_repeat_ngram,
    )
    seconds = time.perf_counter() - start
    if truncated and log is not None:
        log(f"{name}: {len(truncated)} sources longer than the model's limit were truncated")
    hyps = [t.text for t in out]
    lengths = [len(s.split()) for s in sources]
    return TranslationEval(
        name=name,
        model=model_path,
        corpus=spec,
        split=split,
        sources=sources,
        refs=refs,
        hyps=hyps,
        bleu=metrics.bleu(hyps, refs),
        chrf=metrics.chrf(hyps, refs),
        by_length=bleu_by_length(hyps, refs, lengths, buckets or parse_buckets(DEFAULT_BUCKETS)),
        seconds=seconds,
        beam=beam,
        length_penalty=alpha,
        truncated=len(truncated),
    )


# --------------------------------------------------------------------------- reports


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def markdown_report(evals: Sequence[TranslationEval]) -> str:
    """Two Markdown tables: overall scores per model, then BLEU per length bucket (columns =
    models; ``n`` = sentences in the bucket), followed by the sacrebleu signatures."""
    if not evals:
        raise ValueError("markdown_report: no evaluation to report")
    first = evals[0]
    lines = [
        f"# {first.corpus} {first.split}: {len(first.hyps)} sentences",
        "",
        "| model | BLEU | chrF | sentences | beam | length penalty | seconds | sentences/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in evals:
        lines.append(
            f"| {e.name} | {e.bleu.score:.2f} | {e.chrf.score:.2f} | {len(e.hyps)} | {e.beam} "
            f"| {e.length_penalty:g} | {e.seconds:.1f} | {e.sents_per_s:.1f} |"
        )
    lines += [
        "",
        "BLEU by source length (words):",
        "",
        "| source words | n | " + " | ".join(e.name for e in evals) + " |",
        "|---|---:|" + "---:|" * len(evals),
    ]
    for k, b in enumerate(first.by_length):
        scores = " | ".join(_fmt(e.by_length[k].bleu) for e in evals)
        lines.append(f"| {b.bucket} | {b.n} | {scores} |")
    lines += ["", f"BLEU: `{first.bleu.signature}`  ", f"chrF: `{first.chrf.signature}`", ""]
    return "\n".join(lines)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "model"


def write_report(evals: Sequence[TranslationEval], out_dir: str | Path) -> dict[str, Path]:
    """Write into ``out_dir``: ``eval.<split>.md`` / ``.json``, ``bleu_by_length.<split>.png``,
    ``refs.<split>.txt``, and ``hyps.<split>.txt`` (first model) / ``hyps.<split>.<name>.txt``
    (the others). Returns the paths by role (``markdown``, ``json``, ``png``, ``refs``, and
    ``hyps:<name>`` per model)."""
    if not evals:
        raise ValueError("write_report: no evaluation to write")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    split = evals[0].split
    paths = {
        "markdown": out / f"eval.{split}.md",
        "json": out / f"eval.{split}.json",
        "png": out / f"bleu_by_length.{split}.png",
        "refs": out / f"refs.{split}.txt",
    }
    for k, e in enumerate(evals):
        hyp_path = out / (f"hyps.{split}.txt" if k == 0 else f"hyps.{split}.{_safe(e.name)}.txt")
        hyp_path.write_text("".join(h + "\n" for h in e.hyps), encoding="utf-8")
        paths[f"hyps:{e.name}"] = hyp_path
    paths["refs"].write_text("".join(r + "\n" for r in evals[0].refs), encoding="utf-8")
    paths["markdown"].write_text(markdown_report(evals), encoding="utf-8")
    payload = {"corpus": evals[0].corpus, "split": split, "models": [e.summary() for e in evals]}
    paths["json"].write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    table = {e.name: [(b.bucket, b.bleu) for b in e.by_length] for e in evals}
    bleu_by_length_plot(
        table,
        paths["png"],
        title=f"{evals[0].corpus} {split}",
        xlabel="source sentence length (words)",
    )
    return paths
