"""The token-classification and question-answering tasks on fixture corpora: a tiny BERT learns
them (configs/bert-tiny-ner.yaml, bert-tiny-qa.yaml), a frozen pretrained backbone stays bitwise
unchanged while the head learns, resume is bitwise exact, and the trained dirs serve
``dhian tag`` / ``answer`` / ``evaluate``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dhian.cli import main
from dhian.config import RunConfig, load_run_config
from dhian.inference.load import load_model
from dhian.train.tasks import task_for
from dhian.train.tasks.question_answering import QuestionAnsweringTask
from dhian.train.tasks.token_classification import TokenClassificationTask
from helpers.ner_qa import CONTEXT, NER_WORDS, write_conll, write_squad
from helpers.training import assert_resume_is_exact, quiet_trainer

REPO = Path(__file__).resolve().parents[2]
SMALL = ["model.embed_dim=32", "model.ff_dim=64", "train.log_every=1000"]


def recipe(name: str, root: Path, corpus: str, *sets: str) -> RunConfig:
    return load_run_config(
        REPO / "configs" / name,
        [f"data.corpus={corpus}", f"train.out_dir={root / 'run'}", *SMALL, *sets],
    )


def test_tagger_learns_the_fixture_and_serves_the_verbs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_conll(tmp_path / "conll", copies=8)
    cfg = recipe(
        "bert-tiny-ner.yaml",
        tmp_path,
        f"conll:{data}",
        "train.max_steps=60",
        "train.eval_every=60",
        "train.save_every=60",
        "train.batch_size=8",
        "train.lr=3e-3",
        "train.warmup_steps=5",
        "data.vocab_size=200",
    )
    assert isinstance(task_for(cfg), TokenClassificationTask)
    trainer = quiet_trainer(cfg)
    trainer.fit()
    assert trainer.last_eval["entity_f1"] >= 0.9, trainer.last_eval
    loaded = load_model(tmp_path / "run")
    assert loaded.kind == "token_classification"
    assert loaded.config.model.labels == ("O", "B-LOC", "B-MISC", "B-ORG", "I-ORG", "B-PER")
    # dhian tag: words/labels and entity spans with character offsets
    import io
    import sys

    old = sys.stdin
    sys.stdin = io.StringIO("Bob works at Acme Corp .\nAnna lives in Paris .\n")
    try:
        assert main(["tag", "--model", str(tmp_path / "run"), "--json"]) == 0
    finally:
        sys.stdin = old
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["type"] for e in rows[0]["entities"]] == ["PER", "ORG"]
    org = rows[0]["entities"][1]
    assert org["text"] == "Acme Corp" and rows[0]["text"][org["start"] : org["end"]] == "Acme Corp"
    assert [t["label"] for t in rows[1]["tokens"]] == ["B-PER", "O", "O", "B-LOC", "O"]
    # dhian evaluate on the test split: the same seqeval numbers as the task's dev pass
    assert main(["evaluate", "--model", str(tmp_path / "run"), "--split", "dev"]) == 0
    out = capsys.readouterr().out
    f1 = float(next(line for line in out.splitlines() if line.startswith("entity_f1:")).split()[1])
    assert f1 == pytest.approx(trainer.last_eval["entity_f1"])


def test_frozen_pretrained_backbone_stays_unchanged(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from helpers.bert import write_vocab

    hf = tmp_path / "hf"
    vocab = write_vocab(tmp_path, NER_WORDS)
    n = len(vocab.read_text().split())
    torch.manual_seed(0)
    transformers.BertModel(
        transformers.BertConfig(
            vocab_size=n,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=64,
        )
    ).save_pretrained(str(hf))
    (hf / "vocab.txt").write_text(vocab.read_text())
    data = write_conll(tmp_path / "conll")
    cfg = recipe(
        "bert-tiny-ner.yaml",
        tmp_path,
        f"conll:{data}",
        f"train.init_from={hf}",
        "train.freeze=backbone",
        "model.embed_dim=16",
        "model.ff_dim=32",
        "data.lowercase=true",
        "train.max_steps=4",
        "train.eval_every=4",
        "train.lr=1e-2",
    )
    quiet_trainer(cfg).fit()
    after = load_file(str(tmp_path / "run" / "last" / "model.safetensors"))
    from dhian.interop.hf_dirs import load_hf_dir

    pretrained = load_hf_dir(hf, task="token_classification").model.state_dict()
    backbone = [k for k in after if k.startswith("backbone.")]
    assert backbone and all(torch.equal(after[k], pretrained[k]) for k in backbone)
    assert not torch.equal(after["classifier.weight"], pretrained["classifier.weight"])


@pytest.mark.parametrize("kind", ["ner", "qa"])
def test_resume_is_bitwise_exact(kind: str, tmp_path: Path) -> None:
    """6 straight steps == 3 + stop + resume 3. A fixed WordPiece (data.tokenizer_path): HF's
    WordPiece trainer orders tied subwords differently from run to run."""
    from helpers.bert import write_vocab

    write_vocab(tmp_path, NER_WORDS)
    if kind == "ner":
        corpus = f"conll:{write_conll(tmp_path / 'c', copies=2)}"
        name = "bert-tiny-ner.yaml"
    else:
        corpus = f"squad:{write_squad(tmp_path / 's', copies=2)}"
        name = "bert-tiny-qa.yaml"
    cfg = recipe(
        name,
        tmp_path,
        corpus,
        "train.max_steps=6",
        "train.eval_every=3",
        "train.save_every=3",
        "train.batch_size=2",
        f"data.tokenizer_path={tmp_path}",
        "data.lowercase=true",
    )
    assert_resume_is_exact(cfg, tmp_path, stop=3)


def test_qa_learns_the_fixture_and_answers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_squad(tmp_path / "squad", copies=12)
    cfg = recipe(
        "bert-tiny-qa.yaml",
        tmp_path,
        f"squad:{data}",
        "train.max_steps=200",
        "train.eval_every=200",
        "train.save_every=200",
        "train.batch_size=8",
        "train.lr=3e-3",
        "train.warmup_steps=5",
        "data.vocab_size=200",
        "data.max_len=48",  # one window per context (windows: tests/data, tests/inference)
        "model.max_positions=48",
    )
    assert isinstance(task_for(cfg), QuestionAnsweringTask)
    trainer = quiet_trainer(cfg)
    trainer.fit()
    assert trainer.last_eval["exact_match"] >= 75.0, trainer.last_eval
    ctx = tmp_path / "ctx.txt"
    ctx.write_text(CONTEXT)
    code = main(
        ["answer", "--model", str(tmp_path / "run"), "--context", str(ctx), "Where does Bob live?"]
    )
    assert code == 0 and capsys.readouterr().out.strip() == "London"
    assert main(["evaluate", "--model", str(tmp_path / "run"), "--split", "dev"]) == 0
    out = capsys.readouterr().out
    em = float(
        next(line for line in out.splitlines() if line.startswith("exact_match:")).split()[1]
    )
    assert em == pytest.approx(trainer.last_eval["exact_match"])
