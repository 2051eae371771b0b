"""TextEngine (text requests over the continuous-batching LLMEngine): prompts that join a
running batch give the completions complete_texts gives each alone (text, stop strings, token
counts, finish reasons), their streamed increments add up to that text, and a request whose
on_text fails, or that is cancelled, stops alone. A tiny random llama with the SmolLM2
tokenizer, in float64 so batched and alone runs agree to the last bit."""

from __future__ import annotations

import pytest

from dhian.errors import DataError
from dhian.inference.generate import complete_texts
from dhian.inference.load import load_model
from dhian.inference.text_engine import TextEngine, supports_engine
from dhian.models.model_dir import LoadedModel
from helpers.tiny_llama import save_tiny_llama


@pytest.fixture(scope="module")
def tiny64(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    loaded = load_model(save_tiny_llama(tmp_path_factory.mktemp("llama") / "model"))
    loaded.model.double()
    return loaded


def test_joining_requests_match_complete_texts_alone(tiny64: LoadedModel) -> None:
    tok = tiny64.tokenizers["src"]
    assert supports_engine(tiny64.model)
    engine = TextEngine(tiny64.model, tok, max_batch=2, max_len=64)
    prompts = ["Once upon a time", "Hello there", "The weather today is"]
    lengths = [12, 5, 9]
    want = [
        complete_texts(tiny64, [p], max_new_tokens=n, temperature=0.0)[0]
        for p, n in zip(prompts, lengths, strict=True)
    ]
    stop = want[2].text[len(want[2].text) // 2 :][:2]
    cut = complete_texts(tiny64, [prompts[2]], max_new_tokens=9, temperature=0.0, stop=[stop])[0]
    assert cut.finish_reason == "stop" and len(cut.text) < len(want[2].text)
    pieces: list[list[str]] = [[], [], []]
    jobs = [engine.submit(prompts[0], 12, on_text=pieces[0].append)]
    engine.step()
    engine.step()  # the first one runs when the others arrive (one waits for a row)
    jobs.append(engine.submit(prompts[1], 5, on_text=pieces[1].append))
    jobs.append(engine.submit(prompts[2], 9, stop=[stop], on_text=pieces[2].append))
    assert engine.active == 1 and len(engine.waiting()) == 2
    finished = []
    while engine.busy:
        finished += engine.step()
    assert sorted(id(j) for j in finished) == sorted(id(j) for j in jobs)
    got = [job.completion() for job in jobs]
    assert got[:2] == want[:2] and got[2] == cut
    assert ["".join(p) for p in pieces] == [g.text for g in got]
    assert engine.steps > 0 and engine.tokens == sum(len(j.request.tokens) for j in jobs)


def test_a_failing_callback_or_a_cancel_stops_that_request_only(tiny64: LoadedModel) -> None:
    engine = TextEngine(tiny64.model, tiny64.tokenizers["src"], max_batch=3, max_len=64)

    def broken(_text: str) -> None:
        raise RuntimeError("the client went away")

    alone = complete_texts(tiny64, ["Good morning"], max_new_tokens=8, temperature=0.0)[0]
    bad = engine.submit("Once upon a time", 8, on_text=broken)
    victim = engine.submit("Hello there", 8)
    good = engine.submit("Good morning", 8)
    waiting = engine.submit("A queued one", 8)
    engine.step()
    engine.cancel(victim)
    engine.cancel(waiting)  # never got a row: dropped without a step
    while engine.busy:
        engine.step()
    assert isinstance(bad.error, RuntimeError) and bad.done and len(bad.request.tokens) <= 8
    assert victim.cancelled and len(victim.request.tokens) == 1
    assert waiting.cancelled and waiting.request.tokens == []
    assert good.completion() == alone
    zero = engine.submit("Hi", 0)
    assert zero.done and zero.completion().completion_tokens == 0
    with pytest.raises(DataError, match="more than the context of 64"):
        engine.submit("word " * 60, 8)
    with pytest.raises(ValueError, match="temperature"):
        engine.submit("Hi", 4, temperature=-1.0)
    assert not engine.busy and engine.active == 0


def test_reset_drops_everything_and_starts_empty(tiny64: LoadedModel) -> None:
    engine = TextEngine(tiny64.model, tiny64.tokenizers["src"], max_batch=1, max_len=32)
    jobs = [engine.submit("Once upon a time", 8), engine.submit("Hello", 8)]
    engine.step()
    dropped = engine.reset()
    assert {id(j) for j in dropped} == {id(j) for j in jobs} and all(j.cancelled for j in jobs)
    assert not engine.busy
    again = engine.submit("Good morning", 4)
    while engine.busy:
        engine.step()
    assert again.completion().completion_tokens == 4
