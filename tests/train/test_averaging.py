"""Checkpoint averaging (``train.average_last``): the mean of weight snapshots, and the trainer
keeping the average as ``best`` only when it scores at least as well on dev. Also
``train.bf16: auto`` (:func:`resolve_bf16`), decided from the CPU flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from train_toy import ToyTask, toy_config

from dhian.config import TrainConfig
from dhian.errors import ConfigError
from dhian.train.averaging import Snapshots, average_states
from dhian.train.optim import cpu_flags, resolve_bf16
from dhian.train.trainer import Trainer
from helpers.training import rows as events
from helpers.training import weights


def test_average_states_is_the_mean() -> None:
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(5)}
    avg = average_states([a, b])
    assert torch.equal(avg["w"], torch.tensor([2.0, 4.0])) and int(avg["n"]) == 5
    half = {"w": torch.tensor([1.0, 3.0], dtype=torch.bfloat16)}
    assert average_states([half, half])["w"].dtype == torch.bfloat16
    with pytest.raises(ValueError):
        average_states([])


def test_snapshots_keep_the_last_copies() -> None:
    model = torch.nn.Linear(2, 1)
    snaps = Snapshots(every=2, keep=3)
    for step in range(1, 11):
        with torch.no_grad():
            model.weight.fill_(float(step))
        snaps.observe(step, model)
    assert snaps.steps == [6, 8, 10]
    snaps.take(10, model)  # the same step again replaces, never duplicates
    assert snaps.steps == [6, 8, 10]
    assert torch.allclose(snaps.average()["weight"], torch.full((1, 2), 8.0))


def train(tmp_path: Path, script: list[float]) -> tuple[Trainer, Any]:
    cfg = toy_config(tmp_path, max_steps=6, eval_every=3, average_last=3, average_every=2)
    task = ToyTask(cfg, log=lambda m: None, eval_script=script)
    trainer = Trainer(cfg, task, progress=False, log=lambda m: None, curves=False)
    return trainer, trainer.fit()


def test_a_better_average_becomes_best(tmp_path: Path) -> None:
    trainer, res = train(tmp_path, [1.0, 0.9, 0.5])  # dev loss at steps 3, 6, then the average
    assert trainer.snapshots is not None and trainer.snapshots.steps == [2, 4, 6]
    best = weights(tmp_path / "best")
    avg = trainer.snapshots.average()
    assert all(torch.allclose(best[k], avg[k]) for k in best)
    last = weights(tmp_path / "last")  # the run itself goes on from its trained weights
    assert all(torch.equal(last[k], v) for k, v in trainer.model.state_dict().items() if k in last)
    assert not torch.allclose(best["out.weight"], last["out.weight"])
    assert res.best["value"] == 0.5 and res.best["averaged"] == [2, 4, 6]
    (row,) = events(tmp_path, "average")
    assert row["kept"] is True and row["dev_loss"] == 0.5 and row["steps"] == [2, 4, 6]


def test_a_worse_average_is_not_kept(tmp_path: Path) -> None:
    _, res = train(tmp_path, [1.0, 0.9, 2.0])
    assert res.best["value"] == 0.9 and res.best["step"] == 6 and "averaged" not in res.best
    best, last = weights(tmp_path / "best"), weights(tmp_path / "last")
    assert all(torch.equal(best[k], last[k]) for k in best)  # best = the step-6 weights
    (row,) = events(tmp_path, "average")
    assert row["kept"] is False


def test_bf16_auto_follows_the_cpu_flags() -> None:
    cpu = torch.device("cpu")
    assert resolve_bf16("auto", cpu, {"avx2", "avx512_bf16"})[0] is True
    assert resolve_bf16("auto", cpu, {"amx_bf16"})[0] is True
    on, why = resolve_bf16("auto", cpu, {"avx2", "avx512f"})
    assert on is False and "emulated" in why
    assert (
        resolve_bf16(True, cpu, set())[0] is True
        and resolve_bf16(False, cpu, {"amx_bf16"})[0] is False
    )
    with pytest.raises(ConfigError, match="true, false or auto"):
        resolve_bf16("sometimes", cpu, set())
    assert TrainConfig(bf16="AUTO").bf16 == "auto"
    with pytest.raises(ConfigError, match="true, false or auto"):
        TrainConfig(bf16="sometimes")
    info = "processor : 0\nflags\t\t: fpu avx512_bf16 sse\n\nprocessor : 1\nflags : amx_bf16\n"
    assert {"avx512_bf16", "amx_bf16", "fpu"} <= cpu_flags(info)


def test_a_stop_point_is_the_shorter_run_and_changes_nothing(tmp_path: Path) -> None:
    """``Trainer.stop_point`` at step 6 saves what a 6-step run leaves as best (with its final
    validation and averaging), and the run then goes on exactly as one without it."""
    # a schedule that does not depend on max_steps (as in a timed run, whose max_steps is fixed)
    knobs = dict(eval_every=4, average_last=3, average_every=2, dropout=0.2, schedule="constant")

    def fit(out: Path, steps: int, callbacks: Any = ()) -> tuple[Trainer, Any]:
        cfg = toy_config(out, max_steps=steps, **knobs)
        task = ToyTask(cfg, log=lambda m: None)
        trainer = Trainer(
            cfg, task, progress=False, log=lambda m: None, curves=False, callbacks=callbacks
        )
        return trainer, trainer.fit()

    points: list[dict[str, Any]] = []

    def at_six(trainer: Trainer) -> None:
        if trainer.step == 6:
            points.append(trainer.stop_point("curve/six"))

    _, short = fit(tmp_path / "short", 6)
    _, long = fit(tmp_path / "long", 12, [at_six])
    _, plain = fit(tmp_path / "plain", 12)
    (point,) = points
    assert point["step"] == 6 and point["value"] == short.best["value"]
    kept, made = weights(tmp_path / "long" / "curve" / "six"), weights(tmp_path / "short" / "best")
    assert kept.keys() == made.keys() and all(torch.equal(kept[k], made[k]) for k in kept)
    assert long.best == plain.best
    a, b = weights(tmp_path / "long" / "last"), weights(tmp_path / "plain" / "last")
    assert all(torch.equal(a[k], b[k]) for k in a)
    (row,) = events(tmp_path / "long", "stop_point")
    assert row["point"] == "curve/six" and row["step"] == 6
