"""Data-parallel training: sharding covers every batch once, and a real 2-process ``torchrun``
(gloo, CPU) run equals one process with the doubled batch, stops cleanly on SIGTERM and resumes
with one process."""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dhian.config import load_run_config
from dhian.data.batching import BatchIterator
from dhian.data.examples import Examples
from dhian.errors import ConfigError
from dhian.train import checkpoint as ckpt
from dhian.train.distributed import ShardedStream, World
from dhian.train.tasks import IteratorStream
from dhian.train.trainer import Trainer
from helpers.corpus import recipe
from helpers.training import quiet_trainer, rows, wait_for, weights


def examples(n: int, seed: int = 3) -> Examples:
    rng = random.Random(seed)
    src = [[5] * rng.randint(1, 9) for _ in range(n)]
    tgt = [[6] * rng.randint(1, 9) for _ in range(n)]
    return Examples("seq2seq", src, list(range(n)), tgt=tgt)


def stream(data: Examples) -> IteratorStream:
    return IteratorStream(BatchIterator(data, max_tokens=24, shuffle=True, seed=11))


@pytest.mark.parametrize(("world", "accum"), [(2, 1), (3, 2), (4, 1)])
def test_shards_take_every_batch_once(world: int, accum: int) -> None:
    """Ranks interleaved == the one global order: an epoch's batches each land on exactly one
    rank (no duplicates, no drops; the last round runs on into the next epoch, no padding)."""
    data = examples(53)
    single = stream(data)
    per_epoch = len(single.iterator)
    assert per_epoch % (world * accum) != 0  # the last round of the epoch is ragged
    ranks = [ShardedStream(stream(data), r, world) for r in range(world)]
    steps = math.ceil(per_epoch / (world * accum)) + 1
    got: list[list[int]] = []
    for _ in range(steps):
        groups = [[next(s) for _ in range(accum)] for s in ranks]  # one optimizer step
        for j in range(accum):  # micro-batch j of rank r = global batch j * world + r
            got.extend(groups[r][j].ids for r in range(world))
    assert got == [next(single).ids for _ in range(len(got))]
    assert len(got) > per_epoch
    assert sorted(i for batch in got[:per_epoch] for i in batch) == list(range(53))
    # the position is global: every rank holds the single-process position
    assert all(s.state_dict() == single.state_dict() for s in ranks)


def test_position_is_global_across_world_sizes() -> None:
    """Saved after 3 steps on 2 ranks, continued on 3 ranks: the global order just goes on."""
    data = examples(40)
    two = [ShardedStream(stream(data), r, 2) for r in range(2)]
    for _ in range(3):
        for s in two:
            next(s)
    saved = two[0].state_dict()
    three = [ShardedStream(stream(data), r, 3) for r in range(3)]
    for s in three:
        s.load_state_dict(saved)
    single = stream(data)
    for _ in range(6):
        next(single)
    for _ in range(4):
        assert [next(s).ids for s in three] == [next(single).ids for _ in range(3)]


