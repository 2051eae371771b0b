"""The soak test of ``dhian serve`` (``bench/soak.py``, issue #21).

Fast: the figures (per-kind counts, nearest-rank percentiles, RSS growth, the verdict) on
made-up outcomes; what counts as a malformed answer or stream; a few seconds of the real driver
against tiny models (a translator and a GPT given a chat template), with every request kind;
a server killed mid-run is reported as errors, no end RSS and "does not answer"; a server that
cannot start is one error line.
Slow (``make soak``): the soak itself — ``DHIAN_SOAK_MINUTES`` (default 10) of load after
``DHIAN_SOAK_WARMUP`` seconds (default 60) of warm-up, against the tiny translator and SmolLM2
(the tiny chat GPT where SmolLM2 is not available); the JSON report goes to
``DHIAN_SOAK_OUT`` (default: a temp dir). It must have no error, every server's RSS less than
10% above its RSS after the warm-up, and every server answering at the end. No timing is
asserted.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("uvicorn", reason="pip install fastapi uvicorn httpx")

from dhian.data.builtin_corpora import fetch_pretrained
from dhian.errors import DhianError
from dhian.models.model_dir import save_model_dir
from helpers.tiny_models import build

ROOT = Path(__file__).resolve().parents[2]
MINUTES = float(os.environ.get("DHIAN_SOAK_MINUTES", "10"))
WARMUP_S = float(os.environ.get("DHIAN_SOAK_WARMUP", "60"))
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(autouse=True)
def _repo_on_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``bench`` is a top-level folder of the checkout, not part of the installed package."""
    monkeypatch.syspath_prepend(str(ROOT))
    yield


