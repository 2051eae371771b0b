"""dhian.interop.hf_bert: parity with HF transformers' BERT (real MiniLM checkpoint and tiny random
models), tokenizer parity, export → from_pretrained round trips, weight-name reporting."""

from __future__ import annotations

import json
import pickle
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dhian.errors import DhianError, ModelLoadError
from dhian.inference.load import load_model
from dhian.interop.hf_bert import export_hf_bert, import_hf_bert
from dhian.interop.hf_dirs import export_hf_dir, import_hf_dir
from dhian.models.bert.heads import build_bert
from dhian.models.bert.model import backbone_kwargs
from dhian.models.model_dir import load_model_dir
from dhian.text import load_tokenizer, wordpiece_from_vocab
from helpers.bert import tiny_bert_config
from helpers.bert import write_vocab as write_tiny_vocab
from helpers.threads import torch_threads

transformers = pytest.importorskip("transformers")

V = 70  # size of the tiny vocab.txt written by write_vocab

SENTENCES = [
    "The capital of France is Paris.",
    "Hi!",
    "Attention is all you need, or so they say; transformers changed NLP in 2017.",
    "Café naïve résumé — 東京 and 🙂",
    "Short one here.",
]


@pytest.fixture(autouse=True)
def few_threads() -> Iterator[None]:
    with torch_threads(2):
        yield


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    from dhian.data.builtin_corpora import fetch_pretrained

    try:
        return Path(fetch_pretrained("minilm", quiet=True))
    except (DhianError, OSError) as exc:
        pytest.skip(f"MiniLM checkpoint not available: {exc}")


# --------------------------------------------------------------------------- tiny HF models


def write_vocab(directory: Path) -> Path:
    words = ["the", "of", "is", "capital", "france", "paris", "cat", "sat", "mat"]
    return write_tiny_vocab(directory, words)


