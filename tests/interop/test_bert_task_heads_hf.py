"""HF parity of the per-token BERT heads (BertForTokenClassification, BertForQuestionAnswering):
random-weight checkpoints made here by transformers itself (the oracle), imported, run, exported
and read back by transformers; unsupported architectures and missing heads are clear errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from dhian.cli import main
from dhian.errors import ModelLoadError
from dhian.inference.load import load_for_task, load_model
from dhian.interop.hf_bert import import_hf_bert
from dhian.interop.hf_dirs import export_hf_dir
from helpers.bert import write_vocab
from helpers.threads import torch_threads

transformers = pytest.importorskip("transformers")

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
WORDS = ["the", "of", "is", "paris", "france", "capital", "city", "who", "where", "anna"]


@pytest.fixture(autouse=True)
def few_threads() -> Iterator[None]:
    with torch_threads(2):
        yield


def hf_config(**kw: object) -> object:
    """A tiny HF BertConfig (2 layers, E=32) over the test vocab; ``kw`` override fields."""
    args: dict[str, object] = dict(
        vocab_size=90,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    args.update(kw)
    return transformers.BertConfig(**args)


def save_hf(model: torch.nn.Module, d: Path) -> Path:
    """Save an HF model with random (non-zero) weights and the test vocab.txt into ``d``."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # biases non-zero too: a dropped one shows
    model.save_pretrained(str(d))
    write_vocab(d, WORDS)
    return d


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two padded rows (ids, types, mask): the parity checks run through padding."""
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(5, 90, (2, 12), generator=g)
    types = torch.zeros_like(ids)
    types[:, 6:] = 1
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    return ids, types, mask


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = hf_config(id2label=dict(enumerate(TAGS)), label2id={t: i for i, t in enumerate(TAGS)})
    torch.manual_seed(1)
    return save_hf(transformers.BertForTokenClassification(cfg), tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def qa_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(2)
    return save_hf(
        transformers.BertForQuestionAnswering(hf_config()), tmp_path_factory.mktemp("qa")
    )


def test_token_classification_import_matches_hf(tok_dir: Path) -> None:
    ids, types, mask = batch()
    hf = transformers.BertForTokenClassification.from_pretrained(str(tok_dir)).eval()
    model, cfg, _ = import_hf_bert(tok_dir)
    assert cfg.task == "token_classification" and cfg.labels == tuple(TAGS)
    with torch.no_grad():
        want = hf(input_ids=ids, token_type_ids=types, attention_mask=mask).logits
        got = model(ids, token_type_ids=types, attention_mask=mask).logits
    real = mask.bool()
    diff = float((want - got)[real].abs().max())
    assert got.shape == (2, 12, len(TAGS)) and diff <= 1e-5, diff


def test_question_answering_import_matches_hf(qa_dir: Path) -> None:
    ids, types, mask = batch()
    hf = transformers.BertForQuestionAnswering.from_pretrained(str(qa_dir)).eval()
    model, cfg, _ = import_hf_bert(qa_dir)
    assert cfg.task == "question_answering"
    with torch.no_grad():
        want = hf(input_ids=ids, token_type_ids=types, attention_mask=mask)
        got = model(ids, token_type_ids=types, attention_mask=mask)
    real = mask.bool()
    for w, g in ((want.start_logits, got.start_logits), (want.end_logits, got.end_logits)):
        assert float((w - g)[real].abs().max()) <= 1e-5


@pytest.mark.parametrize("which", ["tok", "qa"])
def test_cli_import_export_round_trip_keeps_the_head(
    which: str, tok_dir: Path, qa_dir: Path, tmp_path: Path
) -> None:
    """The issue's report: import-hf then export-hf of a 7-label tagger gave HF a 2-label head."""
    src = tok_dir if which == "tok" else qa_dir
    assert main(["import-hf", str(src), str(tmp_path / "dh")]) == 0
    assert main(["export-hf", str(tmp_path / "dh"), str(tmp_path / "hf")]) == 0
    cls = (
        transformers.BertForTokenClassification
        if which == "tok"
        else transformers.BertForQuestionAnswering
    )
    before = cls.from_pretrained(str(src)).eval()
    after = cls.from_pretrained(str(tmp_path / "hf")).eval()
    written = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert written["architectures"] == [cls.__name__]
    ids, types, mask = batch()
    with torch.no_grad():
        a = before(input_ids=ids, token_type_ids=types, attention_mask=mask)
        b = after(input_ids=ids, token_type_ids=types, attention_mask=mask)
    if which == "tok":
        assert after.config.id2label == before.config.id2label
        assert a.logits.shape == b.logits.shape
        assert float((a.logits - b.logits).abs().max()) <= 1e-5
    else:
        assert float((a.start_logits - b.start_logits).abs().max()) <= 1e-5
        assert float((a.end_logits - b.end_logits).abs().max()) <= 1e-5


