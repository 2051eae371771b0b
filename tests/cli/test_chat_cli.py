"""``dhian generate`` and ``dhian chat`` with a LLaMA-family model (a tiny random llama with the
SmolLM2 tokenizer and chat template): streamed text equals the library's, the chat keeps its
history, ``/reset`` clears it, and ``/exit``, end of input and Ctrl-C leave with status 0."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dhian.cli import main
from dhian.inference import chat as chat_mod
from dhian.inference.chat import Conversation, chat_reply
from dhian.inference.generate import complete_texts
from dhian.inference.load import load_model
from helpers.threads import one_thread  # noqa: F401 - autouse fixture
from helpers.tiny_llama import save_tiny_llama

GREEDY = ["--temperature", "0", "--max-new-tokens", "6"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("llama") / "model")


class Recorder(io.StringIO):
    """stdout stand-in that counts flushes (streaming flushes once per increment)."""

    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: str, stdin: str = "") -> tuple[int, str]:
    out = Recorder()
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(list(args))
    return code, out.getvalue()


def test_generate_streams_a_llama_continuation(model_dir: Path, monkeypatch: Any) -> None:
    loaded = load_model(model_dir)
    want = complete_texts(loaded, ["Once upon a time"], max_new_tokens=6, temperature=0.0)[0]
    code, out = run_cli(
        monkeypatch, "generate", "--model", str(model_dir), "--prompt", "Once upon a time", *GREEDY
    )
    assert code == 0 and out == "Once upon a time" + want.text + "\n"


def test_generate_chat_prints_the_reply_only(model_dir: Path, monkeypatch: Any) -> None:
    loaded = load_model(model_dir)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    want = chat_reply(loaded, messages, max_new_tokens=6, temperature=0.0).text
    args = ["--model", str(model_dir), "--prompt", "Hi", "--chat", "--system", "Be brief."]
    code, out = run_cli(monkeypatch, "generate", *args, *GREEDY)
    assert code == 0 and out == want + "\n"


def test_generate_refuses_empty_llama_prompt_and_system_without_chat(
    model_dir: Path, monkeypatch: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run_cli(monkeypatch, "generate", "--model", str(model_dir), *GREEDY)
    assert code == 2 and "prompt is empty" in capsys.readouterr().err
    code, _ = run_cli(
        monkeypatch, "generate", "--model", str(model_dir), "--prompt", "x", "--system", "s"
    )
    assert code == 2 and "--system needs --chat" in capsys.readouterr().err


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[dict[str, str]]]]:
    """The message lists each chat turn sent to the model."""
    calls: list[list[dict[str, str]]] = []
    real = chat_mod.chat_reply

    def spy(loaded: Any, messages: Any, **kw: Any) -> Any:
        calls.append([dict(m) for m in messages])
        return real(loaded, messages, **kw)

    monkeypatch.setattr(chat_mod, "chat_reply", spy)
    yield calls


def test_chat_keeps_history_and_reset_clears_it(
    model_dir: Path, monkeypatch: Any, seen: list[list[dict[str, str]]]
) -> None:
    lines = "first question\nsecond question\n/reset\nthird question\n/exit\nnever read\n"
    args = ["chat", "--model", str(model_dir), "--system", "You are terse.", *GREEDY]
    code, out = run_cli(monkeypatch, *args, stdin=lines)
    assert code == 0
    assert [[m["role"] for m in call] for call in seen] == [
        ["system", "user"],
        ["system", "user", "assistant", "user"],
        ["system", "user"],
    ]
    assert seen[1][1]["content"] == "first question" and seen[2][1]["content"] == "third question"
    loaded = load_model(model_dir)
    first = chat_reply(loaded, seen[0], max_new_tokens=6, temperature=0.0).text
    assert seen[1][2] == {"role": "assistant", "content": first}
    assert out.count("bot> ") == 3 and "(history cleared)" in out and "never" not in out


def test_chat_leaves_cleanly_on_eof_and_ctrl_c(model_dir: Path, monkeypatch: Any) -> None:
    code, out = run_cli(monkeypatch, "chat", "--model", str(model_dir), *GREEDY, stdin="hello\n")
    assert code == 0 and out.count("bot> ") == 1

    def interrupt(_prompt: str = "") -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr("builtins.input", interrupt)
    code, _ = run_cli(monkeypatch, "chat", "--model", str(model_dir), *GREEDY)
    assert code == 0


def test_chat_refuses_a_turn_over_the_context_and_goes_on(
    model_dir: Path, monkeypatch: Any
) -> None:
    lines = ("word " * 300) + "\nshort\n"
    code, out = run_cli(monkeypatch, "chat", "--model", str(model_dir), *GREEDY, stdin=lines)
    assert code == 0 and "context of 128" in out and out.count("bot> ") == 2


def test_conversation_seeds_each_turn_and_needs_a_chat_template(model_dir: Path) -> None:
    loaded = load_model(model_dir)
    talk = Conversation(loaded, max_new_tokens=4, temperature=1.0, seed=7)
    talk.say("a")
    again = chat_reply(loaded, talk.messages[:1], max_new_tokens=4, temperature=1.0, seed=7)
    assert talk.messages[1]["content"] == again.text
    loaded.tokenizers["src"].chat_template = None
    with pytest.raises(Exception, match="no chat template"):
        Conversation(loaded)


@pytest.mark.slow
def test_generate_compile_on_says_so_and_prints_the_eager_text(
    model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import torch._dynamo

    monkeypatch.setenv("DHIAN_CACHE", str(tmp_path / "dhian"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch._dynamo.reset()
    base = ["generate", "--model", str(model_dir), "--prompt", "Once upon a time", *GREEDY]
    code, eager = run_cli(monkeypatch, *base, "--compile", "off")
    assert code == 0 and "compiling" not in capsys.readouterr().err
    code, compiled = run_cli(monkeypatch, *base, "--compile", "on")
    err = capsys.readouterr().err
    assert code == 0 and compiled == eager
    assert "[dhian] compiling the decode step for batch 1" in err
    assert str(tmp_path / "inductor") in err
    torch._dynamo.reset()