def hf_tiny_config(vocab_size: int, **kw: object) -> object:
    args: dict[str, object] = dict(
        vocab_size=vocab_size,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=24,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    args.update(kw)
    return transformers.BertConfig(**args)


def perturb(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Fill every parameter with noise (HF init leaves biases/LayerNorms trivially 0/1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def save_hf(model: torch.nn.Module, directory: Path, vocab: Path | None = None) -> Path:
    model.save_pretrained(str(directory))  # type: ignore[operator]
    if vocab is not None:
        shutil.copy(vocab, directory / "vocab.txt")
    return directory


def batch(vocab_size: int, lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = max(lengths)
    ids = torch.randint(5, vocab_size, (len(lengths), t), generator=g)
    mask = (torch.arange(t)[None] < torch.tensor(lengths)[:, None]).long()
    return ids * mask, mask  # (B, T) padded with 0 = [PAD]


def assert_attentions_close(
    ours: list[torch.Tensor], theirs: tuple[torch.Tensor, ...], mask: torch.Tensor
) -> None:
    assert len(ours) == len(theirs)
    rows = mask.bool()[:, None, :, None]  # (B, 1, T, 1) real query rows
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape
        diff = (a - b).abs().masked_fill(~rows, 0.0)
        assert diff.max() <= 1e-5, diff.max()


# --------------------------------------------------------------------------- MiniLM (network)


@pytest.mark.network
def test_minilm_hidden_states_and_every_attention_match_hf(minilm_dir: Path) -> None:
    lines: list[str] = []
    model, cfg, _ = import_hf_bert(minilm_dir, log=lines.append)
    assert cfg.task == "backbone" and cfg.layers == 6 and cfg.embed_dim == 384 and cfg.heads == 12
    assert lines == ["checkpoint weight embeddings.position_ids dropped (position-id buffer)"]
    hf = transformers.BertModel.from_pretrained(str(minilm_dir), attn_implementation="eager").eval()
    enc = transformers.BertTokenizerFast.from_pretrained(str(minilm_dir))(
        SENTENCES, padding=True, return_tensors="pt"
    )
    assert len(set(enc["attention_mask"].sum(1).tolist())) == len(SENTENCES)  # mixed lengths
    with torch.no_grad():
        ref = hf(**enc, output_attentions=True, output_hidden_states=True)
        ours = model(
            enc["input_ids"],
            attention_mask=enc["attention_mask"],
            token_type_ids=enc["token_type_ids"],
            need_weights=True,
            need_hidden=True,
        )
        fast = model(enc["input_ids"], lengths=enc["attention_mask"].sum(1))
    real = enc["attention_mask"].bool()
    assert (ours.last_hidden - ref.last_hidden_state)[real].abs().max() <= 1e-5
    assert (fast.last_hidden - ref.last_hidden_state)[real].abs().max() <= 1e-5
    assert ours.hidden_states is not None
    for a, b in zip(ours.hidden_states, ref.hidden_states, strict=True):
        assert (a - b)[real].abs().max() <= 1e-5
    assert ours.attentions is not None
    assert_attentions_close(ours.attentions, ref.attentions, enc["attention_mask"])
    assert ours.pooled is not None and (ours.pooled - ref.pooler_output).abs().max() <= 1e-5


def random_strings(n: int, seed: int = 1234) -> list[str]:
    rng = random.Random(seed)
    words = [
        "the",
        "Paris",
        "attention",
        "transformer",
        "unbelievable",
        "don't",
        "U.S.A.",
        "e-mail",
    ]
    words += ["naïve", "Café", "résumé", "Ångström", "Straße", "façade", "São", "Zoë", "ÉCOLE"]
    words += ["12", "3.14", "1,000,000", "2024-05-01", "$5", "50%", "#tag", "@user", "x²"]
    words += [
        "東京",
        "中文字符",
        "日本語",
        "한국어",
        "Ελληνικά",
        "русский",
        "עברית",
        "العربية",
        "हिन्दी",
    ]
    words += ["😀", "👍🏽", "🇫🇷", "❤️", "🤖🤖", "[MASK]", "[SEP]", "[UNK]", "supercalifragilistic"]
    punct = [".", ",", "!", "?", ";", ":", "...", "—", "(", ")", '"', "'", "«", "»", "/", "&"]
    spaces = [" ", " ", " ", "  ", "\t", "\n", " \u00a0"]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(0, 14)):
            w = rng.choice(words if rng.random() < 0.8 else punct)
            style = rng.random()
            w = w.upper() if style < 0.1 else w.title() if style < 0.2 else w
            parts.append(w + rng.choice(spaces))
        out.append("".join(parts).strip() if rng.random() < 0.9 else "".join(parts))
    return out


@pytest.mark.network
def test_wordpiece_ids_identical_to_bert_tokenizer_fast(minilm_dir: Path) -> None:
    texts = random_strings(1000)
    assert len(set(texts)) > 900
    ref = transformers.BertTokenizerFast.from_pretrained(str(minilm_dir))(texts)["input_ids"]
    from_json = load_tokenizer(minilm_dir)  # tokenizer.json
    from_vocab = wordpiece_from_vocab(minilm_dir / "vocab.txt", lowercase=True)
    for tok in (from_json, from_vocab):
        ours = tok.encode_batch(texts, add_bos=True, add_eos=True)  # [CLS] ... [SEP]
        bad = [t for t, a, b in zip(texts, ours, ref, strict=True) if a != b]
        assert not bad, f"{len(bad)} mismatches, e.g. {bad[:3]!r}"


@pytest.mark.network
def test_minilm_mlm_task_initialises_head_and_round_trips(minilm_dir: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    _, cfg, _ = import_hf_bert(minilm_dir, task="mlm", log=lines.append)
    assert any(line.startswith("mlm head not in the checkpoint, initialised") for line in lines)
    assert cfg.pooler is True  # the checkpoint has one; kept
    loaded = load_model(minilm_dir)
    assert loaded.kind == "backbone" and loaded.tokenizers["src"] is not None
    with pytest.warns(UserWarning, match="truncated"):
        out = loaded.model(torch.full((1, 600), 1000))
    assert out.last_hidden.shape == (1, 512, 384)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("task", ["mlm", "classification", "backbone"])
def test_export_then_from_pretrained_gives_same_outputs(task: str, tmp_path: Path) -> None:
    tok = wordpiece_from_vocab(write_vocab(tmp_path), lowercase=True)
    torch.manual_seed(0)
    cfg = tiny_bert_config(task, tok.vocab_size, ("neg", "neu", "pos"), max_positions=24)
    model = perturb(build_bert(cfg)).eval()
    out = export_hf_bert(model, cfg, tok, tmp_path / "hf")
    auto = {
        "mlm": transformers.BertForMaskedLM,
        "classification": transformers.BertForSequenceClassification,
        "backbone": transformers.BertModel,
    }[task]
    hf = auto.from_pretrained(str(out), attn_implementation="eager").eval()
    ids, mask = batch(tok.vocab_size, [9, 4, 7])
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, output_attentions=True)
        ours = model(ids, attention_mask=mask, need_weights=True)
    real = mask.bool()
    if task == "mlm":
        assert (ours.logits - ref.logits)[real].abs().max() <= 1e-5
        assert_attentions_close(ours.attention, ref.attentions, mask)
    elif task == "classification":
        assert (ours.logits - ref.logits).abs().max() <= 1e-5
        assert hf.config.id2label == {0: "neg", 1: "neu", 2: "pos"}
    else:
        assert (ours.last_hidden - ref.last_hidden_state)[real].abs().max() <= 1e-5
        assert (ours.pooled - ref.pooler_output).abs().max() <= 1e-5
    # HF's own tokenizer reads the exported files and adds [CLS]/[SEP] like dhian
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(out))
    text = "The cat sat on the mat, Paris!"
    assert hf_tok(text)["input_ids"] == tok.encode(text, add_bos=True, add_eos=True)
    # and importing the export gives back exactly our weights
    again, cfg2, _ = import_hf_bert(out, log=lambda _: None)
    assert backbone_kwargs(cfg2) == backbone_kwargs(cfg) and cfg2.task == cfg.task
    if task == "classification":
        assert cfg2.labels == cfg.labels
    mine, theirs = model.state_dict(), again.state_dict()
    assert mine.keys() == theirs.keys()
    for k in mine:
        assert torch.equal(mine[k], theirs[k]), k


@pytest.mark.parametrize(
    "arch", ["BertForMaskedLM", "BertForSequenceClassification", "BertForPreTraining"]
)
def test_import_hf_made_checkpoints(arch: str, tmp_path: Path) -> None:
    vocab = write_vocab(tmp_path)
    torch.manual_seed(0)
    kw = {"id2label": {0: "bad", 1: "good"}} if arch == "BertForSequenceClassification" else {}
    hf = perturb(getattr(transformers, arch)(hf_tiny_config(V, **kw))).eval()
    d = save_hf(hf, tmp_path / "hf", vocab)
    lines: list[str] = []
    model, cfg, tok = import_hf_bert(d, log=lines.append)
    ids, mask = batch(V, [8, 3])
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask)
        ours = model(ids, attention_mask=mask)
    real = mask.bool()
    if arch == "BertForSequenceClassification":
        assert cfg.task == "classification" and cfg.labels == ("bad", "good")
        assert (ours.logits - ref.logits).abs().max() <= 1e-5
    else:
        assert cfg.task == "mlm"
        ref_logits = ref.prediction_logits if arch == "BertForPreTraining" else ref.logits
        assert (ours.logits - ref_logits)[real].abs().max() <= 1e-5
    if arch == "BertForPreTraining":
        assert any("cls.seq_relationship.weight dropped (next-sentence" in line for line in lines)
    assert tok is not None and tok.vocab_size == V


def test_pytorch_model_bin_is_read_weights_only(tmp_path: Path) -> None:
    torch.manual_seed(0)
    hf = perturb(transformers.BertModel(hf_tiny_config(V))).eval()
    d = tmp_path / "bin"
    d.mkdir()
    hf.config.save_pretrained(str(d))
    torch.save(hf.state_dict(), d / "pytorch_model.bin")
    model, _, tok = import_hf_bert(d, log=lambda _: None)
    assert tok is None  # no vocab files: weights still import
    ids, mask = batch(V, [6, 2])
    with torch.no_grad():
        diff = (
            model(ids, attention_mask=mask).last_hidden
            - hf(ids, attention_mask=mask).last_hidden_state
        )
    assert diff[mask.bool()].abs().max() <= 1e-5
    # a pickle that would run code on load is refused, not executed
    (d / "pytorch_model.bin").write_bytes(pickle.dumps(Exploit(), protocol=2))
    with pytest.raises(ModelLoadError, match="weights only"):
        import_hf_bert(d)


class Exploit:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("EXPLOITED",))