def test_export_of_loaded_dir_matches(tok_dir: Path, tmp_path: Path) -> None:
    loaded = load_model(tok_dir)
    assert loaded.kind == "token_classification"
    export_hf_dir(loaded, tmp_path / "hf")
    hf = transformers.AutoModelForTokenClassification.from_pretrained(str(tmp_path / "hf"))
    ids, _types, mask = batch()
    with torch.no_grad():
        want = hf.eval()(input_ids=ids, attention_mask=mask).logits
        got = loaded.model(ids, attention_mask=mask).logits
    assert float((want - got)[mask.bool()].abs().max()) <= 1e-5


def test_unsupported_architecture_is_named(tmp_path: Path) -> None:
    save_hf(transformers.BertForMultipleChoice(hf_config()), tmp_path)
    with pytest.raises(ModelLoadError, match="BertForMultipleChoice is not supported"):
        import_hf_bert(tmp_path)
    assert main(["import-hf", str(tmp_path), str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_head_weights_without_architecture_are_not_dropped(tok_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "noarch"
    d.mkdir()
    for f in tok_dir.iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((d / "config.json").read_text())
    del cfg["architectures"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match=r"classifier\.weight.*--task"):
        import_hf_bert(d)
    _model, cfg2, _ = import_hf_bert(d, task="token_classification")
    assert cfg2.labels == tuple(TAGS)


def test_verb_refuses_a_missing_head(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """fill-mask / tag / answer on a backbone-only dir: an error naming the head, never a
    random head's predictions."""
    save_hf(transformers.BertModel(hf_config()), tmp_path)
    with pytest.raises(ModelLoadError, match=r"without the mlm head.*BertForMaskedLM checkpoint"):
        load_for_task(tmp_path, "fill-mask", "mlm")
    assert main(["fill-mask", "--model", str(tmp_path), "the [MASK] of paris"]) == 2
    err = capsys.readouterr().err
    assert "without the mlm head" in err and "BertForMaskedLM" in err
    with pytest.raises(ModelLoadError, match="BertForQuestionAnswering checkpoint has it"):
        load_for_task(tmp_path, "answer", "question_answering")
    with pytest.raises(ModelLoadError, match="BertForTokenClassification checkpoint has it"):
        load_for_task(tmp_path, "tag", "token_classification")


def test_verb_refuses_a_checkpoint_of_another_head(tok_dir: Path, qa_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"BertForTokenClassification checkpoint \(head: "):
        load_for_task(tok_dir, "classify", "classification")
    with pytest.raises(ModelLoadError, match="without the token_classification head"):
        load_for_task(qa_dir, "tag", "token_classification")
    assert load_for_task(tok_dir, "tag", "token_classification").kind == "token_classification"


def test_verb_refuses_a_dhian_dir_of_another_head(qa_dir: Path, tmp_path: Path) -> None:
    assert main(["import-hf", str(qa_dir), str(tmp_path / "dh")]) == 0
    with pytest.raises(ModelLoadError, match=r"question_answering.*dhian tag needs"):
        load_for_task(tmp_path / "dh", "tag", "token_classification")


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    from dhian.data.builtin_corpora import fetch_pretrained
    from dhian.errors import DhianError

    try:
        return Path(fetch_pretrained("minilm", quiet=True))
    except (DhianError, OSError) as exc:
        pytest.skip(f"MiniLM checkpoint not available: {exc}")


@pytest.mark.parametrize("head", ["token", "qa"])
def test_minilm_with_hf_heads_matches_hf(head: str, minilm_dir: Path, tmp_path: Path) -> None:
    """A MiniLM-style config with real weights: HF puts a fresh head on all-MiniLM-L6-v2, saves
    it; dhian imports it (and refuses the bare backbone for the same verbs)."""
    cls = (
        transformers.BertForTokenClassification
        if head == "token"
        else transformers.BertForQuestionAnswering
    )
    kw = {"id2label": dict(enumerate(TAGS)), "label2id": {t: i for i, t in enumerate(TAGS)}}
    torch.manual_seed(0)
    hf = cls.from_pretrained(str(minilm_dir), **(kw if head == "token" else {})).eval()
    hf.save_pretrained(str(tmp_path))
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / f).write_bytes((minilm_dir / f).read_bytes())
    loaded = load_model(tmp_path)
    tok = loaded.tokenizers["src"]
    enc = [tok.encode(t) for t in ("Anna lives in Paris.", "Where does the animal sleep at night?")]
    t = max(len(e) for e in enc) + 2
    ids = torch.zeros((2, t), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, e in enumerate(enc):
        row = [tok.cls_id, *e, tok.sep_id]
        ids[r, : len(row)] = torch.tensor(row)
        mask[r, : len(row)] = 1
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=mask)
        got = loaded.model(ids, attention_mask=mask)
    real = mask.bool()
    if head == "token":
        assert loaded.config.model.labels == tuple(TAGS)
        assert float((want.logits - got.logits)[real].abs().max()) <= 1e-5
    else:
        assert float((want.start_logits - got.start_logits)[real].abs().max()) <= 1e-5
        assert float((want.end_logits - got.end_logits)[real].abs().max()) <= 1e-5
