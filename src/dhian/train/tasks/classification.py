"""The text-classification task (BERT fine-tuning, frozen BERT, the Keras-style classifier) and
the library evaluation of a trained classifier on any labelled split.

Owns :class:`ClassificationTask` (registered as ``classification``: ``model.type`` bert with
``model.task: classification``, or ``keras_classifier``): corpus → tokenizer (trained on the train
split, or the pretrained WordPiece of ``train.init_from`` / ``data.tokenizer_path``) → ``[CLS] x
[SEP]`` + type ids for bert, plain ids for keras_classifier → summed cross entropy over labels;
validation = dev loss, accuracy and macro-F1. The class names of the corpus become
``model.num_labels`` / ``model.labels`` of the saved config, so ``dhian classify`` prints them.
Also owns :func:`load_bert_init` (``init_from`` a HuggingFace BERT dir into a dhian BERT with a
head: the checkpoint's backbone under ``backbone.``) and :func:`evaluate_classification`
(accuracy, macro-F1, confusion matrix as Markdown + PNG for ``dhian evaluate``).
Notation: B batch, T length, C classes.
Imports: torch, :mod:`dhian.data`, :mod:`dhian.models.model_dir`, :mod:`dhian.interop` (lazily),
:mod:`dhian.metrics`, :mod:`dhian.viz.confusion`, :mod:`dhian.train`, :mod:`dhian.config`,
:mod:`dhian.errors`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dhian import metrics
from dhian.config import RunConfig
from dhian.data.batching import collate
from dhian.data.corpus import TextClassificationCorpus
from dhian.data.corpus_loader import load_corpus
from dhian.data.examples import Examples, encode_classification
from dhian.data.training_data import prepare_classification
from dhian.errors import ConfigError, DataError, ModelLoadError
from dhian.interop.hf_bert_names import task_of
from dhian.interop.hf_dirs import load_hf_dir
from dhian.models import model_dir as model_io
from dhian.models.families import model_types_of
from dhian.train.tasks.base import EvalResult, IteratorStream, LossTerms, Task
from dhian.train.warmstart import load_init_weights, resolve_init
from dhian.viz.confusion import confusion_markdown, confusion_plot

EVAL_BATCH_SIZE = 64


def model_max_len(model_cfg: Any) -> int:
    """Longest input (ids, specials included) a bert / keras_classifier config accepts."""
    return int(getattr(model_cfg, "max_positions", 0) or getattr(model_cfg, "max_len", 0))


def with_labels(config: RunConfig, names: Sequence[str]) -> RunConfig:
    """``config`` with ``model.num_labels`` / ``model.labels`` set to the corpus classes.

    ``model.labels`` given in the recipe must name the same classes in the same order.
    """
    model = config.model
    names = tuple(str(n) for n in names)
    if model.labels and tuple(model.labels) != names:
        raise ConfigError(
            f"model.labels {list(model.labels)} differ from the classes of the corpus "
            f"{list(names)}; remove model.labels (they are read from the data)"
        )
    if model.num_labels == len(names) and tuple(model.labels) == names:
        return config
    return dataclasses.replace(
        config, model=dataclasses.replace(model, num_labels=len(names), labels=names)
    )


def predict(
    model: torch.nn.Module, data: Examples, device: torch.device, limit: int = 0
) -> tuple[list[int], list[int], float]:
    """(predicted ids, gold ids, summed cross entropy) over the first ``limit`` examples of
    ``data`` (0 = all), run in length-sorted batches of :data:`EVAL_BATCH_SIZE`."""
    n = len(data) if limit <= 0 else min(limit, len(data))
    order = sorted(range(n), key=lambda i: len(data.src[i]))
    pred: dict[int, int] = {}
    gold: dict[int, int] = {}
    total = 0.0
    for start in range(0, n, EVAL_BATCH_SIZE):
        idx = order[start : start + EVAL_BATCH_SIZE]
        batch = collate(data, idx).to(device)
        assert batch.labels is not None
        logits = model(batch.src, batch.src_lengths, batch.type_ids).logits.float()  # (B, C)
        total += float(F.cross_entropy(logits, batch.labels, reduction="sum"))
        for i, p, g in zip(idx, logits.argmax(-1).tolist(), batch.labels.tolist(), strict=True):
            pred[i], gold[i] = int(p), int(g)
    return [pred[i] for i in range(n)], [gold[i] for i in range(n)], total


def load_bert_init(
    model: torch.nn.Module, path: str | Path, log: Callable[[str], None] = print
) -> list[str]:
    """``train.init_from`` for BERT models with a head; returns the names left as initialised.

    A dhian model dir loads by name (``backbone.*`` match). A HuggingFace BERT dir is imported
    as a bare backbone (any head it has is dropped, logged) and copied under ``backbone.``; a
    masked-LM model also takes the checkpoint's MLM head when it has one.
    """
    d = resolve_init(path)  # pretrained:NAME → its cached dir
    if not hasattr(model, "backbone") or (d / model_io.CONFIG).is_file():
        return load_init_weights(model, d, log)

    task = "mlm" if task_of(model) == "mlm" else "backbone"
    source = load_hf_dir(d, task=task, log=log).model.state_dict()
    if task == "backbone":
        source = {f"backbone.{k}": v for k, v in source.items()}
    own = model.state_dict()
    bad = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in source.items()
        if k in own and own[k].shape != v.shape
    ]
    if bad:
        raise ModelLoadError(
            f"weights in {d} do not fit this model: {bad[0]} (match model.embed_dim/layers/"
            "heads/ff_dim/max_positions to the checkpoint's config.json)"
        )
    result = model.load_state_dict(source, strict=False)
    missing, unused = list(result.missing_keys), list(result.unexpected_keys)
    if len(missing) >= len(own):
        raise ModelLoadError(f"no weight in {d} matches a parameter name of this model")
    log(
        f"init_from {d}: {len(missing)} tensors left as initialised"
        + (f" ({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''})" if missing else "")
        + (f", {len(unused)} unused ({', '.join(unused[:4])})" if unused else "")
    )
    return missing


class ClassificationTask(Task):
    """Sequence classification on a text + label corpus (``data.corpus``)."""

    name = "classification"
    model_types = model_types_of("encoder", "classifier")
    metrics = ("loss", "accuracy", "macro_f1")
    num_samples = 3

    @classmethod
    def fits(cls, model_cfg: Any) -> bool:
        mtype = getattr(model_cfg, "type", "")
        return mtype == "keras_classifier" or (
            mtype == "bert" and getattr(model_cfg, "task", "") == "classification"
        )

    @property
    def bert_inputs(self) -> bool:
        """``[CLS] x [SEP]`` + type ids (bert) rather than plain ids (keras_classifier)."""
        return str(self.config.model.type) == "bert"

    def setup(self, tokenizer_dir: Path | None) -> None:

        data = self.config.data
        if tokenizer_dir is not None:
            data = dataclasses.replace(data, tokenizer_path=str(tokenizer_dir))
        limit = model_max_len(self.config.model)
        if data.max_len <= 0 or data.max_len > limit:
            raise ConfigError(
                f"data.max_len={data.max_len} must be in 1..{limit}, the longest input of the "
                "model (model.max_positions / model.max_len)"
            )
        prepared = prepare_classification(data, bert=self.bert_inputs)
        if len(prepared.train) == 0:
            raise DataError(f"the train split of {data.corpus!r} has no usable example")
        if len(prepared.dev) == 0:
            raise DataError(f"the dev split of {data.corpus!r} is empty; validation needs one")
        self.config = with_labels(self.config, prepared.label_names)
        tok = prepared.tok
        self.tokenizers = {"src": tok, "tgt": tok}
        self.train_data, self.dev_data = prepared.train, prepared.dev
        self.dev_texts = [t for t, _ in prepared.dev_corpus.examples]
        self.label_names = list(self.config.model.label_names)
        self.log(
            f"data: train {self.train_data.report()}; dev {self.dev_data.report()}; "
            f"{len(self.label_names)} classes ({', '.join(self.label_names)}); "
            f"{tok.kind} vocabulary of {tok.vocab_size}"
        )

    def resume_config(self, saved: RunConfig) -> RunConfig:
        model = self.config.model
        labels = tuple(getattr(saved.model, "labels", ()))
        num = int(getattr(saved.model, "num_labels", model.num_labels))
        return dataclasses.replace(
            self.config, model=dataclasses.replace(model, num_labels=num, labels=labels)
        )

    def build_kwargs(self) -> dict[str, Any]:
        return self.shared_vocab_kwargs("src")

    def init_weights(self, model: torch.nn.Module, path: str) -> None:
        load_bert_init(model, path, self.log)

    def train_stream(self, seed: int) -> IteratorStream:
        return IteratorStream(self.batches(self.train_data, seed, shuffle=True))

    def count(self, batch: Any) -> int:
        return len(batch)

    def loss(self, model: torch.nn.Module, batch: Any, label_smoothing: float) -> LossTerms:
        logits = model(batch.src, batch.src_lengths, batch.type_ids).logits  # (B, C)
        loss = F.cross_entropy(
            logits.float(), batch.labels, reduction="sum", label_smoothing=label_smoothing
        )
        return LossTerms(loss, len(batch))

    @torch.no_grad()
    def evaluate(
        self, model: torch.nn.Module, device: torch.device, beam: int, max_examples: int
    ) -> EvalResult:
        pred, gold, total = predict(model, self.dev_data, device, max_examples)
        classes = range(len(self.label_names))
        result = {
            "loss": total / max(len(gold), 1),
            "accuracy": metrics.accuracy(pred, gold),
            "macro_f1": metrics.macro_f1(pred, gold, classes),
        }
        names = self.label_names
        samples = [
            (self.dev_texts[self.dev_data.ids[i]], names[gold[i]], names[pred[i]])
            for i in range(min(self.num_samples, len(gold)))
        ]
        return EvalResult(result, {}, samples)


# --------------------------------------------------------------------------- evaluation


def _label_map(corpus_names: Sequence[str], model_names: Sequence[str], spec: str) -> list[int]:
    """Corpus label id → model class id, matched by name (or by position when the model only
    knows its classes as "0", "1", ...)."""
    index = {n: i for i, n in enumerate(model_names)}
    if all(n in index for n in corpus_names):
        return [index[n] for n in corpus_names]
    numbered = list(model_names) == [str(i) for i in range(len(model_names))]
    if numbered and len(corpus_names) <= len(model_names):
        return list(range(len(corpus_names)))
    unknown = [n for n in corpus_names if n not in index]
    raise DataError(
        f"the classes of {spec!r} ({', '.join(unknown)}) are not classes of the model "
        f"({', '.join(model_names)}); evaluate on data labelled like the training corpus"
    )


def evaluate_classification(
    loaded: model_io.LoadedModel,
    corpus_spec: str,
    split: str = "test",
    out_dir: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    max_examples: int = 0,
) -> dict[str, Any]:
    """Score a trained classifier on ``split`` of ``corpus_spec``.

    Returns ``{"split", "corpus", "examples", "loss", "accuracy", "macro_f1", "labels",
    "confusion" (C×C counts, rows gold, columns predicted), "markdown", "files"}``. With
    ``out_dir`` it writes ``confusion.md`` (the Markdown table), ``confusion.png`` and
    ``metrics.json`` there (listed in ``files``).
    """
    model, cfg = loaded.model, loaded.config
    names = [str(n) for n in getattr(model, "labels", ()) or cfg.model.label_names]
    corpus = load_corpus(
        corpus_spec,
        split,
        text_column=cfg.data.text_column,
        label_column=cfg.data.label_column,
    )
    if not isinstance(corpus, TextClassificationCorpus):
        raise DataError(
            f"corpus {corpus_spec!r} is {corpus.kind}; classification needs text + label"
        )
    examples = corpus.examples[:max_examples] if max_examples > 0 else corpus.examples
    if not examples:
        raise DataError(f"the {split} split of {corpus_spec!r} is empty")
    to_model = _label_map(corpus.label_names, names, corpus_spec)
    bert = str(getattr(model, "input_style", "bert")) == "bert"
    limit = model_max_len(cfg.model)
    max_len = min(cfg.data.max_len, limit) if cfg.data.max_len > 0 else limit
    data = encode_classification(
        [(text, to_model[label]) for text, label in examples],
        loaded.tokenizers["src"],
        max_len,
        "truncate",
        bert,
        f"{corpus_spec} {split}",
    )
    dev = torch.device(device)
    was_training = model.training
    model.to(dev).eval()
    try:
        with torch.no_grad():
            pred, gold, total = predict(model, data, dev)
    finally:
        model.train(was_training)
    classes = range(len(names))
    matrix = metrics.confusion_matrix(pred, gold, len(names))
    table = confusion_markdown(matrix, names)
    result: dict[str, Any] = {
        "corpus": corpus_spec,
        "split": split,
        "examples": len(gold),
        "truncated": data.truncated,
        "loss": total / len(gold),
        "accuracy": metrics.accuracy(pred, gold),
        "macro_f1": metrics.macro_f1(pred, gold, classes),
        "labels": names,
        "confusion": matrix,
        "markdown": table,
        "files": {},
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        title = f"{corpus_spec} {split}: accuracy {result['accuracy']:.3f}"
        (out / "confusion.md").write_text(table, encoding="utf-8")
        confusion_plot(matrix, names, out / "confusion.png", title=title)
        scores = {k: v for k, v in result.items() if k not in ("markdown", "files")}
        (out / "metrics.json").write_text(json.dumps(scores, indent=2) + "\n", encoding="utf-8")
        result["files"] = {
            "markdown": str(out / "confusion.md"),
            "png": str(out / "confusion.png"),
            "metrics": str(out / "metrics.json"),
        }
    return result
