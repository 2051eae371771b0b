"""Batching: token budgets, bucketing, exact resume, padding/masks, length policy, LM packing."""

from __future__ import annotations

import random

import pytest
import torch

from dhian.data.batching import Batch, BatchIterator, collate, pad, plan_batches
from dhian.data.examples import (
    Examples,
    encode_classification,
    encode_parallel,
    pack_lm,
    pack_mlm,
)
from dhian.errors import ConfigError, DataError
from dhian.text import Tokenizer, train_tokenizer

WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "omicron",
]


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


@pytest.fixture(scope="module")
def pairs() -> list[tuple[str, str]]:
    rng = random.Random(0)
    return [
        (_sentence(rng, rng.randint(1, 30)), _sentence(rng, rng.randint(1, 25))) for _ in range(300)
    ]


@pytest.fixture(scope="module")
def tok(pairs: list[tuple[str, str]]) -> Tokenizer:
    return train_tokenizer("bpe", [t for p in pairs for t in p], vocab_size=200, min_frequency=1)


@pytest.fixture(scope="module")
def data(pairs: list[tuple[str, str]], tok: Tokenizer) -> Examples:
    return encode_parallel(pairs, tok, tok, max_len=64)


def _sig(batch: Batch) -> tuple[tuple[int, ...], bytes]:
    assert batch.tgt_out is not None
    return tuple(batch.ids), batch.src.numpy().tobytes() + batch.tgt_out.numpy().tobytes()


@pytest.mark.parametrize("max_tokens", [64, 200, 1000])
def test_batches_never_exceed_max_tokens(data: Examples, max_tokens: int) -> None:
    it = BatchIterator(data, max_tokens=max_tokens, seed=1)
    seen: list[int] = []
    for batch in it:
        assert batch.tgt_in is not None and batch.tgt_out is not None
        padded = len(batch) * max(batch.src.size(1), batch.tgt_in.size(1))
        assert padded <= max_tokens
        seen += batch.ids
    assert sorted(seen) == sorted(data.ids)  # every example exactly once per epoch


def test_bucketing_reduces_padding(data: Examples) -> None:
    lengths = data.cost_lengths()

    def waste(bucket: bool) -> int:
        plan = plan_batches(lengths, batch_size=16, rng=random.Random(0), bucket=bucket)
        return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in plan)

    assert waste(True) < waste(False) / 3


def test_fixed_batch_size_mode(data: Examples) -> None:
    it = BatchIterator(data, batch_size=32, seed=5, bucket=False)
    sizes = [len(b) for b in it]
    assert sizes.count(32) == len(data) // 32 and sum(sizes) == len(data)


def test_same_seed_same_batches_other_seed_differs(data: Examples) -> None:
    a = [_sig(b) for b in BatchIterator(data, max_tokens=300, seed=7)]
    b = [_sig(b) for b in BatchIterator(data, max_tokens=300, seed=7)]
    c = [_sig(b) for b in BatchIterator(data, max_tokens=300, seed=8)]
    assert a == b
    assert a != c


def test_epochs_reshuffle(data: Examples) -> None:
    it = BatchIterator(data, max_tokens=300, seed=7)
    first = [b.ids for b in it]
    second = [b.ids for b in it]
    assert it.state_dict()["epoch"] == 2
    assert first != second


@pytest.mark.parametrize("stop_at", [0, 1, 5, 17])
def test_resume_yields_exactly_the_same_batches(data: Examples, stop_at: int) -> None:
    total = 2 * len(BatchIterator(data, max_tokens=256, seed=3)) + 3
    reference = BatchIterator(data, max_tokens=256, seed=3).forever()
    expected = [_sig(next(reference)) for _ in range(total)]

    first = BatchIterator(data, max_tokens=256, seed=3)
    stream = first.forever()
    got = [_sig(next(stream)) for _ in range(stop_at)]
    state = dict(first.state_dict())  # what a checkpoint stores
    resumed = BatchIterator(data, max_tokens=256, seed=3)
    resumed.load_state_dict(state)
    stream = resumed.forever()
    got += [_sig(next(stream)) for _ in range(total - stop_at)]
    assert got == expected


def test_resume_with_other_seed_is_refused(data: Examples) -> None:
    it = BatchIterator(data, max_tokens=256, seed=3)
    with pytest.raises(ConfigError, match="seed 3 but this run uses seed 4"):
        BatchIterator(data, max_tokens=256, seed=4).load_state_dict(it.state_dict())


def test_collate_seq2seq_contract(data: Examples, tok: Tokenizer) -> None:
    batch = collate(data, [0, 1, 2])
    assert batch.tgt_in is not None and batch.tgt_out is not None
    for row in range(3):
        assert data.tgt is not None
        src, tgt = data.src[row], data.tgt[row]
        n = len(tgt)
        assert batch.src[row, : len(src)].tolist() == src
        assert batch.src[row, len(src) :].eq(tok.pad_id).all()
        assert batch.tgt_in[row, : n + 1].tolist() == [tok.bos_id, *tgt]
        assert batch.tgt_out[row, : n + 1].tolist() == [*tgt, tok.eos_id]
        assert batch.tgt_out[row, n + 1 :].eq(tok.pad_id).all()
        assert batch.src_mask[row].tolist() == [True] * len(src) + [False] * (
            batch.src.size(1) - len(src)
        )
    assert batch.src_lengths.tolist() == [len(data.src[i]) for i in range(3)]
    assert data.tgt is not None
    assert batch.num_tokens == sum(len(data.tgt[i]) + 1 for i in range(3))
    assert batch.ids == [0, 1, 2]
    moved = batch.to("cpu")
    assert torch.equal(moved.src, batch.src) and moved.ids == batch.ids


