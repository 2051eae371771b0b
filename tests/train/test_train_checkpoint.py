"""Checkpoints: atomic writes survive injected crashes; RNG and trainer state round-trip."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from train_toy import ToyTask, ToyTokenizer, build_toy, toy_config

from dhian.errors import ModelLoadError
from dhian.models import model_dir as model_io
from dhian.train import checkpoint as ckpt
from dhian.train.trainer import Trainer


def save(out: Path, model: torch.nn.Module, step: int) -> Path:
    cfg = toy_config(out)
    tok = ToyTokenizer(11)
    state = {"version": ckpt.STATE_VERSION, "step": step, "rng": ckpt.capture_rng()}
    return ckpt.save_checkpoint(
        out / "last", model, cfg, {"src": tok, "tgt": tok}, state, info={"step": step}
    )


def load(path: Path) -> model_io.LoadedModel:
    return model_io.load_model_dir(path, builder=build_toy, tokenizer_loader=ToyTokenizer.load)


def test_crash_while_writing_weights_keeps_previous(tmp_path: Path) -> None:
    cfg = toy_config(tmp_path)
    model = build_toy(cfg.model, 11, 11)
    last = save(tmp_path, model, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)

    def torn_write(model: Any, filename: str, metadata: Any = None) -> None:
        Path(filename).write_bytes(b"\x00" * 17)  # half a file, then the disk "fails"
        raise OSError("injected: disk full")

    with pytest.MonkeyPatch.context() as mp, pytest.raises(OSError, match="injected"):
        mp.setattr(model_io, "save_model", torn_write)
        save(tmp_path, model, 2)

    loaded = load(last)
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, before[k])
    assert ckpt.load_trainer_state(last)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_crash_while_writing_trainer_state_keeps_previous(tmp_path: Path) -> None:
    model = build_toy(toy_config(tmp_path).model, 11, 11)
    last = save(tmp_path, model, 1)
    real_save = torch.save

    def torn_save(obj: Any, f: Any, *a: Any, **k: Any) -> None:
        real_save({"partial": True}, f)
        raise RuntimeError("injected: killed mid-write")

    with pytest.MonkeyPatch.context() as mp, pytest.raises(RuntimeError, match="injected"):
        mp.setattr(ckpt.torch, "save", torn_save)
        save(tmp_path, model, 2)
    assert ckpt.load_trainer_state(last)["step"] == 1
    assert json.loads((last / "checkpoint.json").read_text())["step"] == 1


def test_interrupted_swap_is_repaired(tmp_path: Path) -> None:
    model = build_toy(toy_config(tmp_path).model, 11, 11)
    last = save(tmp_path, model, 3)
    os.rename(last, tmp_path / ".last.old")  # crash between the two renames
    assert ckpt.resumable_checkpoint(tmp_path) == last
    assert ckpt.load_trainer_state(last)["step"] == 3


def test_engine_crash_then_resume_matches_straight_run(tmp_path: Path) -> None:
    knobs = dict(max_steps=6, save_every=2, eval_every=2, dropout=0.2)
    straight = toy_config(tmp_path / "a", **knobs)
    Trainer(straight, ToyTask(straight), progress=False, log=lambda m: None, curves=False).fit()

    crashy = toy_config(tmp_path / "b", **knobs)
    calls = {"n": 0}
    real = model_io.save_model

    def flaky(model: Any, filename: str, metadata: Any = None) -> None:
        calls["n"] += 1
        if calls["n"] == 4:  # saves: best@2 last@2 best@4 -> dies here, before last@4
            raise OSError("injected crash")
        real(model, filename, metadata=metadata)

    with pytest.MonkeyPatch.context() as mp, pytest.raises(OSError, match="injected"):
        mp.setattr(model_io, "save_model", flaky)
        Trainer(crashy, ToyTask(crashy), progress=False, log=lambda m: None, curves=False).fit()
    assert json.loads((tmp_path / "b" / "last" / "checkpoint.json").read_text())["step"] == 2
    t = Trainer(
        crashy, ToyTask(crashy), resume=True, progress=False, log=lambda m: None, curves=False
    )
    assert t.fit().step == 6
    wa = load_file(str(tmp_path / "a" / "last" / "model.safetensors"))
    wb = load_file(str(tmp_path / "b" / "last" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

    def strip(p: Path) -> list[dict[str, Any]]:
        rows = [json.loads(x) for x in p.read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in ("wall", "tokens_per_s")} for r in rows]

    assert strip(tmp_path / "a" / "metrics.jsonl") == strip(tmp_path / "b" / "metrics.jsonl")


def test_rng_round_trip_through_weights_only(tmp_path: Path) -> None:
    ckpt.seed_everything(7)
    state = ckpt.capture_rng()
    torch.save(state, tmp_path / "rng.pt")
    first = (torch.rand(3), random.random(), np.random.rand(2))
    ckpt.seed_everything(99)
    ckpt.restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (torch.rand(3), random.random(), np.random.rand(2))
    assert torch.equal(first[0], again[0])
    assert first[1] == again[1]
    assert np.array_equal(first[2], again[2])


def test_trainer_state_rejects_pickles_and_garbage(tmp_path: Path) -> None:
    d = tmp_path / "ck"
    d.mkdir()
    torch.save({"version": 1, "evil": Path("/")}, d / ckpt.TRAINER_STATE)  # an arbitrary object
    with pytest.raises(ModelLoadError, match="corrupt or not a trainer state"):
        ckpt.load_trainer_state(d)
    (d / ckpt.TRAINER_STATE).write_bytes(b"not a zip")
    with pytest.raises(ModelLoadError):
        ckpt.load_trainer_state(d)
    (d / ckpt.TRAINER_STATE).unlink()
    with pytest.raises(ModelLoadError, match="cannot be resumed"):
        ckpt.load_trainer_state(d)