@pytest.fixture(scope="module")
def chat_gpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny GPT of :mod:`helpers.tiny_models` with a chat template, so that it answers
    ``/v1/chat/completions`` too."""
    model, run, tok, _task, kwargs = build("gpt")
    tok.chat_template = CHAT_TEMPLATE
    directory = tmp_path_factory.mktemp("chat-gpt") / "model"
    return save_model_dir(directory, model, run, tok, kind="lm", build_kwargs=kwargs)


# --------------------------------------------------------------------------- figures


def test_summary_counts_each_kind_and_takes_nearest_rank_percentiles() -> None:
    from bench.soak import Outcome, summarize

    outcomes = [Outcome("translate", ms / 1000.0) for ms in range(100, 0, -1)]
    outcomes += [Outcome("translate", 30.0, "HTTP 504: no answer"), Outcome("chat", 1.0, "timeout")]
    outcomes += [Outcome("translate", 31.0, "HTTP 504: no answer")]
    table = summarize(outcomes, seconds=10.0)
    assert set(table) == {"translate", "chat", "all"}  # kinds never sent are left out
    t = table["translate"]
    assert (t["requests"], t["ok"], t["errors"]) == (102, 100, 2)
    assert t["errors_by_reason"] == {"HTTP 504: no answer": 2}
    assert (t["p50_ms"], t["p95_ms"], t["p99_ms"], t["max_ms"]) == (50.0, 95.0, 99.0, 100.0)
    assert t["per_s"] == 10.2
    chat = table["chat"]
    assert (chat["ok"], chat["errors"], chat["p50_ms"], chat["max_ms"]) == (0, 1, None, None)
    assert table["all"]["requests"] == 103 and table["all"]["errors"] == 3
    assert table["all"]["errors_by_reason"] == {"HTTP 504: no answer": 2, "timeout": 1}


def test_memory_and_verdict() -> None:
    from bench.soak import memory, verdict

    mem = memory([(10.0, 205.0), (20.0, 230.0)], start=200.0, end=221.0)
    assert mem["rss_growth_pct"] == 10.5 and mem["rss_max_mib"] == 230.0
    assert memory([], start=200.0, end=None)["rss_growth_pct"] is None

    def report(growth: float | None, errors: int, warm_errors: int, answers: Any) -> Any:
        server = {"rss_growth_pct": growth, "still_answers": answers}
        return {
            "kinds": {"all": {"errors": errors}},
            "warmup": {"all": {"errors": warm_errors}},
            "servers": {"llm": server},
        }

    assert verdict(report(9.9, 0, 0, True)) == []
    assert verdict(report(10.0, 0, 0, True)) == ["llm RSS grew 10.0% (limit 10%)"]
    assert verdict(report(-3.0, 0, 2, True)) == ["2 request(s) failed"]
    assert verdict(report(None, 1, 0, "the process exited with -9")) == [
        "1 request(s) failed",
        "llm has no RSS figure at the start or end (the process exited)",
        "llm does not answer at the end: the process exited with -9",
    ]


def test_malformed_answers_and_incomplete_streams_are_errors() -> None:
    from bench.soak import Call, check_answer, check_stream

    two = Call("translate", "/translate", {"text": ["a", "b"]}, texts=2)
    assert check_answer(two, {"results": [{"translation": "x"}] * 2}) is None
    assert check_answer(two, {"results": [{"translation": "x"}]}) == (
        "bad body: 1 translations for 2 texts"
    )
    chat = Call("chat", "/v1/chat/completions", {"max_tokens": 4})
    good = {
        "choices": [{"message": {"content": "hi"}, "finish_reason": "length"}],
        "usage": {"completion_tokens": 4},
    }
    assert check_answer(chat, good) is None
    assert check_answer(chat, {"choices": []}) == "bad body: list index out of range"
    assert check_answer(chat, {"choices": [{}]}) == "bad body: no 'message' field"
    too_long = {**good, "usage": {"completion_tokens": 5}}
    assert check_answer(chat, too_long) == "bad body: 5 tokens for max_tokens"

    done = json.dumps({"choices": [{"index": 0, "text": "", "finish_reason": "stop"}]})
    piece = json.dumps({"choices": [{"index": 0, "text": "a", "finish_reason": None}]})
    assert check_stream([piece, done, "[DONE]"]) is None
    assert check_stream([piece, done]) == "stream without data: [DONE] at the end"
    assert check_stream([piece, "[DONE]"]) == "stream without a finish_reason"
    error = json.dumps({"error": {"message": "boom", "type": "server_error"}})
    assert check_stream([piece, error, "[DONE]"]) == "error chunk in stream: boom"


def test_calls_of_every_kind_are_seeded_and_well_formed() -> None:
    from bench.soak import KINDS, SoakConfig, make_call, parse_mix

    for kind in KINDS:
        a = make_call(kind, random.Random(3), "m", 8)
        assert a == make_call(kind, random.Random(3), "m", 8)
        assert a.stream == kind.endswith("-stream")
        if kind == "translate":
            sent = a.body["text"]
            assert a.texts == (1 if isinstance(sent, str) else len(sent))
        elif kind != "generate":
            assert a.body["model"] == "m" and 4 <= a.body["max_tokens"] <= 8
    assert parse_mix("translate=2, chat=1")["completion"] == 0.0
    with pytest.raises(ValueError, match="--mix"):
        SoakConfig("t", None, mix={"translate": 0.0})
    with pytest.raises(ValueError, match="needs a model"):
        SoakConfig(None, None)


# --------------------------------------------------------------------------- real servers


def test_a_short_soak_of_every_kind_end_to_end(
    tiny_dirs: Any, chat_gpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench.soak import KINDS, SPEED_FLAGS, main

    out = tmp_path / "soak.json"
    args = ["--translator", str(tiny_dirs["transformer"]), "--llm", str(chat_gpt)]
    args += ["--minutes", "0.1", "--warmup", "1.5", "--concurrency", "4", "--max-tokens", "6"]
    args += ["--sample-every", "0.5", "--threads", "1", "--logs", str(tmp_path / "logs")]
    code = main([*args, "--out", str(out)])
    report = json.loads(out.read_text())
    printed = capsys.readouterr().out
    # a few seconds are too short for the RSS criterion: it may fail, nothing else may
    assert code == (0 if report["passed"] else 1)
    assert all("RSS grew" in why for why in report["failures"]), report["failures"]
    assert report["kinds_skipped"] == {}
    assert set(report["kinds"]) == {*KINDS, "all"}
    for kind in KINDS:
        k = report["kinds"][kind]
        assert k["requests"] > 0 and k["errors"] == 0 and k["ok"] == k["requests"], (kind, k)
        assert 0 < k["p50_ms"] <= k["p95_ms"] <= k["p99_ms"] <= k["max_ms"]
        assert f"\n{kind} " in printed
    assert report["kinds"]["all"]["requests"] == sum(report["kinds"][k]["requests"] for k in KINDS)
    assert report["warmup"]["all"]["requests"] > 0 and report["warmup"]["all"]["errors"] == 0
    assert 6.0 <= report["seconds"] < 60.0
    assert {r: s["kind"] for r, s in report["servers"].items()} == {
        "translator": "translation",
        "llm": "lm",
    }
    for s in report["servers"].values():
        assert s["still_answers"] is True and s["exit_code"] in (0, -signal.SIGTERM)
        start, end = s["rss_start_mib"], s["rss_end_mib"]
        assert 20.0 < start <= s["rss_max_mib"] and end <= s["rss_max_mib"]
        assert s["rss_growth_pct"] == pytest.approx(100 * (end - start) / start, abs=0.1)
        times = [t for t, _ in s["samples"]]
        assert len(times) >= 5 and times == sorted(times)
        assert "Application startup complete" in Path(s["log"]).read_text()
    assert report["cpu"] and set(report["cpu_flags"]) <= set(SPEED_FLAGS)
    assert report["config"]["concurrency"] == 4 and report["command"].endswith(str(out))


def test_a_server_killed_mid_soak_fails_the_soak(
    chat_gpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bench.soak as soak_module

    killers: list[threading.Timer] = []
    original = soak_module.sample_rss

    async def kill_during_the_soak(servers: Any, *args: Any) -> None:
        """The sampler starts with the soak (after the warm-up): 2.5 s into its 6 s, SIGKILL."""
        proc = servers["llm"].proc
        killers.append(threading.Timer(2.5, proc.send_signal, [signal.SIGKILL]))
        killers[-1].start()
        await original(servers, *args)

    monkeypatch.setattr(soak_module, "sample_rss", kill_during_the_soak)
    cfg = soak_module.SoakConfig(
        translator=None, llm=str(chat_gpt), minutes=0.1, warmup_s=1.0, concurrency=2,
        max_tokens=4, sample_every_s=0.5, threads=1, log_dir=tmp_path,
    )  # fmt: skip
    try:
        report = soak_module.soak(cfg)
    finally:
        for killer in killers:
            killer.cancel()
    llm = report["servers"]["llm"]
    assert not report["passed"] and report["kinds"]["all"]["errors"] > 0
    assert llm["rss_end_mib"] is None and llm["rss_growth_pct"] is None
    assert llm["still_answers"] == f"the process exited with {-signal.SIGKILL}"
    assert llm["exit_code"] == -signal.SIGKILL
    reasons = report["kinds"]["all"]["errors_by_reason"]
    gone = ("ConnectError", "RemoteProtocolError", "ReadError", "stream without data: [DONE]")
    assert all(r.startswith(gone) for r in reasons), reasons
    assert report["warmup"]["all"]["errors"] == 0 and report["kinds"]["all"]["ok"] > 0


def test_a_server_that_cannot_start_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import bench.soak as soak_module

    def failing_server(role: str, source: str, *_args: Any, **_kwargs: Any) -> Any:
        """What ``dhian serve`` does with a bad model: one error line, exit 2 (without the
        seconds its imports take)."""
        log = tmp_path / f"{role}.log"
        code = "import sys; print('loading'); print('error: MODEL does not exist'); sys.exit(2)"
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-c", code], stdout=out)
        return soak_module.Server(role, source, "http://127.0.0.1:9", proc, log)

    monkeypatch.setattr(soak_module, "start_server", failing_server)
    out = tmp_path / "soak.json"
    assert soak_module.main(["--llm", "nope", "--minutes", "0.1", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        "error: the llm server (nope) exited with 2 before it was ready: "
        "loading | error: MODEL does not exist\n"
    )
    assert soak_module.main(["--minutes", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == "error: a soak needs a model: give --translator DIR and/or --llm SOURCE\n"
    assert not out.exists()


# --------------------------------------------------------------------------- the soak


def _llm(chat_gpt: Path) -> str:
    """``smollm2`` (the built-in name ``dhian serve`` takes) when its GGUF is available, else
    the tiny chat GPT."""
    try:
        fetch_pretrained("smollm2", quiet=True)
    except (DhianError, OSError) as exc:
        print(f"SmolLM2 not available ({exc}); the LLM is the tiny chat GPT")
        return str(chat_gpt)
    return "smollm2"


@pytest.mark.slow
@pytest.mark.timeout(int(MINUTES * 60 + WARMUP_S) + 900)
def test_soak(tiny_dirs: Any, chat_gpt: Path, tmp_path: Path) -> None:
    from bench.soak import MAX_RSS_GROWTH_PCT, main

    out = Path(os.environ.get("DHIAN_SOAK_OUT") or tmp_path / "soak.json")
    args = ["--translator", str(tiny_dirs["transformer"]), "--llm", _llm(chat_gpt)]
    args += ["--minutes", f"{MINUTES:g}", "--warmup", f"{WARMUP_S:g}", "--concurrency", "8"]
    args += ["--threads", "1"]  # as every server test: two servers share the cores
    code = main([*args, "--logs", str(tmp_path / "logs"), "--out", str(out)])
    report = json.loads(out.read_text())
    errors = {k: v["errors_by_reason"] for k, v in report["kinds"].items() if v["errors"]}
    assert not errors and report["warmup"]["all"]["errors"] == 0, (errors, report["warmup"])
    for role, s in report["servers"].items():
        assert s["rss_growth_pct"] < MAX_RSS_GROWTH_PCT, (role, s["rss_start_mib"], s["samples"])
        assert s["still_answers"] is True, (role, s["still_answers"])
    assert code == 0 and report["passed"]
