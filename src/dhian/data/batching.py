"""Batches: token-budget / fixed-size batching with length bucketing, padding, a resumable iterator.

Owns :class:`Batch` (the contract in docs/design.md), :func:`plan_batches` (which examples go
together), :func:`collate` (padding, BOS/EOS, MLM masking) and :class:`BatchIterator`, whose
position ``{"epoch", "index", "seed"}`` is saved in checkpoints so a resumed run sees exactly
the batches an uninterrupted run would. Notation: B batch, Ts/Tt source/target length.
Imports: torch, :mod:`dhian.data.examples`, :mod:`dhian.data.mlm`, :mod:`dhian.errors`.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from dhian.data.examples import Examples
from dhian.data.mlm import IGNORE_INDEX, mask_tokens
from dhian.errors import ConfigError


@dataclasses.dataclass
class Batch:
    """A padded batch.

    ``src`` (B, Ts) long padded with ``pad_id``; ``src_lengths`` (B,); ``tgt_in`` (B, Tt) =
    BOS y1..yn; ``tgt_out`` (B, Tt) = y1..yn EOS padded with ``pad_id`` (language modelling:
    ``src`` = block[:-1], ``tgt_out`` = block[1:]; MLM: ``src`` = masked input, ``tgt_out`` =
    original ids at chosen positions and -100 elsewhere; token classification: ``tgt_out`` =
    tag ids, -100 on ignored positions and padding); ``labels`` (B,) for classification, (B, 2)
    gold start/end tokens for extractive QA;
    ``type_ids`` (B, Ts) BERT segment ids when built; ``ids`` example indices in the split.
    ``ignore_index`` is the ``tgt_out`` value a loss must ignore (``pad_id``, or -100 for MLM).
    """

    src: torch.Tensor
    src_lengths: torch.Tensor
    tgt_in: torch.Tensor | None = None
    tgt_out: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    ids: list[int] = dataclasses.field(default_factory=list)
    type_ids: torch.Tensor | None = None
    pad_id: int = 0
    ignore_index: int = 0

    @property
    def src_mask(self) -> torch.Tensor:
        """(B, Ts) bool, True where ``src`` holds a real token."""
        positions = torch.arange(self.src.size(1), device=self.src.device)
        return positions.unsqueeze(0) < self.src_lengths.to(self.src.device).unsqueeze(1)

    @property
    def num_tokens(self) -> int:
        """Target tokens counted by the loss, or source tokens when there is no target."""
        if self.tgt_out is not None:
            return int((self.tgt_out != self.ignore_index).sum())
        return int(self.src_lengths.sum())

    def __len__(self) -> int:
        return int(self.src.size(0))

    def to(self, device: torch.device | str) -> Batch:
        """A copy with every tensor moved to ``device`` (non-blocking)."""
        moved: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            moved[f.name] = v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        return Batch(**moved)


def pad(seqs: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """(B, T) long tensor of ``seqs`` right-padded with ``pad_id`` to the longest (T ≥ 1)."""
    width = max([len(s) for s in seqs] + [1])
    out = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def collate(
    data: Examples, indices: Sequence[int], generator: torch.Generator | None = None
) -> Batch:
    """Build the :class:`Batch` of ``data`` examples at ``indices`` (order kept)."""
    ids = [data.ids[i] for i in indices]
    if data.task == "lm":
        blocks = [data.src[i] for i in indices]
        src = pad([b[:-1] for b in blocks], data.pad_id)  # (B, T)
        tgt = pad([b[1:] for b in blocks], data.pad_id)  # (B, T) shifted by one
        lengths = torch.tensor([len(b) - 1 for b in blocks], dtype=torch.long)
        return Batch(
            src, lengths, tgt_out=tgt, ids=ids, pad_id=data.pad_id, ignore_index=data.pad_id
        )
    srcs = [data.src[i] for i in indices]
    src = pad(srcs, data.pad_id)  # (B, Ts)
    lengths = torch.tensor([len(s) for s in srcs], dtype=torch.long)
    if data.task == "seq2seq":
        assert data.tgt is not None
        tgts = [data.tgt[i] for i in indices]
        tgt_in = pad([[data.bos_id, *t] for t in tgts], data.pad_id)  # (B, Tt)
        tgt_out = pad([[*t, data.eos_id] for t in tgts], data.pad_id)  # (B, Tt)
        return Batch(
            src, lengths, tgt_in, tgt_out, ids=ids, pad_id=data.pad_id, ignore_index=data.pad_id
        )
    if data.task == "tag":
        assert data.tgt is not None
        tags = pad([data.tgt[i] for i in indices], IGNORE_INDEX)  # (B, Ts)
        types = pad([data.type_ids[i] for i in indices], 0) if data.type_ids is not None else None
        return Batch(
            src,
            lengths,
            tgt_out=tags,
            ids=ids,
            type_ids=types,
            pad_id=data.pad_id,
            ignore_index=IGNORE_INDEX,
        )
    if data.task == "span":
        assert data.spans is not None and data.type_ids is not None
        spans = torch.tensor([data.spans[i] for i in indices], dtype=torch.long)  # (B, 2)
        types = pad([data.type_ids[i] for i in indices], 0)  # (B, Ts)
        return Batch(src, lengths, labels=spans, ids=ids, type_ids=types, pad_id=data.pad_id)
    if data.task == "classify":
        assert data.labels is not None
        labels = torch.tensor([data.labels[i] for i in indices], dtype=torch.long)
        types = pad([data.type_ids[i] for i in indices], 0) if data.type_ids is not None else None
        return Batch(src, lengths, labels=labels, ids=ids, type_ids=types, pad_id=data.pad_id)
    # mlm
    special = torch.isin(src, torch.tensor(data.special_ids, dtype=torch.long))
    special |= torch.arange(src.size(1)).unsqueeze(0) >= lengths.unsqueeze(1)
    contiguous = tuple(range(len(data.special_ids))) == data.special_ids
    inputs, labels = mask_tokens(
        src,
        special,
        data.vocab_size,
        data.mask_id,
        data.mlm_prob,
        generator,
        random_low=len(data.special_ids) if contiguous else 0,
    )
    return Batch(
        inputs, lengths, tgt_out=labels, ids=ids, pad_id=data.pad_id, ignore_index=IGNORE_INDEX
    )


def plan_batches(
    lengths: Sequence[int],
    max_tokens: int = 0,
    batch_size: int = 0,
    shuffle: bool = True,
    rng: random.Random | None = None,
    bucket: bool = True,
) -> list[list[int]]:
    """Group example indices into batches.

    With ``max_tokens`` > 0 a batch's padded size ``B * max(lengths in batch)`` never exceeds it
    (``batch_size`` > 0 then also caps B); otherwise batches hold ``batch_size`` examples.
    ``bucket`` sorts by length (ties broken randomly) so batches hold similar lengths; with
    ``shuffle`` the batch order (and tie order) is drawn from ``rng``.
    """
    if max_tokens <= 0 and batch_size <= 0:
        raise ConfigError("set train.max_tokens > 0 (token budget) or train.batch_size > 0")
    rng = rng or random.Random(0)
    order = list(range(len(lengths)))
    if shuffle:
        rng.shuffle(order)
    if bucket:
        order.sort(key=lambda i: lengths[i])  # stable: ties keep the shuffled order
    batches: list[list[int]] = []
    cur: list[int] = []
    cur_max = 0
    for i in order:
        n = max(lengths[i], 1)
        if max_tokens > 0 and n > max_tokens:
            raise ConfigError(
                f"an example has {n} tokens > train.max_tokens {max_tokens}; raise max_tokens "
                "or lower data.max_len"
            )
        new_max = max(cur_max, n)
        full = (max_tokens > 0 and (len(cur) + 1) * new_max > max_tokens) or (
            batch_size > 0 and len(cur) >= batch_size
        )
        if cur and full:
            batches.append(cur)
            cur, new_max = [], n
        cur.append(i)
        cur_max = new_max
    if cur:
        batches.append(cur)
    if shuffle:
        rng.shuffle(batches)
    return batches


class BatchIterator:
    """Resumable, deterministic batches over :class:`Examples`.

    Epoch ``e`` uses ``random.Random(seed * 1_000_003 + e)`` for its plan and a torch generator
    seeded per batch for MLM masking, so batches depend only on (seed, epoch, index).
    Iterating yields the rest of the current epoch and then moves to the next epoch;
    :meth:`state_dict` after consuming k batches of epoch e is ``{"epoch": e, "index": k, ...}``.
    """

    def __init__(
        self,
        data: Examples,
        max_tokens: int = 0,
        batch_size: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        bucket: bool = True,
    ) -> None:
        self.data = data
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.bucket = bucket
        self.epoch = 0
        self.index = 0
        self._lengths = data.cost_lengths()
        self._plan_epoch = -1
        self._plan: list[list[int]] = []
        plan_batches(self._lengths, max_tokens, batch_size, False, None, bucket)  # validate early

    def plan(self, epoch: int) -> list[list[int]]:
        """The list of index batches of ``epoch`` (cached for the current epoch)."""
        if epoch != self._plan_epoch:
            rng = random.Random(self.seed * 1_000_003 + epoch)
            self._plan = plan_batches(
                self._lengths, self.max_tokens, self.batch_size, self.shuffle, rng, self.bucket
            )
            self._plan_epoch = epoch
        return self._plan

    def __len__(self) -> int:
        """Batches per epoch."""
        return len(self.plan(self.epoch))

    def __iter__(self) -> Iterator[Batch]:
        plan = self.plan(self.epoch)
        while self.index < len(plan):
            k = self.index
            gen = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 100_003 + k)
            batch = collate(self.data, plan[k], gen)
            self.index = k + 1
            yield batch
        self.epoch += 1
        self.index = 0

    def forever(self) -> Iterator[Batch]:
        """Endless batches, epoch after epoch (the position keeps advancing)."""
        if len(self.data) == 0:
            raise ConfigError("cannot iterate over an empty split; check the corpus and max_len")
        while True:
            yield from self

    def state_dict(self) -> dict[str, int]:
        """The position: ``{"epoch", "index", "seed"}`` (small; store it in a checkpoint)."""
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Resume from a :meth:`state_dict`; the next batch is the one after the saved position."""
        if "seed" in state and int(state["seed"]) != self.seed:
            raise ConfigError(
                f"data position was saved with seed {state['seed']} but this run uses seed "
                f"{self.seed}; resume with the same train.seed"
            )
        self.epoch = int(state["epoch"])
        self.index = int(state["index"])
