"""``dhian train`` end to end on a tiny generated parallel corpus (real tokenizer, RNNsearch,
greedy BLEU/chrF), resume through the CLI, and one-line errors for bad configs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import yaml

from dhian.cli import main
from dhian.decoding import greedy_decode
from dhian.models.io import load_model_dir

WORDS = {
    "one": "eins",
    "two": "zwei",
    "three": "drei",
    "red": "rot",
    "blue": "blau",
    "house": "haus",
    "cat": "katze",
    "big": "gross",
}


def corpus(root: Path) -> Path:
    rng = random.Random(0)
    d = root / "corpus"
    d.mkdir()
    for split, n in (("train", 60), ("dev", 6)):
        rows = []
        for _ in range(n):
            en = [rng.choice(list(WORDS)) for _ in range(rng.randint(2, 4))]
            rows.append(" ".join(en) + "\t" + " ".join(WORDS[w] for w in en))
        (d / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return d


def recipe(root: Path, **train: object) -> Path:
    cfg = {
        "model": {"type": "rnnsearch", "embed_dim": 16, "hidden_dim": 16, "dropout": 0.1},
        "data": {
            "corpus": f"tsv:{corpus(root)}",
            "tokenizer": "char",
            "vocab_size": 60,
            "max_len": 40,
        },
        "train": {
            "out_dir": str(root / "run"),
            "max_steps": 6,
            "batch_size": 8,
            "max_tokens": 0,
            "lr": 3e-3,
            "warmup_steps": 2,
            "eval_every": 3,
            "eval_max_examples": 4,
            "log_every": 2,
            "save_every": 0,
            "num_threads": 1,
            **train,
        },
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def test_train_end_to_end_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = recipe(tmp_path)
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
    cfg = recipe(tmp_path)
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
    from safetensors.torch import load_file

    from dhian.config import load_run_config, replace
    from dhian.train.engine import Trainer

    base = load_run_config(recipe(tmp_path), ["train.eval_every=2", "train.save_every=0"])

    def trainer(out: str, resume: bool = False, stop: int = 0) -> Trainer:
        cfg = replace(base, train=replace(base.train, out_dir=str(tmp_path / out)))

        def cb(t: Trainer) -> None:
            if t.step == stop:
                t.request_stop()

        return Trainer(
            cfg,
            resume=resume,
            progress=False,
            log=lambda m: None,
            callbacks=[cb] if stop else [],
            curves=False,
        )

    assert trainer("a").fit().step == 6
    assert trainer("b", stop=3).fit().step == 3
    assert trainer("b", resume=True).fit().step == 6
    wa = load_file(str(tmp_path / "a" / "last" / "model.safetensors"))
    wb = load_file(str(tmp_path / "b" / "last" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

    def rows(out: str) -> list[dict[str, object]]:
        lines = (tmp_path / out / "metrics.jsonl").read_text().splitlines()
        return [
            {k: v for k, v in json.loads(x).items() if k not in ("wall", "tokens_per_s")}
            for x in lines
        ]

    assert rows("a") == rows("b")
