"""The SmolLM2 tokenizer built from GGUF metadata: ids identical to HF
``AutoTokenizer.from_pretrained(dir, gguf_file=...)`` (the oracle) on every line of the news
test split, on chat prompts and on non-ASCII text; the chat template renders as HF's
``apply_chat_template``; the tokenizer round-trips through ``tokenizer.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dhian.text.chat_template import render_chat
from dhian.text.gguf_tokenizer import tokenizer_from_gguf
from dhian.text.tokenizer import Tokenizer
from dhian.text.tokenizer_files import load_tokenizer
from helpers.smollm2 import hf_gguf_tokenizer, smollm2_path

NON_ASCII = [
    "Grüße aus Köln: Straße, Maß und Öl — „Anführungszeichen“.",
    "ਧਿਆਨ ਦਿਓ, ਪੰਜਾਬੀ ਵਿੱਚ ਲਿਖਿਆ ਹੈ।",
    "Emoji 🤗🚀👩‍👩‍👧 and flags 🇩🇪 mixed with text",
    "中文分词测试：注意力机制。日本語のテキストも。한국어도",
    "  leading spaces,\ttabs\r\nand CRLF\n\n\nnewlines  ",
    "numbers 1234567890 3.14159 1e-5 and 'quotes' don't we'll",
    "<|im_start|>user\nspecial tokens inside text<|im_end|>",
]

CHATS = [
    [{"role": "user", "content": "What is attention in a transformer?"}],
    [
        {"role": "system", "content": "You answer in German."},
        {"role": "user", "content": "Was ist ਧਿਆਨ? 🤔"},
        {"role": "assistant", "content": "Aufmerksamkeit."},
        {"role": "user", "content": "Danke!"},
    ],
]


@pytest.fixture(scope="module")
def both() -> tuple[Tokenizer, Any, str]:
    path = smollm2_path()
    from dhian.interop.gguf import read_gguf

    file = read_gguf(path)
    return (
        tokenizer_from_gguf(file),
        hf_gguf_tokenizer(path),
        file.metadata["tokenizer.chat_template"],
    )


def _news_lines() -> list[str]:
    from dhian.data.builtin_corpora import load_builtin
    from dhian.errors import DhianError

    try:
        texts = load_builtin("news", "test", quiet=True).texts()
    except (DhianError, OSError) as exc:
        pytest.skip(f"news corpus not available: {exc}")
    return [line for t in texts for line in t.split("\n")]


def test_every_news_test_line_encodes_like_hf(both: tuple[Tokenizer, Any, str]) -> None:
    ours, hf, _ = both
    lines = _news_lines()
    assert len(lines) > 100
    mine = ours.encode_batch(lines)
    theirs = [hf.encode(line, add_special_tokens=True) for line in lines]
    bad = [i for i, (a, b) in enumerate(zip(mine, theirs, strict=True)) if a != b]
    assert not bad, f"{len(bad)} lines differ, first: {lines[bad[0]]!r}"
    assert ours.decode(mine[0]) == hf.decode(theirs[0], skip_special_tokens=True)


@pytest.mark.parametrize("text", NON_ASCII)
def test_non_ascii_and_specials_encode_and_decode_like_hf(
    both: tuple[Tokenizer, Any, str], text: str
) -> None:
    ours, hf, _ = both
    ids = ours.encode(text)
    assert ids == hf.encode(text, add_special_tokens=True)
    assert ours.hf.decode(ids, skip_special_tokens=False) == hf.decode(ids)


@pytest.mark.parametrize("generation_prompt", [True, False])
@pytest.mark.parametrize("chat", range(len(CHATS)))
def test_chat_prompts_render_and_encode_like_hf_apply_chat_template(
    both: tuple[Tokenizer, Any, str], chat: int, generation_prompt: bool
) -> None:
    ours, hf, template = both
    messages = CHATS[chat]
    text = render_chat(
        template,
        messages,
        add_generation_prompt=generation_prompt,
        bos_token=ours.id_to_token(ours.bos_id),
        eos_token=ours.id_to_token(ours.eos_id),
    )
    expected = hf.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt
    )
    assert text == expected
    assert ours.encode(text) == hf.encode(expected, add_special_tokens=True)
    assert text.count("<|im_start|>") == len(messages) + generation_prompt + (chat == 0)


def test_raise_exception_and_tojson_like_hf() -> None:
    from jinja2.exceptions import TemplateError

    template = (
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('user first') }}{% endif %}"
        "{{ messages | tojson }}"
    )
    assert render_chat(template, [{"role": "user", "content": "ü<b>"}]) == (
        '[{"role": "user", "content": "ü<b>"}]'
    )
    with pytest.raises(TemplateError, match="user first"):
        render_chat(template, [{"role": "assistant", "content": "x"}])


def test_saved_tokenizer_json_loads_back_identical(
    both: tuple[Tokenizer, Any, str], tmp_path: Path
) -> None:
    ours, _, _ = both
    ours.save(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    back = load_tokenizer(tmp_path)
    assert back.chat_template == ours.chat_template and back.chat_template
    assert (back.bos_id, back.eos_id, back.pad_id) == (ours.bos_id, ours.eos_id, ours.pad_id)
    for text in NON_ASCII:
        assert back.encode(text) == ours.encode(text)


def test_tokenizer_from_a_path_equals_from_the_read_file(both: tuple[Tokenizer, Any, str]) -> None:
    ours, _, _ = both
    direct = tokenizer_from_gguf(smollm2_path())
    assert direct.roles == ours.roles
    assert direct.encode(NON_ASCII[2]) == ours.encode(NON_ASCII[2])
