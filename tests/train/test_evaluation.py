"""Translation evaluation: length buckets (parsing, boundaries), BLEU per bucket against
sacrebleu on hand-picked subsets, the end-to-end evaluation of a tiny model on a tsv corpus,
the report files, alignment plots, and the dev-set beam using ``train.eval_length_penalty``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from sacrebleu.metrics import BLEU

from dhian import metrics
from dhian.config import DataConfig, RunConfig, TrainConfig
from dhian.errors import ConfigError
from dhian.inference.translate import translate_texts
from dhian.models.families import build_model
from dhian.models.model_dir import LoadedModel
from dhian.models.rnn.config import RNNSeq2SeqConfig
from dhian.text import train_tokenizer
from dhian.train.evaluation import (
    DEFAULT_BUCKETS,
    Bucket,
    assign_buckets,
    bleu_by_length,
    evaluate_translation,
    parse_buckets,
    write_report,
)
from dhian.viz.alignments import write_alignments

PAIRS = [
    ("ein roter hund", "a red dog"),
    ("zwei katzen schlafen im haus", "two cats sleep in the house"),
    ("der hund", "the dog"),
    ("eins zwei drei vier fünf sechs sieben acht neun zehn elf", "one two three four five"),
    ("das blaue haus", "the blue house"),
]


def test_parse_buckets() -> None:
    got = parse_buckets("0-10, 10-20,20-35,35+")
    assert got == [Bucket(0, 10), Bucket(10, 20), Bucket(20, 35), Bucket(35, None)]
    assert [b.label for b in got] == ["0-10", "10-20", "20-35", "35+"]
    assert [b.label for b in parse_buckets(DEFAULT_BUCKETS)][-1] == "60+"
    for bad, msg in [
        ("0-10,5-20", "overlap"),
        ("0-10,10+,20-30", "overlap"),
        ("10-5", "empty"),
        ("0-10,abc", "bad length bucket 'abc'"),
        ("", "bad length bucket"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            parse_buckets(bad)


def test_assign_buckets_boundaries() -> None:
    buckets = parse_buckets("0-10,10-20,30+")
    lengths = [0, 9, 10, 19, 20, 29, 30, 500]
    assert assign_buckets(lengths, buckets) == [0, 0, 1, 1, None, None, 2, 2]


def test_bleu_by_length_matches_sacrebleu_on_subsets() -> None:
    hyps = ["the cat sat", "a dog ran far away", "he went home", "the house is red", "yes"]
    refs = ["the cat sat", "a dog ran away", "she went home", "the house is blue", "no"]
    lengths = [3, 12, 5, 15, 70]
    got = bleu_by_length(hyps, refs, lengths, parse_buckets("0-10,10-20,20-30,60+"))
    assert [(b.bucket, b.n) for b in got] == [("0-10", 2), ("10-20", 2), ("20-30", 0), ("60+", 1)]

    def ref_bleu(idx: list[int]) -> float:
        return BLEU().corpus_score([hyps[i] for i in idx], [[refs[i] for i in idx]]).score

    assert got[0].bleu == pytest.approx(ref_bleu([0, 2]))
    assert got[1].bleu == pytest.approx(ref_bleu([1, 3]))
    assert got[2].bleu is None
    assert got[3].bleu == pytest.approx(ref_bleu([4]))
    assert got[0].bleu != pytest.approx(ref_bleu([0, 1, 2, 3, 4]))


def tiny_loaded(tmp_path: Path, seed: int = 0) -> LoadedModel:
    d = tmp_path / "corpus"
    d.mkdir(exist_ok=True)
    (d / "train.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in PAIRS * 3), "utf-8")
    (d / "test.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in PAIRS), "utf-8")
    tok = train_tokenizer("char", [x for p in PAIRS for x in p], vocab_size=60)
    cfg = RNNSeq2SeqConfig(type="rnnsearch", embed_dim=12, hidden_dim=12, dropout=0.0)
    torch.manual_seed(seed)
    model = build_model(cfg, tok.vocab_size, tok.vocab_size, tok.pad_id, tok.bos_id, tok.eos_id)
    run = RunConfig(
        model=cfg,
        data=DataConfig(corpus=f"tsv:{d}"),
        train=TrainConfig(eval_length_penalty=0.4),
    )
    return LoadedModel(model.eval(), run, {"src": tok, "tgt": tok}, "translation")


def test_evaluate_and_report(tmp_path: Path) -> None:
    loaded = tiny_loaded(tmp_path)
    buckets = parse_buckets("0-3,3-10,10+")
    res = evaluate_translation(loaded, name="tiny", beam=2, buckets=buckets, batch_size=2)
    assert res.corpus == loaded.config.data.corpus and res.split == "test"
    assert res.length_penalty == 0.4  # the config's eval_length_penalty
    assert res.sources == [p[0] for p in PAIRS] and res.refs == [p[1] for p in PAIRS]
    direct = translate_texts(loaded, res.sources, beam=2, length_penalty=0.4)
    assert res.hyps == [t.text for t in direct]
    assert [b.n for b in res.by_length] == [1, 3, 1]  # words: 3, 5, 2, 11, 3
    assert res.seconds > 0 and res.sents_per_s > 0

    other = evaluate_translation(
        tiny_loaded(tmp_path, seed=5), name="other", beam=1, buckets=buckets
    )
    assert other.hyps != res.hyps
    refs_ = res.refs
    lengths = [len(x.split()) for x in res.sources]
    oracle = dataclasses.replace(
        res,
        name="oracle",
        hyps=list(refs_),
        bleu=metrics.bleu(refs_, refs_),
        chrf=metrics.chrf(refs_, refs_),
        by_length=bleu_by_length(refs_, refs_, lengths, buckets),
    )
    paths = write_report([res, other, oracle], tmp_path / "out")
    hyps = paths["hyps:tiny"].read_text("utf-8").splitlines()
    refs = paths["refs"].read_text("utf-8").splitlines()
    assert hyps == res.hyps and paths["hyps:tiny"].name == "hyps.test.txt"
    assert paths["hyps:other"].name == "hyps.test.other.txt"
    data = json.loads(paths["json"].read_text("utf-8"))
    tiny_json, other_json, oracle_json = data["models"]
    assert tiny_json["bleu"] == pytest.approx(BLEU().corpus_score(hyps, [refs]).score)
    other_hyps = paths["hyps:other"].read_text("utf-8").splitlines()
    assert other_json["bleu"] == pytest.approx(BLEU().corpus_score(other_hyps, [refs]).score)
    assert other_json["beam"] == 1 and tiny_json["length_penalty"] == 0.4
    oracle_hyps = paths["hyps:oracle"].read_text("utf-8").splitlines()
    assert oracle_json["bleu"] == pytest.approx(BLEU().corpus_score(oracle_hyps, [refs]).score)
    assert oracle_json["bleu"] == pytest.approx(100.0)
    assert [b["n"] for b in tiny_json["by_length"]] == [1, 3, 1]
    md = paths["markdown"].read_text("utf-8")
    assert "| source words | n | tiny | other | oracle |" in md
    rows = {line.split(" | ")[0]: line for line in md.splitlines() if line.startswith("| ")}
    assert rows["| 3-10"].startswith("| 3-10 | 3 | ") and rows["| 3-10"].endswith("| 100.00 |")
    assert rows["| 10+"].startswith("| 10+ | 1 | ") and rows["| 10+"].endswith("| 100.00 |")
    assert rows["| oracle"].startswith("| oracle | 100.00 | 100.00 | 5 |")
    assert "nrefs:1" in md
    with Image.open(paths["png"]) as img:
        assert img.size[0] > 300 and img.size[1] > 150


def test_write_alignments(tmp_path: Path) -> None:
    loaded = tiny_loaded(tmp_path)
    texts = ["ein roter hund", "", "der hund"]
    out = translate_texts(loaded, texts, beam=2, need_weights=True, max_len_offset=3)
    pngs = write_alignments(out, tmp_path / "att")
    assert [p.name for p in pngs] == ["0001.png", "0003.png"]
    rec = json.loads((tmp_path / "att" / "0003.json").read_text("utf-8"))
    assert rec["source"] == "der hund" and rec["translation"] == out[2].text
    assert len(rec["weights"]) == len(rec["out_tokens"])
    assert all(len(row) == len(rec["src_tokens"]) for row in rec["weights"])
    assert out[2].attention is not None
    assert torch.tensor(rec["weights"]) == pytest.approx(out[2].attention, abs=1e-6)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        write_alignments(out, tmp_path / "file")


def test_dev_beam_uses_eval_length_penalty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TranslationTask.evaluate passes train.eval_length_penalty to beam search."""
    from dhian.train.tasks import translation
    from dhian.train.tasks.translation import TranslationTask

    d = tmp_path / "c"
    d.mkdir()
    for split in ("train", "dev"):
        (d / f"{split}.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in PAIRS), "utf-8")
    cfg = RunConfig(
        model=RNNSeq2SeqConfig(type="rnnsearch", embed_dim=8, hidden_dim=8),
        data=DataConfig(corpus=f"tsv:{d}", tokenizer="char", vocab_size=60, max_len=64),
        train=TrainConfig(eval_length_penalty=0.25),
    )
    task = TranslationTask(cfg, log=lambda _m: None)
    task.setup(None)
    model = task.build_model().eval()
    seen: list[float] = []
    real = translation.beam_search

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(args[4] if len(args) > 4 else kwargs["length_penalty"])
        return real(*args, **kwargs)

    monkeypatch.setattr(translation, "beam_search", spy)
    task.evaluate(model, torch.device("cpu"), beam=2, max_examples=3)
    assert seen == [0.25]
