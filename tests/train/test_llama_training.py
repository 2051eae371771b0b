"""Continued pretraining of a LLaMA-family model on the shared engine, on a tiny random llama
(dim 32, 2 layers, a 300-id byte-level BPE): full fine-tuning and LoRA (peft) resume bitwise,
saved dirs are plain llamas that load and generate, the recipe's model section must equal
``train.init_from``'s, ``train.bf16: auto`` reads the CPU flags, ``train.lora`` errors are one
line, and ``configs/smollm2-news.yaml`` parses (and switches to LoRA with ``--set``)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from dhian.config import LoraSettings, RunConfig, load_run_config, run_config_from_dict
from dhian.errors import ConfigError
from dhian.inference.generate import llm_generate_text
from dhian.inference.load import load_model
from dhian.models.llama.config import LlamaConfig
from dhian.models.llama.model import LlamaModel, build_llama
from dhian.models.model_dir import load_model_dir, save_model_dir
from dhian.text import train_tokenizer
from dhian.train import checkpoint as ckpt
from dhian.train.lora import add_lora
from dhian.train.optim import cpu_has_native_bf16, resolve_bf16
from dhian.train.tasks.lm_eval import end_of_text_id
from helpers.training import assert_resume_is_exact, quiet_trainer

NOUNS = ["cat", "dog", "bird", "king", "child"]
VERBS = ["sees", "likes", "finds", "calls"]


def corpus(root: Path) -> Path:
    """text:DIR with train.txt (40 documents) and dev.txt (6)."""
    rng = random.Random(0)
    d = root / "corpus"
    d.mkdir(exist_ok=True)
    for split, n in (("train", 40), ("dev", 6)):
        docs = [
            " ".join(
                f"the {rng.choice(NOUNS)} {rng.choice(VERBS)} the {rng.choice(NOUNS)}."
                for _ in range(rng.randint(1, 3))
            )
            for _ in range(n)
        ]
        (d / f"{split}.txt").write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return d


def pretrained(root: Path) -> tuple[Path, dict[str, Any]]:
    """A tiny random llama saved as a dhian model dir (the 'pretrained' source) and its model
    section."""
    d = corpus(root)
    docs = (d / "train.txt").read_text(encoding="utf-8").split("\n\n")
    tok = train_tokenizer("bytebpe", docs, 300, False)
    model_cfg = LlamaConfig(
        vocab_size=tok.vocab_size, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64,
        max_seq_len=64, bos_id=tok.bos_id, eos_id=tok.eos_id, pad_id=tok.pad_id,
    )  # fmt: skip
    torch.manual_seed(7)
    cfg = RunConfig(model=model_cfg)
    src = root / "pretrained"
    save_model_dir(src, build_llama(model_cfg), cfg, {"src": tok, "tgt": tok}, kind="lm")
    return src, model_cfg.to_dict()


def config(root: Path, model: dict[str, Any], **train: Any) -> RunConfig:
    raw = {
        "model": model,
        "data": {"corpus": f"text:{root / 'corpus'}", "tokenizer": "bytebpe", "block_size": 16},
        "train": {
            "out_dir": str(root / "run"),
            "init_from": str(root / "pretrained"),
            "max_steps": 6,
            "batch_size": 4,
            "max_tokens": 0,
            "lr": 1e-2,
            "schedule": "constant",
            "warmup_steps": 0,
            "label_smoothing": 0.0,
            "eval_every": 2,
            "save_every": 0,
            "log_every": 1,
            "num_threads": 1,
            **train,
        },
    }
    return run_config_from_dict(raw)


def test_full_finetuning_resumes_bitwise(tmp_path: Path) -> None:
    """Every weight trains from init_from; 6 straight steps == 3 + stop + 3 (bf16 autocast)."""
    _, model = pretrained(tmp_path)
    cfg = config(tmp_path, model, bf16=True)
    assert_resume_is_exact(cfg, tmp_path, stop=3)
    before = load_file(str(tmp_path / "pretrained" / "model.safetensors"))
    after = load_file(str(tmp_path / "a" / "last" / "model.safetensors"))
    assert not torch.equal(before["norm.weight"], after["norm.weight"])  # everything moved


def test_lora_resumes_bitwise_and_saves_a_plain_merged_llama(tmp_path: Path) -> None:
    """LoRA (peft, with adapter dropout): 6 straight steps == 3 + stop + 3; the saved dir is
    a plain llama whose only changed weights are the adapted projections; the checkpoint keeps
    the adapters; the run dir loads as a plain llama and generates."""
    _, model = pretrained(tmp_path)
    cfg = config(tmp_path, model, lora={"r": 4, "alpha": 8, "dropout": 0.1})
    assert_resume_is_exact(cfg, tmp_path, stop=3)
    last = tmp_path / "a" / "last"
    loaded = load_model_dir(last)
    assert isinstance(loaded.model, LlamaModel) and loaded.kind == "lm"
    before = load_file(str(tmp_path / "pretrained" / "model.safetensors"))
    after = load_file(str(last / "model.safetensors"))
    assert set(before) == set(after)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    targets = ("q_proj", "k_proj", "v_proj", "o_proj")
    assert changed and all(k.split(".")[-2] in targets for k in changed)
    assert len(changed) == 2 * 4  # 2 layers x 4 projections
    state = ckpt.load_trainer_state(last)
    assert state["lora"] and all("lora_" in k for k in state["lora"])
    run = load_model(tmp_path / "a")  # what `dhian generate --model RUN` loads: best/
    (text,) = llm_generate_text(run.model, run.tokenizers["tgt"], ["the cat"], 8)
    assert isinstance(run.model, LlamaModel) and isinstance(text, str)


def test_lora_resume_refuses_other_settings(tmp_path: Path) -> None:
    _, model = pretrained(tmp_path)
    cfg = config(tmp_path, model, lora={"r": 2}, max_steps=2, eval_every=0)
    quiet_trainer(cfg).fit()
    other = config(tmp_path, model, lora={"r": 4}, max_steps=4, eval_every=0)
    with pytest.raises(ConfigError, match=r"train.lora"):
        quiet_trainer(other, resume=True).fit()


def test_model_section_must_equal_init_from(tmp_path: Path) -> None:
    _, model = pretrained(tmp_path)
    cfg = config(tmp_path, {**model, "rope_theta": 500.0}, max_steps=1)
    with pytest.raises(ConfigError, match=r"rope_theta: 500.0 here, 10000.0 there") as exc:
        quiet_trainer(cfg).fit()
    assert "\n" not in str(exc.value) and "config.yaml" in str(exc.value)


def test_lora_targets_are_checked() -> None:
    cfg = LlamaConfig(vocab_size=20, dim=16, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=32)
    with pytest.raises(ConfigError, match=r"no linear layer is named 'q_prj'.*'q_proj'"):
        add_lora(build_llama(cfg), LoraSettings(r=2, targets=("q_prj",)))
    with pytest.raises(ConfigError, match=r"alpha > 0"):
        add_lora(build_llama(cfg), LoraSettings(r=2, alpha=0))


def test_bf16_auto_reads_the_cpu_flags(tmp_path: Path) -> None:
    native = tmp_path / "native"
    native.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f amx_bf16 amx_tile\n")
    plain = tmp_path / "plain"
    plain.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    assert cpu_has_native_bf16(native) and not cpu_has_native_bf16(plain)
    assert not cpu_has_native_bf16(tmp_path / "missing")
    cpu = torch.device("cpu")
    assert resolve_bf16(True, cpu)[0] and not resolve_bf16(False, cpu)[0]
    assert resolve_bf16("auto", cpu)[0] == cpu_has_native_bf16()
    with pytest.raises(ConfigError, match=r"train.bf16 must be true, false or auto, got 'maybe'"):
        resolve_bf16("maybe", cpu)


def test_end_of_text_is_the_document_separator(tmp_path: Path) -> None:
    """SmolLM2-style vocabularies end documents with <|endoftext|>, others with EOS."""

    class Tok:
        eos_id = 2

        def __init__(self, vocab: dict[str, int]) -> None:
            self.vocab = vocab

        def token_to_id(self, token: str) -> int | None:
            return self.vocab.get(token)

    assert end_of_text_id(Tok({"<|endoftext|>": 0, "<|im_end|>": 2})) == 0
    assert end_of_text_id(Tok({"</s>": 2})) == 2


def test_smollm2_recipe_parses_and_switches_to_lora() -> None:
    recipe = Path(__file__).resolve().parents[2] / "configs" / "smollm2-news.yaml"
    full = load_run_config(recipe)
    assert full.model.type == "llama" and full.train.init_from == "smollm2"
    assert full.train.lora.r == 0 and full.train.bf16 == "auto"
    lora = load_run_config(recipe, ["train.lora.r=8"])
    assert lora.train.lora == LoraSettings(r=8)
    assert lora.train.lora.targets == ("q_proj", "k_proj", "v_proj", "o_proj")
    with pytest.raises(
        ConfigError, match=r"unknown config key 'train.lora.rank'; valid keys: r, alpha"
    ):
        load_run_config(recipe, ["train.lora.rank=8"])


def test_a_builtin_init_from_is_imported_once_into_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``train.init_from: NAME`` of a built-in model: converted once into a dhian model dir under
    the cache (``imported/NAME``), then reused without loading the source again."""
    from dhian.train import warmstart

    src, _ = pretrained(tmp_path)
    calls: list[str] = []

    def fake_load(source: str) -> Any:
        calls.append(source)
        return load_model_dir(src)

    monkeypatch.setenv("DHIAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(warmstart, "family_for_builtin", lambda name: name == "tiny" or None)
    monkeypatch.setattr(warmstart, "load_model", fake_load)
    first = warmstart.resolve_init("tiny")
    assert first == tmp_path / "cache" / "imported" / "tiny"
    assert warmstart.init_source("tiny") == first / "tokenizer"
    assert calls == ["tiny"]  # the second resolve read the cached dir
    assert isinstance(load_model_dir(first).model, LlamaModel)
