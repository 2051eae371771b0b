"""Faults: kill -9 at random moments (training, mid-checkpoint-write, mid-swap) always resumes
from a valid checkpoint to the uninterrupted run's exact weights; corrupt checkpoints
(truncated, bit-flipped) are detected, reported and skipped; a full disk keeps the previous
checkpoint and says so in one line; pickles that would run code are refused, not run."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from train_toy import ToyTask, toy_config

from dhian.cli import main
from dhian.config import load_run_config
from dhian.errors import DhianError, ModelLoadError
from dhian.models import model_dir as model_io
from dhian.train import checkpoint as ckpt
from helpers.corpus import recipe
from helpers.training import quiet_trainer, rows, same_weights, wait_for

# --------------------------------------------------------------------------- kill -9 trials

TRIAL_STEPS = 12
TRIAL_KNOBS: dict[str, Any] = dict(
    dropout=0.1, max_steps=TRIAL_STEPS, save_every=3, eval_every=6, keep_last=2
)
PAUSE = "0.25"  # seconds DHIAN_FAULT_PAUSE_S holds each checkpoint write open for the kill


def reference(tmp_path: Path) -> tuple[Path, Path]:
    """The recipe and its uninterrupted run (in this process)."""
    cfg = recipe(tmp_path, **TRIAL_KNOBS)
    ref = tmp_path / "ref"
    run_cfg = load_run_config(cfg, [f"train.out_dir={ref}"])
    quiet_trainer(run_cfg).fit()
    return cfg, ref


class Child:
    """``dhian train ARGS`` in a child process: a fresh interpreter (``python -m dhian``), or a
    fork of this one (same code path through :func:`dhian.cli.main`, without the seconds of
    importing torch again)."""

    def __init__(self, args: list[str], env: dict[str, str], fresh: bool) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0
        if fresh:
            full = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
            cmd = [sys.executable, "-m", "dhian", *args]
            self.proc = subprocess.Popen(
                cmd, env={**full, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            self.pid = self.proc.pid
            return
        self.pid = os.fork()
        if self.pid == 0:  # the child: run the CLI, never return into pytest
            code = 1
            try:
                os.environ.update(env)
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                os.dup2(devnull, 2)
                code = main(args)
            finally:
                os._exit(code)
        self.status: int | None = None

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
        return self.status is None

    def kill(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=30)
        elif self.status is None:
            self.status = os.waitpid(self.pid, 0)[1]


def kill_trial(
    cfg: Path, ref: Path, out: Path, mode: str, rng: random.Random, fresh: bool = False
) -> dict[str, Any]:
    """Run ``dhian train`` in a child, SIGKILL it at a random moment of kind ``mode`` (train:
    after a random step; write: inside a checkpoint's temp dir; swap: between the renames),
    resume here, and check the result equals ``ref`` bitwise."""
    env = {ckpt.PAUSE_ENV: "" if mode == "train" else PAUSE}
    t0 = time.monotonic()
    child = Child(["train", str(cfg), "--quiet", "--out", str(out)], env, fresh)
    k = rng.randint(4, TRIAL_STEPS - 2)  # after the first save (step 3)
    reached = lambda: any(r["step"] >= k for r in rows(out, "train"))  # noqa: E731
    try:
        if mode == "train":
            wait_for(reached, 120, child.alive)
            time.sleep(rng.uniform(0.0, 0.03))
        elif mode == "write":  # the temp dir of the first save after step k: kill inside it
            wait_for(lambda: reached() and any(out.glob(".last.tmp-*")), 120, child.alive)
            time.sleep(rng.uniform(0.0, 0.2))
        else:  # swap: the old last is now last.prev and the new one not yet renamed in
            swapping = lambda: (out / "last.prev").is_dir() and not (out / "last").exists()  # noqa: E731
            wait_for(lambda: reached() and swapping(), 120, child.alive)
            time.sleep(rng.uniform(0.0, 0.2))
        killed = child.alive()
    finally:
        child.kill()
    kill_s = time.monotonic() - t0
    at = max([r["step"] for r in rows(out, "train")] or [0])
    notes: list[str] = []
    found = ckpt.open_resumable(out, log=notes.append)
    assert found is not None, f"no checkpoint after a kill at step {at} ({mode})"
    path, state = found
    assert ckpt.verify_checkpoint(path)  # it has a manifest and matches it
    assert not any("corrupt" in n for n in notes), notes  # a kill never leaves a torn candidate
    run_cfg = load_run_config(cfg, [f"train.out_dir={out}"])
    res = quiet_trainer(run_cfg, resume=True).fit()
    assert res.step == TRIAL_STEPS
    assert same_weights(out / "last", ref / "last"), f"{mode} kill at step {at}"
    assert same_weights(out / "best", ref / "best")
    assert rows(out) == rows(ref)
    info = {"mode": mode, "killed": killed, "at": at, "from": path.name, "step": state["step"]}
    return {**info, "kill_s": round(kill_s, 2), "total_s": round(time.monotonic() - t0, 2)}


def test_kill_9_three_trials(tmp_path: Path) -> None:
    """The fast version: one kill in training, one inside a checkpoint write, one mid-swap."""
    cfg, ref = reference(tmp_path)
    rng = random.Random(2026)
    done = [kill_trial(cfg, ref, tmp_path / m, m, rng) for m in ("train", "write", "swap")]
    assert all(d["killed"] for d in done), done
    assert done[2]["from"] == "last.prev", done  # mid-swap: only the fallback was left


@pytest.mark.slow
def test_kill_9_loop(tmp_path: Path) -> None:
    """≥ 10 trials at random moments of random kinds, each in a fresh ``python -m dhian train``
    process (prints a summary for docs/reliability.md)."""
    cfg, ref = reference(tmp_path)
    rng = random.Random(int(os.environ.get("DHIAN_FAULT_SEED", "7")))
    n = int(os.environ.get("DHIAN_FAULT_TRIALS", "12"))
    t0 = time.monotonic()
    modes = [("train", "write", "swap")[i % 3] for i in range(n)]
    rng.shuffle(modes)
    done = [
        kill_trial(cfg, ref, tmp_path / f"t{i}", m, rng, fresh=True) for i, m in enumerate(modes)
    ]
    print(f"\nkill -9 trials: {len(done)} in {time.monotonic() - t0:.1f} s")
    for d in done:
        print(json.dumps(d))
    assert sum(d["killed"] for d in done) >= n - 1


# --------------------------------------------------------------------------- corrupt checkpoints


def toy_run(out: Path, max_steps: int, log: Any = None, resume: bool = False) -> Any:
    knobs = dict(save_every=2, eval_every=2, dropout=0.2, schedule="constant", warmup_steps=0)
    cfg = toy_config(out, max_steps=max_steps, **knobs)
    return quiet_trainer(cfg, ToyTask(cfg), resume=resume, log=log).fit()


def flip_byte(path: Path, offset_from_end: int = 5) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncate weights", "flip weights", "flip state"])
def test_corrupt_last_is_reported_skipped_and_the_run_still_exact(
    tmp_path: Path, damage: str
) -> None:
    toy_run(tmp_path / "straight", 8)
    out = tmp_path / "run"
    toy_run(out, 6)  # last = step 6, last.prev = step 4
    assert ckpt.read_info(out / "last.prev")["step"] == 4
    weights = out / "last" / model_io.WEIGHTS
    if damage == "truncate weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        why = "bytes"
    elif damage == "flip weights":  # inside the tensor data: safetensors alone cannot tell
        flip_byte(weights)
        assert load_file(str(weights))  # still "loads" — only the checksum catches it
        why = "does not match its SHA-256"
    else:
        flip_byte(out / "last" / ckpt.TRAINER_STATE, 40)
        why = "SHA-256"
    lines: list[str] = []
    res = toy_run(out, 8, log=lines.append, resume=True)
    assert res.step == 8
    warn = [m for m in lines if m.startswith("warning: skipping corrupt checkpoint")]
    assert len(warn) == 1 and str(out / "last") in warn[0] and why in warn[0], lines
    assert any("resuming from the newest valid checkpoint" in m and "(step 4)" in m for m in lines)
    assert (out / "last.corrupt").is_dir()  # kept aside for inspection, out of the way
    assert same_weights(out / "last", tmp_path / "straight" / "last")


def test_every_checkpoint_corrupt_is_one_clear_error(tmp_path: Path) -> None:
    out = tmp_path / "run"
    toy_run(out, 4)
    for d in ("last", "last.prev"):
        flip_byte(out / d / model_io.WEIGHTS)
    with pytest.raises(ModelLoadError, match=r"every checkpoint in .* is corrupt \(last, last"):
        toy_run(out, 6, resume=True)


def test_checkpoint_without_manifest_still_resumes(tmp_path: Path) -> None:
    """Checkpoints of an older dhian have no manifest: resumed with a note, not refused."""
    toy_run(tmp_path / "straight", 8)
    out = tmp_path / "run"
    toy_run(out, 6)
    (out / "last" / ckpt.MANIFEST).unlink()
    lines: list[str] = []
    assert toy_run(out, 8, log=lines.append, resume=True).step == 8
    assert any("has no manifest.json" in m for m in lines)
    assert same_weights(out / "last", tmp_path / "straight" / "last")


def test_a_crash_mid_swap_of_best_is_repaired_on_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    toy_run(out, 4)
    os.rename(out / "best", out / ".best.old")  # killed between the renames of a best save
    path, state = ckpt.find_checkpoint(out, True, print)
    assert path == out / "last" and state is not None and state["step"] == 4
    assert ckpt.verify_checkpoint(out / "best") and not (out / ".best.old").exists()


def test_manifest_lists_every_file(tmp_path: Path) -> None:
    out = tmp_path / "run"
    toy_run(out, 2)
    listed = json.loads((out / "last" / ckpt.MANIFEST).read_text())["files"]
    on_disk = {
        p.relative_to(out / "last").as_posix()
        for p in (out / "last").rglob("*")
        if p.is_file() and p.name != ckpt.MANIFEST
    }
    assert set(listed) == on_disk and {"model.safetensors", "trainer_state.pt"} <= on_disk
    (out / "last" / "config.yaml").unlink()
    with pytest.raises(ckpt.CorruptCheckpoint, match=r"config\.yaml is missing"):
        ckpt.verify_checkpoint(out / "last")


# --------------------------------------------------------------------------- disk full


def test_disk_full_keeps_the_previous_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = recipe(tmp_path, max_steps=6, save_every=2, eval_every=0)
    out = tmp_path / "run"
    real = model_io.save_model
    calls = {"n": 0}

    def full_disk(model: Any, filename: str, metadata: Any = None) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the save at step 4
            Path(filename).write_bytes(b"\0" * 100)  # a partial file, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(model, filename, metadata=metadata)

    monkeypatch.setattr(model_io, "save_model", full_disk)
    assert main(["train", str(cfg), "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err == (
        f"error: could not write checkpoint {out / 'last'}: no space left on device; the "
        f"previous checkpoint {out / 'last'} (step 2) is intact; free some disk space and "
        "continue with --resume"
    )
    assert ckpt.verify_checkpoint(out / "last") and ckpt.read_info(out / "last")["step"] == 2
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temp dirs left
    monkeypatch.setattr(model_io, "save_model", real)
    assert main(["train", str(cfg), "--quiet", "--out", str(out), "--resume"]) == 0
    assert "stopped: max_steps at step 6" in capsys.readouterr().out


# --------------------------------------------------------------------------- malicious pickles


class Payload:
    """Unpickling this runs ``exec`` — which writes ``target`` — on the loading machine."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(self.target)!r}, 'w').write('pwned')",))