def test_world_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    w = World.from_env()
    assert (w.rank, w.size, w.is_main, w.distributed, w.label) == (0, 1, True, False, "")
    assert w.agree_stop("SIGTERM") == "SIGTERM" and w.all_sum(7) == 7
    assert w.setup(torch.device("cpu")) == torch.device("cpu")  # no process group for one
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="WORLD_SIZE='two' is not an integer"):
        World.from_env()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ConfigError, match="RANK=2 WORLD_SIZE=2"):
        World.from_env()


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def test_torchrun_two_ranks_equal_one_with_double_batch(tmp_path: Path) -> None:
    """2 gloo ranks x batch b (grad_accum 1) == 1 process x 2 batches (grad_accum 2): the same
    loss at every step. SIGTERM to ONE worker stops both at the same step with a checkpoint
    (ranks agree on stops); that checkpoint then resumes in one process and matches the
    single-process run to the end."""
    cfg = recipe(tmp_path, max_steps=400, save_every=3, eval_every=3)
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "dhian", "train", str(cfg), "--quiet"]
    log = (tmp_path / "torchrun.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        reached = wait_for(
            lambda: any(r["step"] >= 7 for r in rows(out, "train")),
            timeout=180,
            alive=lambda: proc.poll() is None,
        )
        assert reached, (tmp_path / "torchrun.log").read_text()[-3000:]
        workers = children(proc.pid)
        assert len(workers) == 2
        os.kill(max(workers), signal.SIGTERM)  # one rank only
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    printed = (tmp_path / "torchrun.log").read_text()
    train_rows = rows(out, "train")
    stop = rows(out, "stop")
    assert stop and stop[-1]["reason"] == "SIGTERM", printed[-3000:]
    s = stop[-1]["step"]
    assert [r["step"] for r in train_rows] == list(range(1, s + 1))  # rank 0 alone wrote
    assert printed.count(f"stopped: SIGTERM at step {s}") == 1, printed[-3000:]
    state = ckpt.load_trainer_state(out / "last")
    assert state["step"] == s and state["world_size"] == 2 and len(state["rng_ranks"]) == 2
    assert ckpt.verify_checkpoint(out / "last")

    # one process, doubled batch (2 batches per step), run straight to s + 4
    end = s + 4
    over = [f"train.max_steps={end}", "train.grad_accum=2"]
    ref_cfg = load_run_config(cfg, [*over, f"train.out_dir={tmp_path / 'ref'}"])
    quiet_trainer(ref_cfg).fit()
    ref = rows(tmp_path / "ref", "train")
    for a, b in zip(train_rows, ref[:s], strict=True):
        assert a["tokens"] == b["tokens"]  # the same batches, counted globally
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6, abs=1e-7)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5, abs=1e-7)
    dev = [r["dev_loss"] for r in rows(out, "eval")]
    ref_dev = [r["dev_loss"] for r in rows(tmp_path / "ref", "eval") if r["step"] <= s]
    assert dev == pytest.approx(ref_dev, rel=1e-6)

    # the 2-rank checkpoint resumes in ONE process (grad_accum 2 keeps 2 batches per step)
    lines: list[str] = []
    res_cfg = load_run_config(cfg, over)
    res = quiet_trainer(res_cfg, resume=True, log=lines.append).fit()
    assert res.step == end and res.status == "max_steps"
    assert any(f"resumed at step {s}" in m for m in lines)
    resumed = rows(out, "train")
    assert [r["step"] for r in resumed] == list(range(1, end + 1))
    for a, b in zip(resumed[s:], ref[s:], strict=True):
        assert a["tokens"] == b["tokens"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6, abs=1e-7)
    wa, wb = weights(out / "last"), weights(tmp_path / "ref" / "last")
    assert all(torch.allclose(wa[k], wb[k], rtol=1e-5, atol=1e-6) for k in wa)


def _nan_on_one_rank(rank: int, world: int, out: Path, port: int) -> None:
    """A spawned rank: the toy task, with a NaN loss on rank 1 only at its 3rd loss call."""
    import hashlib
    import json

    from train_toy import ToyConfig, ToyTask, toy_config

    from dhian import config as dhian_config

    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    torch.set_num_threads(1)
    dhian_config._MODEL_CONFIGS["train_toy"] = ToyConfig
    cfg = toy_config(out, max_steps=6, eval_every=3, save_every=0, schedule="constant")
    task = ToyTask(cfg, log=lambda m: None, nan_calls={3} if rank == 1 else set())
    trainer = Trainer(cfg, task, progress=False, log=lambda m: None, curves=False)
    res = trainer.fit()
    digest = hashlib.sha256()
    for p in trainer.model.parameters():
        digest.update(p.detach().numpy().tobytes())
    info = {"step": res.step, "status": res.status, "params": digest.hexdigest()}
    (out.parent / f"rank{rank}.json").write_text(json.dumps(info))


@pytest.mark.slow
def test_a_nan_on_one_rank_skips_the_step_on_every_rank(tmp_path: Path) -> None:
    """Rank 1 alone sees a non-finite loss: both ranks skip that update (the flag is
    all-reduced), keep identical weights and finish; rank 0 logs one skip event."""
    import json
    import socket

    import torch.multiprocessing as tmp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp.spawn(_nan_on_one_rank, args=(2, tmp_path / "run", port), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1] and ranks[0]["step"] == 6 and ranks[0]["status"] == "max_steps"
    skips = rows(tmp_path / "run", "skip")
    assert len(skips) == 1 and skips[0]["step"] == 1  # the 2nd update (after step 1) skipped
    assert [r["step"] for r in rows(tmp_path / "run", "train")] == [2, 4, 6]
