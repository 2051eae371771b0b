"""``dhian train`` end to end on a tiny generated parallel corpus (real tokenizer, RNNsearch,
greedy BLEU/chrF), resume through the CLI, and one-line errors for bad configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from dhian.cli import main
from dhian.decoding import greedy_decode
from dhian.models.model_dir import load_model_dir
from helpers.corpus import recipe
from helpers.training import assert_resume_is_exact


def tiny_recipe(root: Path, **train: object) -> Path:
    """The shared tiny RNNsearch recipe with dropout, run 6 steps without intermediate saves."""
    knobs: dict[str, object] = dict(
        max_steps=6, batch_size=8, eval_every=3, log_every=2, save_every=0
    )
    return recipe(root, dropout=0.1, **{**knobs, **train})


def test_train_end_to_end_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tiny_recipe(tmp_path)
    out = tmp_path / "out"
    assert (
        main(["train", str(cfg), "--quiet", "--out", str(out), "--set", "train.max_steps=4"]) == 0
    )
    printed = capsys.readouterr().out
    assert "stopped: max_steps at step 4" in printed
    assert "nrefs:1|case:mixed|eff:no|tok:13a" in printed  # sacrebleu signature shown
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "curves.png",
        "tokenizer/dhian_tokenizer.json",
        "last/model.safetensors",
        "last/trainer_state.pt",
        "best/model.safetensors",
    ):
        assert (out / name).is_file(), name
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train"]["out_dir"] == str(out) and saved["train"]["max_steps"] == 4
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["event"] == "eval"]
    assert [r["step"] for r in evals] == [3, 4]
    for key in ("dev_loss", "dev_ppl", "dev_bleu", "dev_chrf", "bleu_signature"):
        assert key in evals[0]
    assert all(0 <= r["dev_bleu"] <= 100 for r in evals)

    # continue the same run to step 6 (evaluation knobs may change on resume: beam search now)
    args = ["train", str(cfg), "--quiet", "--out", str(out), "--resume"]
    assert main([*args, "--set", "train.eval_beam=2"]) == 0
    assert "stopped: max_steps at step 6" in capsys.readouterr().out
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["event"] == "eval"] == [3, 4, 6]
    loaded = load_model_dir(out / "last")
    assert loaded.kind == "translation" and loaded.config.train.max_steps == 6
    src_tok = loaded.tokenizers["src"]
    src = torch.tensor([src_tok.encode("one red house")])
    (hyp,) = greedy_decode(loaded.model, src, torch.tensor([src.size(1)]), max_len=8)
    assert len(hyp.tokens) <= 8 and isinstance(loaded.tokenizers["tgt"].decode(hyp.tokens), str)

    # starting again into the same dir without --resume is refused
    assert main(["train", str(cfg), "--quiet", "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_bad_configs_give_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tiny_recipe(tmp_path)
    assert main(["train", str(cfg), "--set", "train.max_step=3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "did you mean 'max_steps'" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1

    data = yaml.safe_load(cfg.read_text())
    data["model"]["hiden_dim"] = 8
    cfg.write_text(yaml.safe_dump(data))
    assert main(["train", str(cfg)]) == 2
    assert "did you mean 'hidden_dim'" in capsys.readouterr().err

    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err

    data["model"].pop("hiden_dim")
    cfg.write_text(yaml.safe_dump(data))
    assert main(["train", str(cfg), "--set", "train.schedule=cosin"]) == 2
    assert "did you mean 'cosine'" in capsys.readouterr().err
    assert main(["train", str(cfg), "--set", "train.early_stop_metric=blue"]) == 2
    assert "did you mean 'bleu'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # rejected before any work or output


def test_translation_resume_is_bitwise_exact(tmp_path: Path) -> None:
    """Real data path (tsv corpus, BatchIterator, RNNsearch with dropout): 6 straight steps ==
    3 steps + stop + resume for 3."""
    from dhian.config import load_run_config

    base = load_run_config(tiny_recipe(tmp_path), ["train.eval_every=2", "train.save_every=0"])
    assert_resume_is_exact(base, tmp_path, stop=3)
