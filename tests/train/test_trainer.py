"""The engine on the toy task: exact resume, accumulation, non-finite losses, stops, freezing."""

from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from train_toy import ToyTask, toy_config

from dhian.errors import ConfigError, DhianError
from dhian.train.trainer import Trainer, TrainingDiverged
from helpers.training import rows as events
from helpers.training import weights


def run(
    cfg: Any, resume: bool = False, callbacks: Any = (), curves: bool = False, **hooks: Any
) -> Any:
    task = ToyTask(cfg, log=lambda m: None, **hooks)
    trainer = Trainer(
        cfg,
        task,
        resume=resume,
        progress=False,
        log=lambda m: None,
        callbacks=callbacks,
        curves=curves,
    )
    return trainer, trainer.fit()


def stop_at(step: int) -> Any:
    def cb(trainer: Trainer) -> None:
        if trainer.step == step:
            trainer.request_stop()

    return cb


def test_resume_is_exact(tmp_path: Path) -> None:
    knobs = dict(
        max_steps=10,
        dropout=0.3,
        grad_accum=2,
        log_every=2,
        eval_every=4,
        save_every=3,
        schedule="cosine",
    )
    straight = toy_config(tmp_path / "a", **knobs)
    _, res_a = run(straight)
    assert res_a.status == "max_steps" and res_a.step == 10

    split = toy_config(tmp_path / "b", **knobs)
    _, res_b1 = run(split, callbacks=[stop_at(5)])
    assert res_b1.status == "stopped" and res_b1.step == 5
    assert json.loads((tmp_path / "b" / "last" / "checkpoint.json").read_text())["step"] == 5
    _, res_b2 = run(split, resume=True)
    assert res_b2.step == 10

    wa, wb = weights(tmp_path / "a" / "last"), weights(tmp_path / "b" / "last")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k  # bitwise
    ea, eb = events(tmp_path / "a"), events(tmp_path / "b")
    assert ea == eb
    assert [e["step"] for e in ea if e["event"] == "train"] == [2, 4, 6, 8, 10]
    assert [e["step"] for e in ea if e["event"] == "eval"] == [4, 8, 10]
    # dropout really acted: without exact RNG restore the run would differ
    _, _ = run(toy_config(tmp_path / "c", **{**knobs, "dropout": 0.0}))
    wc = weights(tmp_path / "c" / "last")
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_resume_refuses_a_changed_model(tmp_path: Path) -> None:
    cfg = toy_config(tmp_path / "r", max_steps=2)
    run(cfg)
    with pytest.raises(DhianError, match="already holds a run"):
        run(cfg)
    with pytest.raises(ConfigError, match=r"model\.dim"):
        run(toy_config(tmp_path / "r", max_steps=4, dim=16), resume=True)
    with pytest.raises(DhianError, match="nothing to resume"):
        run(toy_config(tmp_path / "empty"), resume=True)
    # a longer max_steps may continue the run
    _, res = run(toy_config(tmp_path / "r", max_steps=4), resume=True)
    assert res.step == 4


def test_grad_accum_equals_big_batch(tmp_path: Path) -> None:
    common = dict(max_steps=3, dropout=0.0, eval_every=0, schedule="constant", warmup_steps=0)
    run(toy_config(tmp_path / "acc", batch_size=2, grad_accum=2, **common))
    run(toy_config(tmp_path / "big", batch_size=4, grad_accum=1, **common))
    wa, wb = weights(tmp_path / "acc" / "last"), weights(tmp_path / "big" / "last")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)
    # and it is not trivially equal to half the data
    run(toy_config(tmp_path / "half", batch_size=2, grad_accum=1, **common))
    wh = weights(tmp_path / "half" / "last")
    assert not all(torch.allclose(wa[k], wh[k], atol=1e-6) for k in wa)


def test_non_finite_steps_are_skipped(tmp_path: Path) -> None:
    cfg = toy_config(tmp_path / "nan", max_steps=5, max_bad_steps=3, eval_every=0)
    trainer, res = run(cfg, nan_calls={2, 3})
    assert res.step == 5 and res.status == "max_steps"
    ev = events(tmp_path / "nan")
    skips = [e for e in ev if e["event"] == "skip"]
    assert len(skips) == 2 and skips[-1]["bad_steps"] == 2
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_diverged_run_stops_with_a_clear_error(tmp_path: Path) -> None:
    cfg = toy_config(tmp_path / "div", max_steps=20, max_bad_steps=3, save_every=2)
    with pytest.raises(TrainingDiverged, match="not finite for 3 steps in a row after step 2"):
        run(cfg, nan_calls=set(range(3, 100)))
    ev = events(tmp_path / "div")
    assert [e["event"] for e in ev][-4:] == ["skip", "skip", "skip", "stop"]
    assert (tmp_path / "div" / "last" / "model.safetensors").is_file()