def evil_file(path: Path, marker: Path, wrap: Any = None) -> None:
    torch.save(wrap(Payload(marker)) if wrap else Payload(marker), path)
    torch.load(path, weights_only=False)  # control: the payload really runs when unpickled
    assert marker.read_text() == "pwned"
    marker.unlink()


def test_trainer_state_with_code_is_refused_not_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    toy_run(out, 4)
    marker = tmp_path / "pwned.txt"
    state = {"version": ckpt.STATE_VERSION, "step": 4, "x": None}
    evil_file(out / "last" / ckpt.TRAINER_STATE, marker, lambda p: {**state, "x": p})
    with pytest.raises(
        ModelLoadError, match=r"corrupt or not a trainer state: .*holds Python objects"
    ):
        ckpt.load_trainer_state(out / "last")
    assert not marker.exists()
    # the resume path: refused by the checksum first, then falls back to last.prev
    lines: list[str] = []
    assert toy_run(out, 6, log=lines.append, resume=True).step == 6
    assert any("skipping corrupt checkpoint" in m for m in lines)
    ckpt.write_manifest(out / "last.corrupt")  # even with a matching manifest: refused
    with pytest.raises(ModelLoadError, match=r"corrupt or not a trainer state"):
        ckpt.load_trainer_state(out / "last.corrupt")
    assert not marker.exists()


