"""``complete_texts``: one entry for every loaded causal LM (GPT through ``sampling.generate``,
LLaMA through ``llm_generate``), with token counts and why each row stopped; and the context
check that turns an impossible request into one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from dhian.errors import DataError
from dhian.inference.generate import (
    check_context,
    complete_texts,
    generate_one,
    generate_text,
    llm_generate_text,
)
from dhian.inference.load import load_model
from dhian.models.model_dir import LoadedModel
from helpers.threads import one_thread  # noqa: F401 - autouse fixture
from helpers.tiny_llama import save_tiny_llama


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load_model(save_tiny_llama(tmp_path_factory.mktemp("llama") / "model"))


def test_llama_completions_count_tokens_and_say_why_they_stopped(tiny: LoadedModel) -> None:
    tok = tiny.tokenizers["src"]
    prompts = ["Once upon a time", "Hi"]
    want = llm_generate_text(tiny.model, tok, prompts, max_new_tokens=6)
    got = complete_texts(tiny, prompts, max_new_tokens=6, temperature=0.0)
    assert [c.text for c in got] == want
    assert [c.prompt_tokens for c in got] == [len(tok.encode(p)) for p in prompts]
    assert [(c.completion_tokens, c.finish_reason) for c in got] == [(6, "length")] * 2
    stop = want[0][len(want[0]) // 2 :][:3]
    cut = complete_texts(tiny, prompts[:1], max_new_tokens=6, temperature=0.0, stop=[stop])[0]
    assert cut.text == want[0][: want[0].index(stop)] and cut.finish_reason == "stop"
    assert generate_one(tiny, "Hi", max_new_tokens=6, temperature=0.0) == want[1]


def test_gpt_completions_match_generate_text(tiny_dirs: dict[str, Path]) -> None:
    gpt = load_model(tiny_dirs["gpt"])
    tok = gpt.tokenizers["tgt"]
    want = generate_text(gpt.model, tok, ["ab"], max_new_tokens=5, temperature=0.0)
    got = complete_texts(gpt, ["ab"], max_new_tokens=5, temperature=0.0)[0]
    assert got.text == want[0] and got.prompt_tokens == len(tok.encode("ab"))
    assert got.finish_reason in ("stop", "length")
    assert got.completion_tokens == 5 or got.finish_reason == "stop"


def test_context_check_names_the_numbers(tiny: LoadedModel) -> None:
    with pytest.raises(DataError, match=r"120 tokens and 10 new tokens.*context of 128.*at most 8"):
        check_context(tiny.model, 120, 10)
    with pytest.raises(DataError, match="prompt is empty"):
        complete_texts(tiny, [""], max_new_tokens=2)
    check_context(tiny.model, 118, 10)  # fits exactly
    with pytest.raises(DataError, match="generation needs a language model"):
        complete_texts(LoadedModel(tiny.model, tiny.config, tiny.tokenizers, "mlm"), ["a"])
