"""The classification task on generated corpora: a tiny BERT overfits a tiny labelled set, a
frozen encoder stays bitwise unchanged (init_from a HuggingFace BERT dir + its WordPiece), resume
is bitwise exact, AG News plugs into the same recipe, the Keras-style model gets plain ids, and
the library evaluation writes its table and PNG. Also: ``train.task`` selection."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from dhian.cli import main
from dhian.config import RunConfig, load_run_config, replace
from dhian.errors import ConfigError
from dhian.models.model_dir import load_model_dir
from dhian.train.tasks import task_for
from dhian.train.tasks.classification import ClassificationTask, evaluate_classification
from dhian.train.tasks.mlm import MaskedLMTask
from dhian.train.trainer import Trainer
from helpers.training import assert_resume_is_exact, quiet_trainer

REPO = Path(__file__).resolve().parents[2]
POS = ["good", "great", "superb", "lovely"]
NEG = ["bad", "awful", "dull", "boring"]
FILLER = ["the", "film", "was", "a", "movie", "plot", "and", "story", "really", "quite"]
AGNEWS = ["World", "Sports", "Business", "Sci/Tech"]


def sentiment_corpus(root: Path, sizes: tuple[int, int, int] = (48, 16, 16)) -> Path:
    """csv:DIR with text,label; the label is given by one sentiment word among fillers."""
    rng = random.Random(0)
    d = root / "sentiment"
    d.mkdir()
    for split, n in zip(("train", "dev", "test"), sizes, strict=True):
        with open(d / f"{split}.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["text", "label"])
            for _ in range(n):
                positive = rng.random() < 0.5
                words = [rng.choice(FILLER) for _ in range(rng.randint(3, 8))]
                words.insert(rng.randint(0, len(words)), rng.choice(POS if positive else NEG))
                w.writerow([" ".join(words), "positive" if positive else "negative"])
    return d


def rows_of(data: Path, split: str) -> list[tuple[str, str]]:
    """(text, label) rows of a split written by :func:`sentiment_corpus`."""
    with open(data / f"{split}.csv", encoding="utf-8") as fh:
        return [(row["text"], row["label"]) for row in csv.DictReader(fh)]


def agnews_corpus(root: Path) -> Path:
    """agnews:DIR in the canonical CSV layout (no header: class 1-4, title, description)."""
    rng = random.Random(1)
    topic = {1: "war election", 2: "match goal", 3: "stocks profit", 4: "software chip"}
    d = root / "agnews"
    d.mkdir()
    for name, n in (("train.csv", 80), ("test.csv", 12)):
        with open(d / name, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            for i in range(n):
                cls = i % 4 + 1
                title = f"{rng.choice(FILLER)} {topic[cls].split()[0]}"
                desc = " ".join([rng.choice(FILLER), topic[cls].split()[1], rng.choice(FILLER)])
                w.writerow([str(cls), title, desc])
    return d


def tiny_cls(root: Path, corpus: str, *sets: str) -> RunConfig:
    """configs/bert-tiny-cls.yaml on ``corpus``, sized for a test."""
    return load_run_config(
        REPO / "configs" / "bert-tiny-cls.yaml",
        [
            f"data.corpus={corpus}",
            "data.vocab_size=200",
            f"train.out_dir={root / 'run'}",
            "train.batch_size=16",
            "train.save_every=0",
            "train.log_every=5",
            *sets,
        ],
    )


def fit(cfg: RunConfig, task: Any = None) -> Trainer:
    t = quiet_trainer(cfg, task)
    t.fit()
    return t


def evals(out: Path) -> list[dict[str, Any]]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["event"] == "eval"]


def test_tiny_bert_overfits_and_evaluates(tmp_path: Path) -> None:
    data = sentiment_corpus(tmp_path)
    cfg = tiny_cls(
        tmp_path,
        f"csv:{data}",
        "train.max_steps=45",
        "train.eval_every=15",
        "train.lr=3e-3",
        "model.dropout=0",
        "model.attention_dropout=0",
    )
    trainer = fit(cfg)
    rows = evals(tmp_path / "run")
    assert rows[-1]["dev_loss"] < rows[0]["dev_loss"]
    loaded = load_model_dir(tmp_path / "run" / "last")
    assert loaded.kind == "classification"
    assert loaded.config.model.labels == ("negative", "positive")
    # the training split is learnt exactly; the scores agree with an independent recount
    res = evaluate_classification(loaded, f"csv:{data}", "train", tmp_path / "eval")
    assert res["accuracy"] == 1.0 and res["macro_f1"] == 1.0
    m = res["confusion"]
    gold = [label for _, label in rows_of(data, "train")]
    assert m == [[gold.count("negative"), 0], [0, gold.count("positive")]]
    assert (tmp_path / "eval" / "confusion.png").stat().st_size > 1000
    md = (tmp_path / "eval" / "confusion.md").read_text()
    assert md == res["markdown"] and f"| total | {m[0][0]} | {m[1][1]} | {len(gold)} |" in md
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["accuracy"] == 1.0 and saved["examples"] == len(gold)
    # the dev metrics of the last eval are the task's own computation on the dev split
    dev = evaluate_classification(loaded, f"csv:{data}", "dev")
    assert dev["accuracy"] == pytest.approx(trainer.last_eval["accuracy"])
    assert dev["loss"] == pytest.approx(trainer.last_eval["loss"], rel=1e-5)


def hf_bert_dir(root: Path, words: list[str]) -> Path:
    """A tiny random HuggingFace BertModel dir with a lowercase vocab.txt of ``words``."""
    transformers = pytest.importorskip("transformers")
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(words))]
    cfg = transformers.BertConfig(
        vocab_size=len(tokens),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    d = root / "hf"
    transformers.BertModel(cfg).save_pretrained(str(d))
    (d / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return d


class RecordingTask(ClassificationTask):
    """Keeps the weights right after ``init_from`` (before any update)."""

    def init_weights(self, model: torch.nn.Module, path: str) -> None:
        super().init_weights(model, path)
        self.initial = {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_frozen_encoder_stays_unchanged(tmp_path: Path) -> None:
    from dhian.interop.hf_dirs import load_hf_dir

    data = sentiment_corpus(tmp_path)
    hf = hf_bert_dir(tmp_path, POS + NEG + FILLER)
    cfg = tiny_cls(
        tmp_path,
        f"csv:{data}",
        f"train.init_from={hf}",
        "train.freeze=backbone",
        "train.max_steps=6",
        "train.eval_every=3",
        "train.lr=1e-2",
        "model.embed_dim=16",
        "model.ff_dim=32",
        "model.max_positions=32",
        "data.max_len=32",
    )
    task = RecordingTask(cfg)
    fit(cfg, task)
    after = load_file(str(tmp_path / "run" / "last" / "model.safetensors"))
    pretrained = load_hf_dir(hf, task="backbone").model.state_dict()
    backbone = [k for k in after if k.startswith("backbone.")]
    assert len(backbone) == len(pretrained)
    for k in backbone:  # bitwise the HF checkpoint, untouched by 6 AdamW steps at lr 1e-2
        assert torch.equal(after[k], pretrained[k.removeprefix("backbone.")]), k
        assert torch.equal(after[k], task.initial[k]), k
    for k in ("classifier.weight", "classifier.bias"):
        assert not torch.equal(after[k], task.initial[k]), k
    # the pretrained WordPiece (ids of vocab.txt) is the model's tokenizer
    tok = load_model_dir(tmp_path / "run" / "last").tokenizers["src"]
    assert tok.vocab_size == len((hf / "vocab.txt").read_text().split())
    assert tok.encode("superb film") == [tok.token_to_id("superb"), tok.token_to_id("film")]


def test_resume_is_bitwise_exact(tmp_path: Path) -> None:
    """6 straight steps == 3 steps + stop + resume for 3 (BERT with dropout, shuffled batches).

    Both runs share one saved WordPiece: HF ``WordPieceTrainer`` numbers its ``##`` pieces in
    hash-map order, so two trainings on the same text may differ (huggingface/tokenizers#1794);
    a resume itself always reloads the run's saved tokenizer.
    """
    from dhian.text import train_tokenizer

    data = sentiment_corpus(tmp_path)
    texts = [text for text, _ in rows_of(data, "train")]
    train_tokenizer("wordpiece", texts, 200, lowercase=True).save(tmp_path / "tok")
    base = tiny_cls(
        tmp_path,
        f"csv:{data}",
        f"data.tokenizer_path={tmp_path / 'tok'}",
        "train.max_steps=6",
        "train.eval_every=2",
    )

    assert_resume_is_exact(base, tmp_path, stop=3)
    assert load_model_dir(tmp_path / "b" / "last").config.model.labels == ("negative", "positive")


def test_agnews_plugs_into_the_same_recipe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    data = agnews_corpus(tmp_path)
    out = tmp_path / "run"
    args = ["train", str(REPO / "configs" / "bert-tiny-cls.yaml"), "--quiet", "--out", str(out)]
    sets = [f"data.corpus=agnews:{data}", "train.max_steps=3", "train.save_every=0"]
    assert main(args + [x for s in sets for x in ("--set", s)]) == 0
    loaded = load_model_dir(out / "best")
    assert loaded.config.model.num_labels == 4 and list(loaded.config.model.labels) == AGNEWS
    assert loaded.model.state_dict()["classifier.weight"].shape[0] == 4
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO("match goal film\nstocks profit\n"))
    assert main(["classify", "--model", str(out / "best")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    for line in lines:
        label, probs = line.split("\t")
        assert label in AGNEWS and [p.split("=")[0] for p in probs.split()] == AGNEWS
    res = evaluate_classification(loaded, f"agnews:{data}", "test", tmp_path / "eval")
    assert res["labels"] == AGNEWS and res["examples"] == 12
    assert [sum(row) for row in res["confusion"]] == [3, 3, 3, 3]
    # dhian evaluate: the model's own corpus by default, same numbers, same table
    ev = tmp_path / "cli-eval"
    assert main(["evaluate", "--model", str(out / "best"), "--out", str(ev)]) == 0
    printed = capsys.readouterr().out
    assert f"accuracy {res['accuracy']:.4f}" in printed and res["markdown"] in printed
    assert (ev / "confusion.png").is_file() and (ev / "confusion.md").read_text() == res["markdown"]


def test_keras_classifier_gets_plain_ids(tmp_path: Path) -> None:
    data = sentiment_corpus(tmp_path)
    cfg = load_run_config(
        REPO / "configs" / "keras-rotten-tomatoes.yaml",
        [
            f"data.corpus=csv:{data}",
            "data.vocab_size=200",
            f"train.out_dir={tmp_path / 'run'}",
            "train.max_steps=2",
            "train.eval_every=2",
            "train.save_every=0",
        ],
    )
    trainer = fit(cfg)
    task = trainer.task
    assert isinstance(task, ClassificationTask) and not task.bert_inputs
    tok = task.tokenizers["src"]
    first = task.train_data.src[0]
    assert task.train_data.type_ids is None and tok.cls_id not in first and tok.sep_id not in first
    assert first == tok.encode(rows_of(data, "train")[0][0])
    loaded = load_model_dir(tmp_path / "run" / "last")
    assert loaded.config.model.type == "keras_classifier"
    assert loaded.config.model.labels == ("negative", "positive")


def test_task_selection_and_label_checks(tmp_path: Path) -> None:
    cfg = load_run_config(REPO / "configs" / "bert-tiny-cls.yaml")
    assert type(task_for(cfg)) is ClassificationTask
    mlm = load_run_config(REPO / "configs" / "bert-tiny-mlm.yaml")
    assert type(task_for(mlm)) is MaskedLMTask
    explicit = replace(mlm, train=replace(mlm.train, task="mlm"))
    assert type(task_for(explicit)) is MaskedLMTask
    with pytest.raises(
        ConfigError, match=r"cannot train model\.type 'bert' with model\.task 'mlm'"
    ):
        task_for(replace(mlm, train=replace(mlm.train, task="classification")))
    with pytest.raises(ConfigError, match="did you mean 'classification'"):
        task_for(replace(cfg, train=replace(cfg.train, task="clasification")))
    backbone = replace(cfg, model=replace(cfg.model, task="backbone"))
    with pytest.raises(ConfigError, match=r"no training task for model\.type 'bert'"):
        task_for(backbone)
    data = sentiment_corpus(tmp_path)
    wrong = tiny_cls(tmp_path, f"csv:{data}", "model.labels=[pos, neg]")
    with pytest.raises(ConfigError, match="differ from the classes of the corpus"):
        ClassificationTask(wrong, log=lambda m: None).setup(None)
    too_long = tiny_cls(tmp_path, f"csv:{data}", "data.max_len=100")
    with pytest.raises(ConfigError, match=r"data.max_len=100 must be in 1..64"):
        ClassificationTask(too_long, log=lambda m: None).setup(None)