def test_hf_pytorch_model_bin_with_code_is_refused_not_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dhian.inference.load import load_model
    from dhian.interop.hf_dirs import import_hf_dir

    marker = tmp_path / "pwned.txt"
    bert = tmp_path / "bert"
    bert.mkdir()
    hf_cfg = {
        "model_type": "bert",
        "architectures": ["BertForMaskedLM"],
        "vocab_size": 16,
        "hidden_size": 8,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 16,
        "max_position_embeddings": 16,
        "type_vocab_size": 2,
    }
    (bert / "config.json").write_text(json.dumps(hf_cfg))
    evil_file(bert / "pytorch_model.bin", marker, lambda p: {"embeddings.word_embeddings": p})
    with pytest.raises(
        ModelLoadError, match="cannot be read as weights only: it holds Python objects"
    ) as info:
        load_model(bert)
    assert "weights_only=False" not in str(info.value)  # never advise running it
    assert "it would call exec" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ModelLoadError):
        import_hf_dir(bert, tmp_path / "imported")
    assert main(["import-hf", str(bert), str(tmp_path / "imported")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "imported").exists()

    # a Marian dir and a dhian model dir never even open a .bin
    marian = tmp_path / "marian"
    marian.mkdir()
    (marian / "config.json").write_text(json.dumps({"model_type": "marian"}))
    evil_file(marian / "pytorch_model.bin", marker)
    with pytest.raises(DhianError, match="never unpickles"):
        load_model(marian)
    ours = tmp_path / "ours"
    ours.mkdir()
    evil_file(ours / "pytorch_model.bin", marker)
    with pytest.raises(ModelLoadError, match="never unpickles"):
        model_io.load_model_dir(ours)
    assert not marker.exists()
