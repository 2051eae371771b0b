"""The quickstart's test evaluation and report: translate the test split, score it, pick sample
verses, draw alignment heatmaps, and lay out ``report.md`` / ``report.html``.

Owns :class:`TestResult` (with :class:`Sample` and :class:`Alignment`), :func:`evaluate_test`,
:func:`write_translations` (``test-translations.tsv``), :func:`quickstart_report` and
:func:`format_summary` (the console summary). Translation and scoring are the library's:
:func:`dhian.train.evaluation.evaluate_translation` (batched, length-sorted greedy or beam
search; sacrebleu BLEU/chrF with signatures against the normalised references; BLEU by source
length) and :func:`dhian.inference.translate.translate_texts` with weights for the heatmaps,
which show each output token's attention over the source: the RNN's attention, or for a
transformer the last decoder layer's cross attention averaged over heads.
Notation: Ts source length, Tt output length (tokens + EOS).
Imports: stdlib, torch, :mod:`dhian.data`, :mod:`dhian.text`, :mod:`dhian.decoding`,
:mod:`dhian.metrics`, :mod:`dhian.viz`, :mod:`dhian.train.evaluation`,
:mod:`dhian.apps.report`, :mod:`dhian.errors`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from dhian import metrics
from dhian.apps.report import Figure, Report, Section, write_report
from dhian.config import RunConfig
from dhian.data.corpus import ParallelCorpus
from dhian.data.corpus_loader import load_corpus
from dhian.errors import DataError
from dhian.inference.translate import default_no_repeat, translate_texts
from dhian.train.evaluation import evaluate_translation
from dhian.viz import alignment_heatmap

__all__ = [
    "Alignment",
    "Sample",
    "TestResult",
    "evaluate_test",
    "format_summary",
    "quickstart_report",
    "write_translations",
]

BATCH = 64
TRANSLATIONS = "test-translations.tsv"
SAMPLE_MAX_TOKENS = 40  # printed samples: sources up to this many tokens
HEATMAP_TOKENS = (6, 20)  # heatmaps: sources of this many tokens (readable plots)
FAST_HEATMAP_TOKENS = (4, 12)
STOPS = {
    "time_limit": "the time limit",
    "max_steps": "the step limit",
    "max_epochs": "the epoch limit",
    "early_stop": "early stopping",
    "SIGINT": "Ctrl-C",
    "SIGTERM": "SIGTERM",
}


@dataclasses.dataclass
class Sample:
    """One translated test example: corpus ``ref`` (e.g. ``44.2.4``), source, reference,
    output."""

    ref: str
    source: str
    reference: str
    output: str


@dataclasses.dataclass
class Alignment:
    """Attention of one test example: ``weights`` (Tt, Ts) with Tt = output tokens + EOS, the
    token strings of both sides, and the PNG it was drawn to."""

    ref: str
    src_tokens: list[str]
    out_tokens: list[str]
    weights: torch.Tensor
    figure: Path


@dataclasses.dataclass
class TestResult:
    """Scores on ``n`` of the ``total`` test examples, decoded with ``beam`` (1 = greedy) in
    ``seconds``; a few :class:`Sample` and :class:`Alignment`, every translated example
    (``rows``) and BLEU by source length in words (``by_length``: (bucket, n, BLEU | None))."""

    split_name: str
    n: int
    total: int
    beam: int
    seconds: float
    bleu: metrics.MetricResult
    chrf: metrics.MetricResult
    samples: list[Sample]
    alignments: list[Alignment]
    rows: list[Sample] = dataclasses.field(default_factory=list)
    by_length: list[tuple[str, int, float | None]] = dataclasses.field(default_factory=list)
    no_repeat: int = 0

    def describe(self) -> str:
        """E.g. ``beam search (beam 5, no repeated 3-grams), all 1007 test examples, 52 s``."""
        guard = f", no repeated {self.no_repeat}-grams" if self.no_repeat > 0 else ""
        mode = (
            f"greedy decoding{guard}"
            if self.beam == 1
            else f"beam search (beam {self.beam}{guard})"
        )
        part = f"all {self.n}" if self.n == self.total else f"the first {self.n} of {self.total}"
        return f"{mode}, {part} test examples, {self.seconds:.0f} s"

    def summary(self) -> dict[str, Any]:
        """JSON-ready scores and setup."""
        return {
            "bleu": round(self.bleu.score, 2),
            "chrf": round(self.chrf.score, 2),
            "bleu_signature": self.bleu.signature,
            "chrf_signature": self.chrf.signature,
            "examples": self.n,
            "of": self.total,
            "beam": self.beam,
            "no_repeat_ngram": self.no_repeat,
            "seconds": round(self.seconds, 1),
        }


def _spaced(candidates: Sequence[int], k: int) -> list[int]:
    """``k`` entries of ``candidates`` spread evenly from the start (fewer if it is short)."""
    if k <= 0 or not candidates:
        return []
    step = max(1, len(candidates) // k)
    return list(candidates[::step][:k])


def evaluate_test(
    loaded: Any,
    *,
    limit: int = 0,
    beam: int = 1,
    samples: int = 5,
    heatmaps: int = 3,
    fig_dir: str | Path,
    progress: bool = True,
    fast: bool = False,
) -> TestResult:
    """Translate the test split of the model's corpus (its first ``limit`` examples; 0 = all)
    with ``loaded`` (a translation :class:`~dhian.models.model_dir.LoadedModel`) and score it; draw
    ``heatmaps`` alignment PNGs into ``fig_dir``. ``fast``: shorter heatmap sentences and
    outputs (the ``--fast`` smoke test)."""
    spec = str(loaded.config.data.corpus)
    corpus = load_corpus(spec, "test", quiet=True)
    if not isinstance(corpus, ParallelCorpus) or len(corpus) == 0:
        raise DataError(f"the test split of {spec!r} is empty or not parallel text")
    ev = evaluate_translation(
        loaded,
        name="test",
        corpus=spec,
        split="test",
        beam=beam,
        max_examples=limit,
        batch_size=BATCH,
        progress=progress,
    )
    refs = corpus.refs[: len(ev.hyps)]
    rows = [Sample(*t) for t in zip(refs, ev.sources, ev.refs, ev.hyps, strict=True)]
    lengths = [len(x) for x in loaded.tokenizers["src"].encode_batch(ev.sources)]
    short = [i for i, k in enumerate(lengths) if k <= SAMPLE_MAX_TOKENS] or list(range(len(rows)))
    lo, hi = FAST_HEATMAP_TOKENS if fast else HEATMAP_TOKENS
    plot = [i for i, k in enumerate(lengths) if lo <= k <= hi] or short
    picks = [rows[i] for i in _spaced(plot, heatmaps)]
    aligns = _alignments(loaded, picks, beam, ev.length_penalty, fig_dir, fast)
    return TestResult(
        f"{spec} test",
        len(rows),
        len(corpus),
        beam,
        ev.seconds,
        ev.bleu,
        ev.chrf,
        [rows[i] for i in _spaced(short, samples)],
        aligns,
        rows,
        [(b.bucket, b.n, b.bleu) for b in ev.by_length],
        default_no_repeat(loaded),
    )


def _alignments(
    loaded: Any,
    picks: Sequence[Sample],
    beam: int,
    length_penalty: float,
    fig_dir: str | Path,
    fast: bool,
) -> list[Alignment]:
    """Re-translate ``picks`` with attention and draw one heatmap each."""
    if not picks:
        return []
    done = translate_texts(
        loaded,
        [p.source for p in picks],
        beam=beam,
        length_penalty=length_penalty,
        need_weights=True,
        max_len_ratio=1.0 if fast else 1.5,  # 1.5 x + 10: the library's default limit
        max_len_offset=2 if fast else 10,
    )
    out = []
    for k, (pick, tr) in enumerate(zip(picks, done, strict=True)):
        if tr.attention is None:  # a model without attention (rnnencdec)
            continue
        path = Path(fig_dir) / f"alignment-{k + 1}.png"
        alignment_heatmap(tr.attention, tr.src_tokens, tr.out_tokens, path=path, title=pick.ref)
        out.append(Alignment(pick.ref, tr.src_tokens, tr.out_tokens, tr.attention, path))
    return out


def write_translations(test: TestResult, path: str | Path) -> Path:
    """Every translated test example as TSV: ref, source, reference, output (with a header)."""
    path = Path(path)

    def clean(text: str) -> str:
        return " ".join(text.split())  # no tabs or newlines inside a cell

    lines = ["ref\tsource\treference\toutput"]
    lines += [
        "\t".join(clean(x) for x in (r.ref, r.source, r.reference, r.output)) for r in test.rows
    ]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------- report


def quickstart_report(
    opts: Any,
    config: RunConfig,
    train: Mapping[str, Any],
    test: TestResult,
    out: Path,
    model_dir: Path,
) -> tuple[Path, Path]:
    """Write ``out/report.md`` and the self-contained ``out/report.html``; returns both paths."""
    model = config.model
    mtype = str(getattr(model, "type", "?"))
    if mtype == "transformer":
        arch = (
            f"Transformer, {model.enc_layers}+{model.dec_layers} layers, d {model.embed_dim}, "
            f"{model.num_heads} heads, ff {model.ff_dim}, {model.norm}-norm"
        )
        attn = "last decoder layer's cross attention, averaged over the heads"
    else:
        arch = f"{mtype}, {getattr(model, 'cell', '')} {getattr(model, 'hidden_dim', '')}".strip()
        attn = "the decoder's attention over the encoder states"
    data = config.data
    vocab = "joint" if data.joint_vocab else "separate"
    best = train.get("best") or {}
    facts = [
        ["what", "value"],
        ["corpus", data.corpus + (" (capped: --fast)" if data.max_train_examples else "")],
        ["model", f"{arch}; {int(train.get('parameters', 0)):,} parameters"],
        ["tokenizer", f"{data.tokenizer}, {vocab} vocabulary of {data.vocab_size}"],
        [
            "training",
            f"{train.get('steps', '?')} steps, {float(train.get('epochs', 0)):.2f} epochs in "
            f"{train.get('train_minutes', '?')} min incl. dev evaluations (limit "
            f"{config.train.max_minutes:g} min), stopped by "
            f"{STOPS.get(str(train.get('status')), train.get('status'))}; bf16 autocast "
            f"{'on' if train.get('bf16') else 'off'}",
        ],
        ["model dir", str(model_dir)],
        ["test translations", str(out / TRANSLATIONS)],
    ]
    if best:
        value = f"{float(best.get('value') or 0.0):.2f} at step {best.get('step')}"
        if best.get("averaged"):
            steps = best["averaged"]
            value += f" (the average of the weights at steps {', '.join(map(str, steps))})"
        facts.append([f"best dev {best.get('metric')}", value])
    for point in train.get("curve") or []:  # --curve: the models of the earlier budgets
        facts.append(
            [
                f"after {point['budget_minutes']:g} min",
                f"test BLEU {point.get('test_bleu', float('nan')):.2f}, chrF "
                f"{point.get('test_chrf', float('nan')):.2f} ({point['step']} steps; "
                f"{point['source']})",
            ]
        )
    scores = [
        ["metric", "score", "sacrebleu signature"],
        ["BLEU", f"{test.bleu.score:.2f}", test.bleu.signature],
        ["chrF", f"{test.chrf.score:.2f}", test.chrf.signature],
    ]
    table = [["verse", "source", "reference", "output"]]
    table += [[s.ref, s.source, s.reference, s.output] for s in test.samples]
    figs = [
        Figure(a.figure, f"example {k + 1} ({a.ref}): {attn}; source on top, output down the side")
        for k, a in enumerate(test.alignments)
    ]
    report = Report(
        f"dhian quickstart: {data.corpus}",
        [
            f"A {mtype} translator trained for {config.train.max_minutes:g} minutes, then scored "
            f"on the test split ({test.describe()}).",
        ],
        [
            Section("Setup", table=facts),
            Section("Test scores", [test.describe()], table=scores),
            Section("Sample translations", table=table),
            Section(
                "BLEU by source length",
                ["Test BLEU of the sentences in each source-length bucket (words)."],
                table=[["source words", "sentences", "BLEU"]]
                + [[b, str(n), "–" if v is None else f"{v:.2f}"] for b, n, v in test.by_length],
            ),
            Section(
                "Learning curves",
                ["Train and dev loss per step, and dev BLEU at each evaluation."],
                figures=[Figure(out / "curves.png", "learning curves (train/dev loss, dev BLEU)")],
            ),
            Section(
                "Alignments",
                [f"Attention of each output token over the source: {attn}. Bright = high weight."],
                figures=figs,
            ),
        ],
    )
    return write_report(report, out / "report.md", out / "report.html")


def format_summary(result: Any) -> str:
    """The console summary of a :class:`~dhian.apps.quickstart.run.QuickstartResult`: sample
    translations, test BLEU/chrF, where the report and the model are."""
    test = result.test
    lines = [f"\nSample translations ({test.split_name}):"]
    for s in test.samples:
        lines += [
            f"  [{s.ref}]",
            f"  source:    {s.source}",
            f"  reference: {s.reference}",
            f"  output:    {s.output}",
            "",
        ]
    for point in result.train.get("curve") or []:
        lines.append(
            f"after {point['budget_minutes']:g} min ({point['step']} steps): test BLEU "
            f"{point.get('test_bleu', float('nan')):.2f}  chrF {point.get('test_chrf', float('nan')):.2f}"
        )
    lines += [
        f"test BLEU {test.bleu.score:.2f}  chrF {test.chrf.score:.2f}  ({test.describe()})",
        f"  {test.bleu.signature}",
        f"  {test.chrf.signature}",
        f"report: {result.report_html}  (and {result.report_md.name})",
        f"model:  {result.model_dir}",
    ]
    return "\n".join(lines)
