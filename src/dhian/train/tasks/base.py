"""Tasks: what the model-agnostic engine asks of a kind of training (translation, later
classification / LM / MLM).

Owns the :class:`Task` interface, the :class:`TrainStream` protocol (endless, resumable batches),
:class:`IteratorStream` (adapts :class:`dhian.data.batching.BatchIterator` or anything with
``epoch``/``index``/``__len__``/``__iter__``/``state_dict``), :class:`LossTerms` /
:class:`EvalResult` and the label-smoothed token loss. Helpers for tasks:
:meth:`Task.batches` (token-bucketed batches) and :meth:`Task.shared_vocab_kwargs`. A new task
subclasses :class:`Task`, sets ``name``/``model_types``/``metrics`` and is added to the list in
:mod:`dhian.train.tasks`; the trainer needs nothing else.
Imports: stdlib, torch, :mod:`dhian.config`, :mod:`dhian.errors`, :mod:`dhian.data.batching`,
:mod:`dhian.models.families`, :mod:`dhian.nn.cross_entropy`, :mod:`dhian.train.warmstart`.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch

from dhian.config import RunConfig
from dhian.data.batching import BatchIterator
from dhian.errors import ConfigError
from dhian.models.families import build_model
from dhian.nn.cross_entropy import smoothed_cross_entropy
from dhian.train.warmstart import load_init_weights

Log = Callable[[str], None]


@dataclasses.dataclass
class LossTerms:
    """``loss``: scalar tensor, the SUM of the objective over ``count`` targets (tokens or
    examples); the engine divides by the count of the whole accumulation group."""

    loss: torch.Tensor
    count: int


@dataclasses.dataclass
class EvalResult:
    """``metrics`` (names in :attr:`Task.metrics`, e.g. loss, ppl, bleu, chrf), ``info`` (strings
    such as sacrebleu signatures) and a few ``samples`` (source, reference, hypothesis)."""

    metrics: dict[str, float]
    info: dict[str, str] = dataclasses.field(default_factory=dict)
    samples: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)


class TrainStream(Protocol):
    """Endless training batches whose position can be saved and restored exactly."""

    def __next__(self) -> Any: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...

    @property
    def epochs_done(self) -> float:
        """Epochs consumed so far, fractional (1.5 = halfway through the second epoch)."""
        ...


class IteratorStream:
    """A :class:`TrainStream` over a resumable epoch iterator (e.g. ``BatchIterator``).

    The wrapped object iterates over the rest of its current epoch and then advances ``epoch``;
    ``state_dict``/``load_state_dict`` save and restore its position.
    """

    def __init__(self, iterator: Any) -> None:
        self.iterator = iterator
        self._gen: Iterator[Any] | None = None

    def __iter__(self) -> IteratorStream:
        return self

    def __next__(self) -> Any:
        for _ in range(2):  # an exhausted epoch, then a fresh one
            if self._gen is None:
                self._gen = iter(self.iterator)
            try:
                return next(self._gen)
            except StopIteration:
                self._gen = None
        raise ConfigError("the training split yields no batches; check the corpus and max_len")

    def state_dict(self) -> dict[str, Any]:
        return dict(self.iterator.state_dict())

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.iterator.load_state_dict(state)
        self._gen = None

    @property
    def epochs_done(self) -> float:
        n = len(self.iterator)
        return float(self.iterator.epoch) + (self.iterator.index / n if n else 0.0)


def token_loss(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int, label_smoothing: float = 0.0
) -> LossTerms:
    """Summed (label-smoothed) cross entropy of ``logits`` (B, T, V) vs ``target`` (B, T).

    Positions equal to ``ignore_index`` count for nothing (neither the NLL nor the smoothing
    term). Computed in float32 even under bf16 autocast, in cache-sized chunks of rows on the
    CPU (:func:`dhian.nn.cross_entropy.smoothed_cross_entropy`: the same value as
    ``F.cross_entropy`` without the (B·T, V) float32 log-probabilities).
    """
    v = logits.size(-1)
    loss = smoothed_cross_entropy(
        logits.reshape(-1, v), target.reshape(-1), ignore_index, label_smoothing
    )  # (B, T, V) -> (B·T, V)
    return LossTerms(loss, int((target != ignore_index).sum()))


class Task(abc.ABC):
    """One kind of training. The engine calls, in order: :meth:`setup` (data + tokenizers),
    :meth:`build_model`, :meth:`train_stream`; then per step :meth:`count` and :meth:`loss`, and
    :meth:`evaluate` every ``eval_every`` steps."""

    name: ClassVar[str] = ""
    model_types: ClassVar[tuple[str, ...]] = ()
    #: metric names :meth:`evaluate` returns (early stopping picks one of them)
    metrics: ClassVar[tuple[str, ...]] = ("loss",)

    def __init__(self, config: RunConfig, log: Log = print) -> None:
        self.config = config
        self.log = log
        self.tokenizers: dict[str, Any] = {}

    @abc.abstractmethod
    def setup(self, tokenizer_dir: Path | None) -> None:
        """Read the data and set :attr:`tokenizers` (``{"src": tok, "tgt": tok}``): loaded from
        ``tokenizer_dir`` when given (resume, ``init_from``), else built as ``data`` says (trained
        on the train split, or ``data.tokenizer_path``)."""

    @abc.abstractmethod
    def build_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``build_model(model_cfg, **kwargs)`` besides the config (vocab
        sizes, special ids...); saved in model dirs so loading can rebuild the model."""

    def build_model(self) -> torch.nn.Module:
        """A freshly initialised model (the engine seeds the RNGs before calling this)."""
        return build_model(self.config.model, **self.build_kwargs())

    @abc.abstractmethod
    def train_stream(self, seed: int) -> TrainStream:
        """Endless training batches in an order fixed by ``seed``."""

    def shared_vocab_kwargs(self, side: str = "src", bos_eos: bool = False) -> dict[str, Any]:
        """:meth:`build_kwargs` of a model whose input and output share the tokenizer
        ``tokenizers[side]``: both vocab sizes V, the PAD id and, with ``bos_eos`` (generation),
        the BOS and EOS ids."""
        tok = self.tokenizers[side]
        kwargs = {
            "src_vocab_size": int(tok.vocab_size),
            "tgt_vocab_size": int(tok.vocab_size),
            "pad_id": int(tok.pad_id),
        }
        if bos_eos:
            kwargs.update(bos_id=int(tok.bos_id), eos_id=int(tok.eos_id))
        return kwargs

    def batches(self, data: Any, seed: int, shuffle: bool) -> Any:
        """``data`` (:class:`~dhian.data.examples.Examples`) as a
        :class:`~dhian.data.batching.BatchIterator` of ``train.max_tokens`` tokens /
        ``train.batch_size`` rows per batch, shuffled with ``seed`` when ``shuffle``."""
        t = self.config.train
        return BatchIterator(data, t.max_tokens, t.batch_size, shuffle=shuffle, seed=seed)

    def count(self, batch: Any) -> int:
        """How many targets ``batch`` contributes to the loss normaliser (default: tokens)."""
        return int(batch.num_tokens)

    @abc.abstractmethod
    def loss(self, model: torch.nn.Module, batch: Any, label_smoothing: float) -> LossTerms:
        """The summed training objective of ``batch`` (already on the model's device)."""

    @abc.abstractmethod
    def evaluate(
        self, model: torch.nn.Module, device: torch.device, beam: int, max_examples: int
    ) -> EvalResult:
        """Dev metrics (model in eval mode, under ``no_grad``)."""

    @property
    def kind(self) -> str:
        """Saved in model dirs as the task a model was trained for."""
        return self.name

    @classmethod
    def fits(cls, model_cfg: Any) -> bool:
        """Whether this task can train a model of config ``model_cfg`` (default: its type)."""
        return str(getattr(model_cfg, "type", "")) in cls.model_types

    def init_weights(self, model: torch.nn.Module, path: str) -> None:
        """``train.init_from``: copy the weights of the model dir ``path`` into ``model``."""
        load_init_weights(model, path, self.log)

    def resume_config(self, saved: RunConfig) -> RunConfig:
        """The config a resumed run continues with, given the checkpoint's ``saved`` one
        (default: this task's; a task that fills model fields from the data at :meth:`setup`,
        e.g. class labels, takes them from ``saved``)."""
        return self.config
