"""Where a run starts: ``train.init_from`` from a HuggingFace dir (converted by dhian.interop),
bad sources, and ``--resume auto`` (fresh when there is no checkpoint, else an exact resume —
also under ``torchrun --max-restarts`` after a kill -9, slow)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_corpus import recipe, rows, same_weights, wait_for

from dhian.cli import main
from dhian.errors import ConfigError, ModelLoadError
from dhian.models import build_model
from dhian.train.warmstart import has_checkpoint, init_source, load_init_weights, resolve_resume


def test_init_from_hf_bert_dir(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from dhian.interop.registry import load_hf_dir

    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "##s"]
    cfg = transformers.BertConfig(
        vocab_size=len(tokens),
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
    )
    torch.manual_seed(0)
    hf = transformers.BertModel(cfg)
    d = tmp_path / "hf"
    hf.save_pretrained(str(d))
    (d / "vocab.txt").write_text("\n".join(tokens) + "\n")

    assert init_source(d) == d  # the tokenizer loads from the HF dir itself
    reference = load_hf_dir(d)
    torch.manual_seed(1)
    fresh = build_model(reference.config.model, **reference.build_kwargs)
    lines: list[str] = []
    missing = load_init_weights(fresh, d, lines.append)
    assert missing == []
    want = reference.model.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in fresh.state_dict().items())
    assert lines and "0 tensors left as initialised" in lines[0]


def test_bad_init_sources(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not a directory"):
        init_source(tmp_path / "missing")
    with pytest.raises(ModelLoadError, match="neither a dhian model dir"):
        init_source(tmp_path)


# --------------------------------------------------------------------------- --resume auto


def test_has_checkpoint_sees_every_resume_candidate(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert not has_checkpoint(out)  # no dir at all
    out.mkdir()
    for leftover in ("config.yaml", "metrics.jsonl"):  # a crash before the first save
        (out / leftover).write_text("x", encoding="utf-8")
    (out / "tokenizer").mkdir()
    (out / ".last.tmp-1234").mkdir()  # a torn first write is not a checkpoint
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "step-12").mkdir()  # not the step-NNNNNNNN pattern
    assert not has_checkpoint(out)
    assert resolve_resume("auto", out) is False
    assert resolve_resume(False, out) is False
    assert resolve_resume(True, out) is True and resolve_resume("must", out) is True
    for name in ("last", "last.prev", ".last.old", "checkpoints/step-00000012"):
        (out / name).mkdir()
        assert has_checkpoint(out) and resolve_resume("auto", out), name
        (out / name).rmdir()
    with pytest.raises(ConfigError, match="not a resume mode"):
        resolve_resume("sometimes", out)  # type: ignore[arg-type]


def test_resume_auto_starts_fresh_then_continues_exactly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--resume auto`` twice: the first call starts a run (over the leftovers of a crash
    before any checkpoint), the second continues it; the result equals a straight run."""
    cfg = recipe(tmp_path, max_steps=8, save_every=4, eval_every=4, log_every=2)
    ref, out = tmp_path / "ref", tmp_path / "run"
    assert main(["train", str(cfg), "--quiet", "--out", str(ref)]) == 0
    out.mkdir()
    (out / "config.yaml").write_text("left: over\n", encoding="utf-8")
    (out / "metrics.jsonl").write_text('{"event": "train", "step": 99}\n', encoding="utf-8")
    capsys.readouterr()
    auto = ["train", str(cfg), "--quiet", "--out", str(out), "--resume", "auto"]
    assert main([*auto, "--set", "train.max_steps=4"]) == 0
    assert "stopped: max_steps at step 4" in capsys.readouterr().out
    assert main(auto) == 0
    printed = capsys.readouterr().out
    assert "stopped: max_steps at step 8" in printed
    assert same_weights(out / "last", ref / "last") and same_weights(out / "best", ref / "best")
    assert rows(out) == rows(ref)  # the leftover row is gone, nothing repeated


def test_bare_resume_still_requires_a_run_and_auto_never_hides_corruption(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = recipe(tmp_path)
    out = tmp_path / "run"
    assert main(["train", str(cfg), "--quiet", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: nothing to resume in") and len(err.strip().splitlines()) == 1
    (out / "last").mkdir(parents=True)  # a checkpoint whose files are all gone
    assert main(["train", str(cfg), "--quiet", "--out", str(out), "--resume", "auto"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: every checkpoint in") and "corrupt" in err, err


@pytest.mark.slow
def test_torchrun_max_restarts_with_resume_auto(tmp_path: Path) -> None:
    """``torchrun --max-restarts 1 -m dhian train CONFIG --resume auto``: kill -9 the worker
    mid-run; torchrun restarts it, it resumes from the last checkpoint and ends exactly where
    a straight run ends."""
    cfg = recipe(tmp_path, max_steps=12, save_every=3, eval_every=6)
    ref, out = tmp_path / "ref", tmp_path / "run"
    assert main(["train", str(cfg), "--quiet", "--out", str(ref)]) == 0
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", DHIAN_FAULT_PAUSE_S="0.05")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1"]
    cmd += ["--max-restarts", "1", "--monitor-interval", "0.5"]
    cmd += ["-m", "dhian", "train", str(cfg), "--quiet", "--out", str(out), "--resume", "auto"]
    log_path = tmp_path / "torchrun.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(
                lambda: any(r["step"] >= 5 for r in rows(out, "train")),
                timeout=180,
                alive=lambda: proc.poll() is None,
            )
            workers = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            assert len(workers) == 1, workers
            os.kill(int(workers[0]), signal.SIGKILL)
            killed_at = max(r["step"] for r in rows(out, "train"))
            assert proc.wait(timeout=300) == 0, log_path.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
    printed = log_path.read_text()
    assert killed_at < 12 and "resumed at step" in printed, printed[-3000:]
    assert printed.count("stopped: max_steps at step 12") == 1, printed[-3000:]
    assert same_weights(out / "last", ref / "last") and same_weights(out / "best", ref / "best")
    assert rows(out) == rows(ref)
