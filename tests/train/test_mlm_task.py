"""The masked-LM task: a tiny BERT's masked-token accuracy rises on a tiny repetitive corpus and
it then fills masks; the head-on-masked-rows loss equals the full model's; batches are masked
dynamically (fresh per epoch, never specials) and reproducibly across a resume; init_from a
HuggingFace BERT dir continues from its backbone."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from dhian.config import RunConfig, load_run_config
from dhian.data.mlm import IGNORE_INDEX
from dhian.errors import ConfigError
from dhian.inference.fill_mask import fill_mask
from dhian.models.model_dir import load_model_dir
from dhian.train.tasks import token_loss
from dhian.train.tasks.mlm import MaskedLMTask, masked_logits
from helpers.training import quiet_trainer

REPO = Path(__file__).resolve().parents[2]
SENTENCES = [
    "alpha beta gamma delta epsilon zeta",
    "red green blue yellow purple orange",
    "one two three four five six",
    "north east south west up down",
]


def repetitive_corpus(root: Path, docs: int = 200) -> Path:
    """text:DIR whose documents (blank-line separated) are the four fixed word sequences."""
    rng = random.Random(0)  # random order: each sentence lands at every offset of a block
    d = root / "text"
    d.mkdir()
    for split, n in (("train", docs), ("dev", 40), ("test", 8)):
        body = "\n\n".join(rng.choice(SENTENCES) for _ in range(n))
        (d / f"{split}.txt").write_text(body + "\n", encoding="utf-8")
    return d


def tiny_mlm(root: Path, corpus: str, *sets: str) -> RunConfig:
    """configs/bert-tiny-mlm.yaml on ``corpus``, sized for a test."""
    return load_run_config(
        REPO / "configs" / "bert-tiny-mlm.yaml",
        [
            f"data.corpus={corpus}",
            "data.vocab_size=120",
            "data.block_size=16",
            "model.max_positions=16",
            f"train.out_dir={root / 'run'}",
            "train.save_every=0",
            "train.log_every=10",
            "train.eval_max_examples=0",
            *sets,
        ],
    )


def test_masked_accuracy_rises_and_fill_mask_works(tmp_path: Path) -> None:
    cfg = tiny_mlm(
        tmp_path,
        f"text:{repetitive_corpus(tmp_path)}",
        "train.max_steps=250",
        "train.eval_every=50",
        "train.lr=2e-3",
        "train.warmup_steps=30",
        "model.dropout=0",
        "model.attention_dropout=0",
    )
    result = quiet_trainer(cfg).fit()
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    acc = [r["dev_mlm_accuracy"] for r in rows if r["event"] == "eval"]
    assert result.best is not None and result.best["metric"] == "mlm_accuracy"
    # the run dir resolves to best/: the checkpoint of the best validation, not always the last
    best_acc = [
        r["dev_mlm_accuracy"]
        for r in rows
        if r["event"] == "eval" and r["step"] == result.best["step"]
    ]
    loss = [r["dev_loss"] for r in rows if r["event"] == "eval"]
    assert len(acc) == 5
    assert acc[-1] >= acc[0] + 0.3 and acc[-1] > 0.9, acc
    assert loss[-1] < loss[0]
    loaded = load_model_dir(tmp_path / "run" / "last")
    assert loaded.kind == "mlm"
    tok = loaded.tokenizers["src"]
    assert tok.kind == "wordpiece"  # trained on the train split
    mask = tok.id_to_token(tok.mask_id)  # <mask> for a WordPiece dhian trained
    top = fill_mask(loaded.model, tok, f"red green {mask} yellow purple orange", top_k=1)
    assert top[0][0][0] == "blue"
    # `dhian evaluate` on the dev split reproduces the training's last validation exactly
    from dhian.train.tasks.mlm_eval import evaluate_mlm

    res = evaluate_mlm(loaded, split="dev", max_docs=cfg.data.max_eval_examples)
    assert res["mlm_accuracy"] == pytest.approx(acc[-1], abs=1e-12)
    assert res["loss"] == pytest.approx(loss[-1], rel=1e-5)
    assert res["blocks"] > 0 and res["masked"] > 0 and res["source"].endswith(" dev")
    every = evaluate_mlm(loaded, split="dev", batch_size=1)
    assert every["documents"] == 40 > res["documents"] and every["masked"] > res["masked"]
    from dhian.cli import main as cli_main

    out = tmp_path / "eval"
    assert (
        cli_main(
            [
                "evaluate",
                "--model",
                str(tmp_path / "run"),
                "--split",
                "dev",
                "--max-examples",  # the documents the training validated on
                str(cfg.data.max_eval_examples),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    saved = json.loads((out / "eval.dev.json").read_text())
    assert len(best_acc) == 1 and best_acc[0] == max(acc)
    assert saved["mlm_accuracy"] == pytest.approx(best_acc[0], abs=1e-12)
    with pytest.raises(ConfigError, match="kind 'mlm'"):
        evaluate_mlm(type("L", (), {"kind": "lm"})())


def test_loss_on_masked_rows_equals_full_output() -> None:
    from dhian.models.bert.config import BertConfig
    from dhian.models.families import build_model

    torch.manual_seed(0)
    cfg = BertConfig(task="mlm", embed_dim=16, layers=1, heads=2, ff_dim=32, max_positions=12)
    model = build_model(cfg, 40).eval()
    src = torch.randint(7, 40, (3, 12))
    lengths = torch.tensor([12, 9, 5])
    tgt = torch.full_like(src, IGNORE_INDEX)
    tgt[0, 3], tgt[1, 1], tgt[1, 8], tgt[2, 0] = 11, 12, 13, 14

    class B:
        pass

    batch: Any = B()
    batch.src, batch.src_lengths, batch.type_ids, batch.tgt_out = src, lengths, None, tgt
    logits, target = masked_logits(model, batch)
    full = model(src, lengths).logits  # (B, T, V)
    ref = token_loss(full, tgt, IGNORE_INDEX)
    ours = token_loss(logits, target, IGNORE_INDEX)
    assert logits.shape == (4, 40) and target.tolist() == [11, 12, 13, 14]
    torch.testing.assert_close(logits, full[tgt != IGNORE_INDEX])
    torch.testing.assert_close(ours.loss, ref.loss)
    assert ours.count == ref.count == 4


def test_dynamic_masking_is_fresh_per_epoch_and_resumable(tmp_path: Path) -> None:
    cfg = tiny_mlm(tmp_path, f"text:{repetitive_corpus(tmp_path)}")
    task = MaskedLMTask(cfg, log=lambda m: None)
    task.setup(None)
    tok = task.tokenizers["src"]
    stream = task.train_stream(seed=7)
    per_epoch = len(stream.iterator)
    first = [next(stream) for _ in range(per_epoch)]
    second = [next(stream) for _ in range(per_epoch)]
    chosen = total = 0
    for b in first + second:
        real = torch.arange(b.src.size(1)).unsqueeze(0) < b.src_lengths.unsqueeze(1)
        labelled = b.tgt_out != IGNORE_INDEX
        original = torch.where(labelled, b.tgt_out, b.src)
        specials = torch.isin(original, torch.tensor(sorted(tok.special_ids)))
        assert not (labelled & (specials | ~real)).any()  # never a special or padding
        chosen += int(labelled.sum())
        total += int((real & ~specials).sum())
    assert 0.10 < chosen / total < 0.20

    def rows(batches: list[Any]) -> dict[int, torch.Tensor]:
        return {i: b.src[r, : int(b.src_lengths[r])] for b in batches for r, i in enumerate(b.ids)}

    one, two = rows(first), rows(second)
    assert one.keys() == two.keys() == set(range(len(task.train_data)))
    changed = sum(not torch.equal(one[i], two[i]) for i in one)
    assert changed > len(one) // 2  # each epoch masks afresh
    # a stream restored from a mid-epoch state yields the very same masked batches
    fresh = task.train_stream(seed=7)
    for _ in range(3):
        next(fresh)
    state = fresh.state_dict()
    resumed = task.train_stream(seed=7)
    resumed.load_state_dict(state)
    for want in first[3:6]:
        got = next(resumed)
        assert torch.equal(got.src, want.src) and torch.equal(got.tgt_out, want.tgt_out)


def test_init_from_hf_bert_dir_and_block_size_check(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from dhian.interop.hf_dirs import load_hf_dir

    words = " ".join(SENTENCES).split()
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(words))]
    hf_cfg = transformers.BertConfig(
        vocab_size=len(tokens),
        hidden_size=64,  # the sizes of configs/bert-tiny-mlm.yaml
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=16,
    )
    torch.manual_seed(0)
    hf = tmp_path / "hf"
    transformers.BertModel(hf_cfg).save_pretrained(str(hf))
    (hf / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    corpus = f"text:{repetitive_corpus(tmp_path)}"

    class Recording(MaskedLMTask):
        def init_weights(self, model: torch.nn.Module, path: str) -> None:
            super().init_weights(model, path)
            self.initial = {k: v.detach().clone() for k, v in model.state_dict().items()}

    cfg = tiny_mlm(tmp_path, corpus, f"train.init_from={hf}", "train.max_steps=2")
    lines: list[str] = []
    task = Recording(cfg, log=lines.append)
    quiet_trainer(cfg, task, log=lines.append).fit()
    pretrained = load_hf_dir(hf, task="backbone").model.state_dict()
    for k, v in pretrained.items():
        if not k.startswith("pooler."):  # an MLM model has no pooler: reported unused
            assert torch.equal(task.initial[f"backbone.{k}"], v), k
    assert any("mlm head not in the checkpoint" in x for x in lines)
    assert any("unused (backbone.pooler" in x for x in lines)
    assert task.tokenizers["src"].vocab_size == len(tokens)
    with pytest.raises(ConfigError, match=r"data\.block_size=32 must be in 3\.\.16"):
        MaskedLMTask(tiny_mlm(tmp_path, corpus, "data.block_size=32")).setup(None)