def test_too_long_policies(pairs: list[tuple[str, str]], tok: Tokenizer) -> None:
    lens = [len(tok.encode(s)) for s, _ in pairs]
    tlens = [len(tok.encode(t)) for _, t in pairs]
    limit = 12
    n_long = sum(1 for a, b in zip(lens, tlens, strict=True) if a > limit or b > limit - 1)
    skip = encode_parallel(pairs, tok, tok, max_len=limit, too_long="skip")
    assert skip.skipped == n_long and len(skip) == len(pairs) - n_long
    assert f"{n_long} skipped" in skip.report()
    trunc = encode_parallel(pairs, tok, tok, max_len=limit, too_long="truncate")
    assert len(trunc) == len(pairs) and trunc.truncated == n_long
    assert max(len(s) for s in trunc.src) <= limit
    assert trunc.tgt is not None and max(len(t) + 1 for t in trunc.tgt) <= limit
    with pytest.raises(DataError, match=r"example \d+ (source|target) has \d+ tokens > limit"):
        encode_parallel(pairs, tok, tok, max_len=limit, too_long="error")
    with pytest.raises(ConfigError, match="too_long must be one of"):
        encode_parallel(pairs, tok, tok, max_len=limit, too_long="drop")


def test_src_eos_kept_after_truncation(pairs: list[tuple[str, str]], tok: Tokenizer) -> None:
    ex = encode_parallel(pairs, tok, tok, max_len=8, too_long="truncate", src_eos=True)
    assert all(s[-1] == tok.eos_id and len(s) <= 8 for s in ex.src)


def test_example_longer_than_budget_is_a_config_error(data: Examples) -> None:
    with pytest.raises(ConfigError, match=r"> train\.max_tokens 5"):
        BatchIterator(data, max_tokens=5)
    with pytest.raises(ConfigError, match="max_tokens > 0"):
        BatchIterator(data)


def test_classification_collate(tok: Tokenizer) -> None:
    examples = [("alpha beta", 1), ("gamma", 0), ("delta epsilon zeta", 2)]
    ex = encode_classification(examples, tok, max_len=16, bert=True)
    batch = collate(ex, [0, 1, 2])
    assert batch.labels is not None and batch.labels.tolist() == [1, 0, 2]
    assert batch.src[:, 0].eq(tok.cls_id).all()
    for row in range(3):
        n = int(batch.src_lengths[row])
        assert int(batch.src[row, n - 1]) == tok.sep_id
    assert batch.type_ids is not None and batch.type_ids.shape == batch.src.shape
    assert batch.tgt_out is None and batch.num_tokens == int(batch.src_lengths.sum())


def test_lm_packing_covers_stream_once(tok: Tokenizer) -> None:
    docs = [tok.encode(_sentence(random.Random(i), 5 + i)) for i in range(20)]
    stream = [t for d in docs for t in [*d, tok.eos_id]]
    ex = pack_lm(docs, block_size=16, eot_id=tok.eos_id)
    targets: list[int] = []
    it = BatchIterator(ex, batch_size=4, shuffle=False, bucket=False)
    for batch in it:
        assert batch.tgt_out is not None
        assert batch.src.size(1) <= 16
        for row in range(len(batch)):
            n = int(batch.src_lengths[row])
            assert torch.equal(batch.src[row, 1:n], batch.tgt_out[row, : n - 1])  # shifted by one
            targets += batch.tgt_out[row, :n].tolist()
    assert targets == stream[1:]  # every id but the first is a target exactly once, in order
    assert stream.count(tok.eos_id) == len(docs)


def test_mlm_collate_masks_reproducibly(tok: Tokenizer) -> None:
    docs = [tok.encode(_sentence(random.Random(i), 40)) for i in range(30)]
    ex = pack_mlm(docs, tok, block_size=32)
    assert all(b[0] == tok.cls_id and b[-1] == tok.sep_id and len(b) <= 32 for b in ex.src)

    def masked(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        for batch in BatchIterator(ex, batch_size=8, seed=seed):
            assert batch.tgt_out is not None
            out.append((batch.src.clone(), batch.tgt_out.clone()))
        return out

    a, b = masked(2), masked(2)
    assert all(
        torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b, strict=True)
    )
    batch = next(iter(BatchIterator(ex, batch_size=8, seed=2)))
    assert batch.ignore_index == -100
    assert batch.tgt_out is not None
    chosen = torch.ne(batch.tgt_out, -100)
    assert chosen.any()
    assert not torch.isin(batch.tgt_out[chosen], torch.tensor(sorted(tok.special_ids))).any()
    assert batch.num_tokens == int(chosen.sum())


def test_pad_helper() -> None:
    assert pad([[1, 2, 3], [4]], 0).tolist() == [[1, 2, 3], [4, 0, 0]]
    assert pad([[]], 9).shape == (1, 1)