def test_early_stopping_and_best(tmp_path: Path) -> None:
    cfg = toy_config(tmp_path / "es", max_steps=50, eval_every=2, early_stop_patience=2)
    _, res = run(cfg, eval_script=[3.0, 2.0, 2.5, 2.6, 1.0], curves=True)
    assert res.status == "early_stop" and res.step == 8
    assert res.best is not None and res.best["value"] == 2.0 and res.best["step"] == 4
    info = json.loads((tmp_path / "es" / "best" / "checkpoint.json").read_text())
    assert info["step"] == 4 and info["metric"] == "loss"
    assert not (tmp_path / "es" / "best" / "trainer_state.pt").exists()
    assert (tmp_path / "es" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_early_stop_metric_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'accuracy'"):
        run(toy_config(tmp_path / "m", early_stop_metric="acuracy"))


def test_epoch_and_time_limits(tmp_path: Path) -> None:
    # 48 examples / batch 4 = 12 batches per epoch
    _, res = run(
        toy_config(tmp_path / "ep", max_steps=0, max_epochs=2, eval_every=0, schedule="constant")
    )
    assert res.status == "max_epochs" and res.step == 24 and res.epoch == pytest.approx(2.0)
    _, res = run(toy_config(tmp_path / "t", max_steps=1000, max_minutes=1e-9, eval_every=0))
    assert res.status == "time_limit" and res.step == 0
    assert (tmp_path / "t" / "last" / "trainer_state.pt").is_file()


class SlowEvalTask(ToyTask):
    """A validation that takes ``EVAL_S`` seconds."""

    EVAL_S = 0.6

    def evaluate(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(self.EVAL_S)
        return super().evaluate(*args, **kwargs)


def test_time_limit_covers_the_final_validation_and_averaging(tmp_path: Path) -> None:
    """``max_minutes`` is the whole budget: the loop stops early enough for the final dev
    validation and the averaged weights' validation to end inside it."""
    budget = 3.0
    cfg = toy_config(
        tmp_path,
        max_steps=10**6,
        max_minutes=budget / 60,
        eval_every=40,
        average_last=2,
        average_every=5,
        log_every=0,
    )
    trainer = Trainer(
        cfg, SlowEvalTask(cfg, log=lambda m: None), progress=False, log=lambda m: None, curves=False
    )
    t0 = time.monotonic()
    res = trainer.fit()
    wall = time.monotonic() - t0
    assert res.status == "time_limit"
    assert len(events(tmp_path, "eval")) >= 1 and len(events(tmp_path, "average")) == 1
    # without the reserve the two final validations (2 x 0.6 s) would run past the budget
    assert wall < budget + 0.3, wall


def test_sigint_saves_and_exits_cleanly(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGINT)

    def interrupt(trainer: Trainer) -> None:
        if trainer.step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    _, res = run(toy_config(tmp_path / "sig", max_steps=100, eval_every=0), callbacks=[interrupt])
    assert res.status == "SIGINT" and res.step == 3
    assert json.loads((tmp_path / "sig" / "last" / "checkpoint.json").read_text())["step"] == 3
    assert signal.getsignal(signal.SIGINT) is before


def test_freeze_and_init_from(tmp_path: Path) -> None:
    run(toy_config(tmp_path / "base", max_steps=3))
    base = weights(tmp_path / "base" / "last")
    cfg = toy_config(
        tmp_path / "ft", max_steps=3, freeze="embed", init_from=str(tmp_path / "base" / "last")
    )
    trainer, _ = run(cfg)
    after = weights(tmp_path / "ft" / "last")
    assert torch.equal(after["embed.weight"], base["embed.weight"])  # frozen, started from base
    assert not torch.equal(after["out.weight"], base["out.weight"])  # trained further
    assert not trainer.model.embed.weight.requires_grad
    with pytest.raises(ConfigError, match="did you mean 'embed'"):
        run(toy_config(tmp_path / "bad", freeze="embd"))


def test_bf16_autocast_trains(tmp_path: Path) -> None:
    _, res = run(toy_config(tmp_path / "bf", max_steps=4, bf16=True))
    assert math.isfinite(res.last_eval["loss"])


def test_keep_last_rotates(tmp_path: Path) -> None:
    run(toy_config(tmp_path / "k", max_steps=8, save_every=2, keep_last=3, eval_every=0))
    kept = sorted(p.name for p in (tmp_path / "k" / "checkpoints").iterdir())
    assert kept == ["step-00000004", "step-00000006"]
    assert json.loads((tmp_path / "k" / "last" / "checkpoint.json").read_text())["step"] == 8


def test_metrics_reader_skips_a_torn_line(tmp_path: Path) -> None:
    from dhian.viz.run_curves import plot_curves, read_metrics

    p = tmp_path / "metrics.jsonl"
    rows = [{"event": "train", "step": s, "loss": 3.0 / s} for s in (1, 2, 3)]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"event": "tr')
    assert [r["step"] for r in read_metrics(p)] == [1, 2, 3]
    assert plot_curves(p, tmp_path / "c.png") == tmp_path / "c.png"
    assert plot_curves(tmp_path / "none.jsonl", tmp_path / "d.png") is None
