"""FSDP2 (``train.fsdp``: ``fully_shard`` per block + root) and LoRA under DDP, in a real
2-process ``torchrun`` on gloo/CPU, fine-tuning a tiny llama from ``train.init_from``: the same
losses and weights as one process with the doubled batch, plain (gathered) checkpoints, a stop +
resume under torchrun that ends bitwise equal to the straight sharded run, and LoRA + FSDP
refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from test_llama_training import config, pretrained

from dhian.config import RunConfig, replace
from dhian.models.llama.model import LlamaModel
from dhian.models.model_dir import load_model_dir
from dhian.train import checkpoint as ckpt
from helpers.training import quiet_trainer, rows, weights


def torchrun(cfg: RunConfig, root: Path, name: str, *extra: str) -> str:
    """Run ``dhian train`` on 2 gloo ranks; return its output (the test fails on an error)."""
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "dhian", "train", str(path), "--quiet", *extra]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    return out


@pytest.mark.slow
def test_fsdp_two_ranks_equal_one_process_and_resume_bitwise(tmp_path: Path) -> None:
    _, model = pretrained(tmp_path)

    def at(name: str, **train: object) -> RunConfig:
        knobs: dict[str, object] = {"max_steps": 4, "eval_every": 2, "save_every": 2, **train}
        cfg = config(tmp_path, model, **knobs)
        return replace(cfg, train=replace(cfg.train, out_dir=str(tmp_path / name)))

    printed = torchrun(at("fsdp", fsdp=True), tmp_path, "fsdp")
    assert "FSDP2: 2 blocks + root sharded over 2 processes" in printed
    assert "stopped: max_steps at step 4" in printed

    # one process, 2 batches per step: the same global batches
    quiet_trainer(at("ref", grad_accum=2)).fit()
    got, ref = rows(tmp_path / "fsdp", "train"), rows(tmp_path / "ref", "train")
    assert [r["step"] for r in got] == [1, 2, 3, 4]
    for a, b in zip(got, ref, strict=True):
        assert a["tokens"] == b["tokens"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4, abs=1e-6)
    wa, wb = weights(tmp_path / "fsdp" / "last"), weights(tmp_path / "ref" / "last")
    assert set(wa) == set(wb)
    assert all(torch.allclose(wa[k], wb[k], rtol=1e-4, atol=1e-5) for k in wa)
    # the checkpoint is a plain llama; its trainer state holds the whole optimizer state
    assert isinstance(load_model_dir(tmp_path / "fsdp" / "last").model, LlamaModel)
    state = ckpt.load_trainer_state(tmp_path / "fsdp" / "last")
    assert state["world_size"] == 2 and state["optimizer"]["state"]

    # stopped after 2 steps, resumed under torchrun: bitwise the straight sharded run
    torchrun(at("cut", fsdp=True, max_steps=2), tmp_path, "cut")
    printed = torchrun(at("cut", fsdp=True), tmp_path, "cut", "--resume")
    assert "resumed at step 2" in printed
    wc = weights(tmp_path / "cut" / "last")
    assert all(torch.equal(wa[k], wc[k]) for k in wa)
    assert rows(tmp_path / "cut", "train") == got


@pytest.mark.slow
def test_lora_under_ddp_equals_one_process(tmp_path: Path) -> None:
    """LoRA adapters train under 2-rank DDP like one process with the doubled batch, and the
    run saves a plain llama; LoRA with train.fsdp is refused with a one-line error."""
    _, model = pretrained(tmp_path)

    def at(name: str, **train: object) -> RunConfig:
        knobs: dict[str, object] = {"max_steps": 3, "eval_every": 3, "lora": {"r": 4}, **train}
        cfg = config(tmp_path, model, **knobs)
        return replace(cfg, train=replace(cfg.train, out_dir=str(tmp_path / name)))

    printed = torchrun(at("ddp"), tmp_path, "ddp")
    assert "x 2 processes (gloo)" in printed and "LoRA r=4" in printed
    quiet_trainer(at("ref", grad_accum=2)).fit()
    got, ref = rows(tmp_path / "ddp", "train"), rows(tmp_path / "ref", "train")
    assert [r["step"] for r in got] == [1, 2, 3]
    for a, b in zip(got, ref, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
    wa, wb = weights(tmp_path / "ddp" / "last"), weights(tmp_path / "ref" / "last")
    assert all(torch.allclose(wa[k], wb[k], rtol=1e-4, atol=1e-5) for k in wa)
    assert isinstance(load_model_dir(tmp_path / "ddp" / "last").model, LlamaModel)

    bad = at("bad", fsdp=True)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad.to_dict()), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    done = subprocess.run(
        [*cmd, "-m", "dhian", "train", str(path), "--quiet"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode != 0
    assert "train.fsdp shards full fine-tuning; LoRA adapters train under DDP" in (
        done.stdout + done.stderr
    )