def tiny_backbone_dir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    hf = perturb(transformers.BertModel(hf_tiny_config(V)))
    return save_hf(hf, tmp_path / "hf", write_vocab(tmp_path))


def test_missing_and_unexpected_weights_are_listed(tmp_path: Path) -> None:
    d = tiny_backbone_dir(tmp_path)
    state = load_file(str(d / "model.safetensors"))
    del state["encoder.layer.1.attention.self.key.weight"]
    state["encoder.layer.0.adapter.weight"] = torch.zeros(2)
    save_file(state, str(d / "model.safetensors"), {"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"missing.*layers\.1\.self_attn\.in_proj_weight"):
        import_hf_bert(d)
    lines: list[str] = []
    with pytest.raises(ModelLoadError, match=r"unexpected.*encoder\.layer\.0\.adapter\.weight"):
        import_hf_bert(d, allow_missing=True, log=lines.append)
    model, _, _ = import_hf_bert(d, allow_missing=True, allow_unexpected=True, log=lines.append)
    assert any("layers.1.self_attn.in_proj_weight" in line for line in lines)
    assert any("adapter" in line for line in lines)
    assert model.layers[0].self_attn.in_proj_weight.shape == (48, 16)


def test_shape_mismatch_and_bad_configs(tmp_path: Path) -> None:
    d = tiny_backbone_dir(tmp_path)
    state = load_file(str(d / "model.safetensors"))
    state["pooler.dense.bias"] = torch.zeros(15)
    save_file(state, str(d / "model.safetensors"), {"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"pooler\.dense\.bias has shape \(15,\)"):
        import_hf_bert(d)
    good = json.loads((d / "config.json").read_text())
    for key, value, message in [
        ("position_embedding_type", "relative_key", "position_embedding_type"),
        ("is_decoder", True, "is_decoder"),
        ("hidden_act", "mish", "hidden_act 'mish'"),
        ("num_attention_heads", 3, "divisible"),
    ]:
        (d / "config.json").write_text(json.dumps({**good, key: value}))
        with pytest.raises(ModelLoadError, match=message):
            import_hf_bert(d)
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        import_hf_bert(tmp_path / "nowhere")


def test_old_gamma_beta_names_and_bert_prefix(tmp_path: Path) -> None:
    d = tiny_backbone_dir(tmp_path)
    ref, _, _ = import_hf_bert(d)
    state = load_file(str(d / "model.safetensors"))
    renamed = {}
    for k, v in state.items():
        k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
            "LayerNorm.bias", "LayerNorm.beta"
        )
        renamed[f"bert.{k}"] = v
    save_file(renamed, str(d / "model.safetensors"), {"format": "pt"})
    again, _, _ = import_hf_bert(d, task="backbone")
    for k, v in ref.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k


def test_import_hf_dir_writes_a_dhian_dir_and_export_reads_it(tmp_path: Path) -> None:
    torch.manual_seed(0)
    hf = perturb(transformers.BertForMaskedLM(hf_tiny_config(V))).eval()
    d = save_hf(hf, tmp_path / "hf", write_vocab(tmp_path))
    out = import_hf_dir(d, tmp_path / "dhian")
    assert (out / "config.yaml").is_file() and (out / "tokenizer").is_dir()
    loaded = load_model_dir(out)
    assert loaded.kind == "mlm" and loaded.config.model.task == "mlm"
    assert load_model(out).kind == "mlm"  # dhian dirs defer to dhian.models.model_dir
    ids, mask = batch(V, [7, 5])
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask).logits
        assert (loaded.model(ids, attention_mask=mask).logits - ref)[
            mask.bool()
        ].abs().max() <= 1e-5
    back = export_hf_dir(load_model(out), tmp_path / "hf2")
    hf2 = transformers.BertForMaskedLM.from_pretrained(str(back)).eval()
    with torch.no_grad():
        assert (hf2(input_ids=ids, attention_mask=mask).logits - ref)[
            mask.bool()
        ].abs().max() <= 1e-5
