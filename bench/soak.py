"""The soak test of ``dhian serve``: minutes of mixed load on real server processes, watching
for errors and memory growth (issue #21).

``python -m bench.soak --translator DIR --llm SOURCE [--minutes 10] [--warmup 60]
[--concurrency 8] [--out bench/results/soak.json]``

What it does:

1. starts one ``python -m dhian serve`` process per model on a free port of 127.0.0.1 (a
   server serves one model, so a translator and an LLM are two processes; either may be left
   out), and waits for ``/health``;
2. **warm-up**: runs the load below for ``--warmup`` seconds, so that the allocator, the
   batch shapes and the caches of every code path have settled; then waits for the requests in
   flight and reads each server's resident memory (RSS: ``psutil`` when installed, else
   ``/proc/PID/status``) — the *start* figure;
3. **soak**: ``--concurrency`` workers (asyncio + httpx, one connection pool per server) each
   send one request after another for ``--minutes``, the kind drawn from the mix
   (:data:`DEFAULT_MIX`): ``translate`` (``POST /translate``, 1–3 texts, greedy or beam 4),
   ``generate`` (``POST /generate``), ``completion`` / ``completion-stream``
   (``POST /v1/completions``), ``chat`` / ``chat-stream`` (``POST /v1/chat/completions``),
   each LLM request asking for a few tokens (greedy or sampled with a seed); every
   ``--sample-every`` seconds the RSS of each server is sampled;
4. after the last request the RSS again (the *end* figure), then ``/health`` and one request
   per server: the server must still answer; then SIGTERM.

An **error** is anything but a well-formed 200: another status (the server's one-line reason is
kept), a timeout, a connection failure, a body without the fields of its endpoint, or a stream
that holds an error chunk or does not end with ``data: [DONE]``. Latency is from sending the
request to the last byte of the answer (the ``[DONE]`` of a stream), over the successful
requests; percentiles are nearest-rank. **Pass criteria** (:data:`MAX_RSS_GROWTH_PCT`): no error
(warm-up included), every server's RSS at the end less than 10% above its RSS after the
warm-up, every server still answering at the end. The JSON report (``--out``) holds the
figures per request kind and per server, the RSS samples, the CPU (model name and speed flags,
:func:`bench.harness.cpu_description`) and the verdict; a short table is printed; the exit
status is 0 when the soak passed, 1 when it did not.
The load generator runs in this process, on the same CPUs as the servers: on a small machine
its latencies include that contention.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import math
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence, Set
from pathlib import Path
from typing import Any

import httpx

from bench.harness import RESULTS, SPEED_FLAGS, cpu_description
from dhian.train.optim import cpu_flags

try:  # optional: the RSS is read from /proc without it
    import psutil
except ImportError:  # pragma: no cover - depends on the environment
    psutil = None

#: What reading the RSS of a process that has just exited raises.
_GONE: tuple[type[Exception], ...] = (OSError, RuntimeError)
if psutil is not None:
    _GONE += (psutil.Error,)

#: The request kinds, in report order; all but ``translate`` go to the LLM server.
KINDS = ("translate", "generate", "completion", "completion-stream", "chat", "chat-stream")
TRANSLATE_KINDS = ("translate",)
CHAT_KINDS = ("chat", "chat-stream")
#: How often each kind is drawn (relative weights).
DEFAULT_MIX = {
    "translate": 4.0,
    "generate": 1.0,
    "completion": 1.0,
    "completion-stream": 1.0,
    "chat": 1.5,
    "chat-stream": 1.5,
}
#: Seconds a worker waits after a failed request (a dead server is not hammered in a loop).
ERROR_PAUSE_S = 0.1
#: The most a server's RSS may grow from the end of the warm-up to the end of the soak.
MAX_RSS_GROWTH_PCT = 10.0
FINISH_REASONS = ("stop", "length")

#: Texts to translate (German, as the built-in corpora); any translator takes them.
SOURCES = (
    "Und es ward Licht.",
    "Im Anfang schuf Gott Himmel und Erde.",
    "Und die Erde war wüst und leer, und es war finster auf der Tiefe.",
    "Gott",
    "Und Gott sah das Licht, dass es gut war. Da schied Gott das Licht von der Finsternis.",
    "Und nannte das Licht Tag und die Finsternis Nacht.",
    "Da ward aus Abend und Morgen der erste Tag.",
    "Und Gott sprach: Es werde eine Feste zwischen den Wassern.",
)
#: Prompts to continue.
PROMPTS = (
    "The capital of France is",
    "Once upon a time",
    "In the beginning of the nineteenth century the town was a small market on the river,",
    "def fibonacci(n):",
    "The three primary colours are",
    "Water boils at",
)
#: What a chat user says.
QUESTIONS = (
    "What is the capital of France?",
    "Give me one word that rhymes with light.",
    "Explain in one sentence what attention does in a transformer.",
    "Hi!",
    "List three fruits.",
)


@dataclasses.dataclass(frozen=True)
class SoakConfig:
    """One soak: the models (``translator`` a translation model, ``llm`` a causal LM; any
    source ``dhian serve --model`` takes; ``None`` leaves that server out), ``minutes`` of load
    after ``warmup_s`` seconds of warm-up, ``concurrency`` workers, the ``mix`` of request
    kinds, ``max_tokens`` new tokens at most per LLM request, the server's ``--timeout``
    (``server_timeout_s``) and the client's (``request_timeout_s``), the RSS sampling period,
    ``threads`` (``OMP_NUM_THREADS`` of the servers; ``None``: torch's default) and where the
    servers' logs go (``log_dir``; ``None``: a new temporary folder)."""

    translator: str | None
    llm: str | None
    minutes: float = 10.0
    warmup_s: float = 60.0
    concurrency: int = 8
    seed: int = 0
    mix: Mapping[str, float] = dataclasses.field(default_factory=lambda: dict(DEFAULT_MIX))
    max_tokens: int = 32
    server_timeout_s: float = 60.0
    request_timeout_s: float = 120.0
    sample_every_s: float = 10.0
    start_timeout_s: float = 300.0
    threads: int | None = None
    log_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.translator is None and self.llm is None:
            raise ValueError("a soak needs a model: give --translator DIR and/or --llm SOURCE")
        if self.minutes <= 0 or self.warmup_s < 0:
            raise ValueError(
                f"--minutes must be > 0 and --warmup >= 0, got {self.minutes} and {self.warmup_s}"
            )
        if self.concurrency < 1:
            raise ValueError(f"--concurrency must be >= 1, got {self.concurrency}")
        if self.max_tokens < 1:
            raise ValueError(f"--max-tokens must be >= 1, got {self.max_tokens}")
        unknown = sorted(set(self.mix) - set(KINDS))
        if unknown or any(w < 0 for w in self.mix.values()) or not any(self.mix.values()):
            raise ValueError(
                f"--mix {dict(self.mix)} is not a mix: use kinds of {', '.join(KINDS)} with "
                "weights >= 0, at least one above 0"
            )


@dataclasses.dataclass
class Server:
    """A ``dhian serve`` child process: its ``role`` (translator | llm), the model ``source``,
    ``url``, process, log file and, once ready, the ``/health`` body."""

    role: str
    source: str
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    health: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Call:
    """One request to send: its ``kind``, ``path``, JSON ``body``; ``texts`` results expected."""

    kind: str
    path: str
    body: dict[str, Any]
    texts: int = 1

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What became of one request: ``error`` is ``None`` for a well-formed 200."""

    kind: str
    seconds: float
    error: str | None = None


# --------------------------------------------------------------------------- servers


def free_port(avoid: Set[int] = frozenset()) -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now and not in ``avoid`` (ports
    given to servers that have not bound them yet)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in avoid:
            return port


def start_server(
    role: str, source: str, cfg: SoakConfig, log_dir: Path, avoid: Set[int] = frozenset()
) -> Server:
    """Start ``python -m dhian serve --model source`` on a free loopback port not in ``avoid``
    (not yet ready)."""
    port = free_port(avoid)
    room = str(max(64, 4 * cfg.concurrency))
    argv = [sys.executable, "-m", "dhian", "serve", "--model", source, "--port", str(port)]
    argv += ["--device", "cpu", "--timeout", f"{cfg.server_timeout_s:g}"]
    argv += ["--max-queue", room, "--max-connections-per-client", room]
    env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    if cfg.threads is not None:
        env["OMP_NUM_THREADS"] = str(cfg.threads)
    log = log_dir / f"{role}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    return Server(role, source, f"http://127.0.0.1:{port}", proc, log)


def wait_ready(server: Server, timeout: float) -> None:
    """Poll ``/health`` until it answers 200 (kept in ``server.health``); RuntimeError when the
    process exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            tail = server.log.read_text(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(
                f"the {server.role} server ({server.source}) exited with "
                f"{server.proc.returncode} before it was ready: {' | '.join(tail)}"
            )
        try:
            r = httpx.get(f"{server.url}/health", timeout=2.0)
            if r.status_code == 200:
                server.health = r.json()
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(
        f"the {server.role} server ({server.source}) was not ready within {timeout:g} s "
        f"(see {server.log}); raise --start-timeout on a slow machine"
    )


def stop_server(server: Server) -> int | None:
    """SIGTERM (graceful: requests in flight finish), then SIGKILL after 30 s; the exit code."""
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(30)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(10)
    return server.proc.returncode


def rss_mib(pid: int) -> float:
    """Resident set size of process ``pid`` in MiB (psutil, else Linux's /proc/PID/status)."""
    if psutil is not None:
        return float(psutil.Process(pid).memory_info().rss) / 2**20
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0  # the line reads "VmRSS:  123456 kB"
    raise RuntimeError(f"no VmRSS line in /proc/{pid}/status: install psutil")


def server_rss(server: Server) -> float | None:
    """RSS of ``server`` in MiB; ``None`` once its process has exited."""
    if server.proc.poll() is not None:
        return None
    try:
        return rss_mib(server.proc.pid)
    except _GONE:
        return None  # it exited between the poll and the read


# --------------------------------------------------------------------------- requests


def make_call(kind: str, rng: random.Random, llm_name: str, max_tokens: int) -> Call:
    """A request of ``kind`` with random texts and settings drawn from ``rng``."""
    if kind == "translate":
        texts = rng.sample(SOURCES, rng.choice((1, 1, 1, 2, 3)))
        beam = rng.choice((1, 1, 1, 4))
        text: str | list[str] = texts[0] if len(texts) == 1 and rng.random() < 0.5 else texts
        return Call(kind, "/translate", {"text": text, "beam": beam}, texts=len(texts))
    new = rng.randint(min(4, max_tokens), max_tokens)
    temperature = rng.choice((0.0, 0.8))
    seed = rng.randrange(2**31)
    if kind == "generate":
        body = {"prompt": rng.choice(PROMPTS), "max_new_tokens": new}
        return Call(kind, "/generate", {**body, "temperature": temperature, "seed": seed})
    body = {"model": llm_name, "max_tokens": new, "temperature": temperature, "seed": seed}
    if kind.endswith("-stream"):
        body["stream"] = True
        if rng.random() < 0.5:
            body["stream_options"] = {"include_usage": True}
    if kind.startswith("completion"):
        return Call(kind, "/v1/completions", {**body, "prompt": rng.choice(PROMPTS)})
    if kind.startswith("chat"):
        messages = [{"role": "user", "content": rng.choice(QUESTIONS)}]
        if rng.random() < 0.3:
            messages.insert(0, {"role": "system", "content": "You are a terse assistant."})
        if rng.random() < 0.3:  # a second turn
            messages += [
                {"role": "assistant", "content": "Sure."},
                {"role": "user", "content": rng.choice(QUESTIONS)},
            ]
        return Call(kind, "/v1/chat/completions", {**body, "messages": messages})
    raise ValueError(f"unknown request kind {kind!r}; one of {', '.join(KINDS)}")


def check_answer(call: Call, body: Any) -> str | None:
    """Why a 200 JSON answer to ``call`` is malformed, or ``None`` when it is well formed."""
    try:
        if call.kind == "translate":
            results = body["results"]
            if len(results) != call.texts or not all(
                isinstance(r["translation"], str) for r in results
            ):
                return f"bad body: {len(results)} translations for {call.texts} texts"
            return None
        if call.kind == "generate":
            return None if isinstance(body["text"], str) else "bad body: text is not a string"
        choice = body["choices"][0]
        text = choice["message"]["content"] if call.kind == "chat" else choice["text"]
        if not isinstance(text, str) or choice["finish_reason"] not in FINISH_REASONS:
            return f"bad body: finish_reason {choice['finish_reason']!r}"
        if body["usage"]["completion_tokens"] > call.body["max_tokens"]:
            return f"bad body: {body['usage']['completion_tokens']} tokens for max_tokens"
        return None
    except KeyError as exc:
        return f"bad body: no {exc} field"
    except (IndexError, TypeError) as exc:
        return f"bad body: {exc}"


def check_stream(lines: Sequence[str]) -> str | None:
    """Why the server-sent events ``lines`` (the ``data: ...`` payloads, prefix removed) are not
    a complete stream: an error chunk, no ``finish_reason``, or no final ``[DONE]``."""
    if not lines or lines[-1] != "[DONE]":
        return "stream without data: [DONE] at the end"
    finished = False
    for line in lines[:-1]:
        try:
            chunk = json.loads(line)
        except json.JSONDecodeError:
            return f"stream chunk is not JSON: {line[:60]!r}"
        if "error" in chunk:
            return f"error chunk in stream: {_reason(chunk)}"
        finished |= any(c.get("finish_reason") in FINISH_REASONS for c in chunk.get("choices", []))
    return None if finished else "stream without a finish_reason"


def _reason(body: Any) -> str:
    """The one-line error of a dhian (``{"error": line}``) or OpenAI (``{"error": {"message"}}``)
    error body."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        error = error.get("message")
    return str(error or body)[:100]


async def send(client: httpx.AsyncClient, call: Call) -> Outcome:
    """Send ``call`` and judge the answer (:func:`check_answer`, :func:`check_stream`)."""
    start = time.perf_counter()
    try:
        if call.stream:
            async with client.stream("POST", call.path, json=call.body) as r:
                if r.status_code != 200:
                    await r.aread()
                    error = f"HTTP {r.status_code}: {_reason(_json(r))}"
                else:
                    lines = [
                        line[len("data: ") :]
                        async for line in r.aiter_lines()
                        if line.startswith("data: ")
                    ]
                    error = check_stream(lines)
        else:
            r = await client.post(call.path, json=call.body)
            if r.status_code != 200:
                error = f"HTTP {r.status_code}: {_reason(_json(r))}"
            else:
                error = check_answer(call, _json(r))
    except httpx.TimeoutException as exc:
        error = f"timeout ({type(exc).__name__})"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {str(exc)[:80]}"
    return Outcome(call.kind, time.perf_counter() - start, error)


def _json(r: httpx.Response) -> Any:
    try:
        return r.json()
    except ValueError:
        return {"error": r.text[:100]}


# --------------------------------------------------------------------------- load


class Load:
    """The workers of one soak: which kinds go to which server's client."""

    def __init__(self, cfg: SoakConfig, servers: Mapping[str, Server]) -> None:
        self.cfg = cfg
        limits = httpx.Limits(
            max_connections=2 * cfg.concurrency,
            max_keepalive_connections=2 * cfg.concurrency,
            keepalive_expiry=2.0,  # below the server's 5 s: never reuse a connection it closes
        )
        self.clients = {
            role: httpx.AsyncClient(
                base_url=s.url, timeout=cfg.request_timeout_s, limits=limits, trust_env=False
            )
            for role, s in servers.items()
        }
        llm = servers.get("llm")
        self.llm_name = str(llm.health.get("name", "")) if llm else ""
        self.skipped: dict[str, str] = {}
        for kind in KINDS:
            if kind in TRANSLATE_KINDS and "translator" not in servers:
                self.skipped[kind] = "no --translator"
            elif kind not in TRANSLATE_KINDS and llm is None:
                self.skipped[kind] = "no --llm"
            elif kind in CHAT_KINDS and llm is not None and not llm.health.get("chat"):
                self.skipped[kind] = "the LLM has no chat template"
            elif cfg.mix.get(kind, 0.0) <= 0:
                self.skipped[kind] = "weight 0 in --mix"
        self.kinds = [k for k in KINDS if k not in self.skipped]
        if not self.kinds:
            raise ValueError(f"no request kind left to send: {self.skipped}")
        self.weights = [cfg.mix[k] for k in self.kinds]

    def client_for(self, kind: str) -> httpx.AsyncClient:
        return self.clients["translator" if kind in TRANSLATE_KINDS else "llm"]

    async def run(self, seconds: float, seed: int) -> list[Outcome]:
        """``concurrency`` workers sending requests for ``seconds``; returns once every request
        has been answered (the last ones may end a little after ``seconds``)."""
        outcomes: list[Outcome] = []
        deadline = time.monotonic() + seconds

        async def worker(i: int) -> None:
            rng = random.Random(seed * 1_000_003 + i)
            while time.monotonic() < deadline:
                kind = rng.choices(self.kinds, self.weights)[0]
                call = make_call(kind, rng, self.llm_name, self.cfg.max_tokens)
                outcomes.append(outcome := await send(self.client_for(kind), call))
                if outcome.error is not None:
                    await asyncio.sleep(ERROR_PAUSE_S)

        await asyncio.gather(*(worker(i) for i in range(self.cfg.concurrency)))
        return outcomes

    async def still_answers(self, server: Server) -> str | None:
        """``None`` when ``server`` is alive and answers ``/health`` and one request; else why
        not."""
        if server.proc.poll() is not None:
            return f"the process exited with {server.proc.returncode}"
        client = self.clients[server.role]
        try:
            r = await client.get("/health")
        except httpx.HTTPError as exc:
            return f"/health: {type(exc).__name__}"
        if r.status_code != 200 or _json(r).get("status") != "ok":
            return f"/health answered {r.status_code}"
        if server.role == "translator":
            kind = "translate"
        else:
            kind = "chat-stream" if server.health.get("chat") else "completion-stream"
        outcome = await send(client, make_call(kind, random.Random(0), self.llm_name, 4))
        return None if outcome.error is None else f"{kind}: {outcome.error}"

    async def close(self) -> None:
        for client in self.clients.values():
            await client.aclose()


async def sample_rss(
    servers: Mapping[str, Server],
    every: float,
    samples: dict[str, list[tuple[float, float]]],
    stop: asyncio.Event,
) -> None:
    """Append ``(seconds since the soak began, RSS MiB)`` per server every ``every`` seconds
    until ``stop`` is set."""
    t0 = time.monotonic()
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), every)
        except TimeoutError:
            for role, s in servers.items():
                mib = server_rss(s)
                if mib is not None:
                    samples[role].append((round(time.monotonic() - t0, 1), round(mib, 1)))


# --------------------------------------------------------------------------- figures


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank ``q``-th percentile of ascending ``sorted_values`` (``None`` when empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def _round(value: float | None) -> float | None:
    """``value`` to one decimal (``None`` stays ``None``)."""
    return None if value is None else round(value, 1)


def summarize(outcomes: Sequence[Outcome], seconds: float) -> dict[str, Any]:
    """Per kind (and ``"all"``): requests, ok, errors, errors by reason, requests per second,
    p50/p95/p99/max latency in ms over the successful requests."""
    table: dict[str, Any] = {}
    groups = {k: [o for o in outcomes if o.kind == k] for k in KINDS}
    groups["all"] = list(outcomes)
    for kind, group in groups.items():
        if not group and kind != "all":
            continue
        ok = sorted(o.seconds * 1000.0 for o in group if o.error is None)
        reasons = Counter(o.error for o in group if o.error is not None)
        table[kind] = {
            "requests": len(group),
            "ok": len(ok),
            "errors": len(group) - len(ok),
            "errors_by_reason": dict(reasons.most_common()),
            "per_s": round(len(group) / seconds, 3) if seconds > 0 else None,
            **{f"p{q}_ms": _round(percentile(ok, q)) for q in (50, 95, 99)},
            "max_ms": _round(ok[-1] if ok else None),
        }
    return table


def memory(
    samples: Sequence[tuple[float, float]], start: float | None, end: float | None
) -> dict[str, Any]:
    """RSS figures of one server: start (after the warm-up), end, max (of the three and the
    samples), growth from start to end in % (``None`` where the process had exited)."""
    known = [m for m in (start, end, *(mib for _, mib in samples)) if m is not None]
    growth = None if start is None or end is None else round(100.0 * (end - start) / start, 2)
    return {
        "rss_start_mib": _round(start),
        "rss_end_mib": _round(end),
        "rss_max_mib": _round(max(known) if known else None),
        "rss_growth_pct": growth,
        "samples": [list(s) for s in samples],
    }


def verdict(report: Mapping[str, Any]) -> list[str]:
    """Why the soak in ``report`` failed (empty: it passed)."""
    why = []
    errors = report["kinds"]["all"]["errors"] + report["warmup"]["all"]["errors"]
    if errors:
        why.append(f"{errors} request(s) failed")
    for role, s in report["servers"].items():
        if s["rss_growth_pct"] is None:
            why.append(f"{role} has no RSS figure at the start or end (the process exited)")
        elif s["rss_growth_pct"] >= MAX_RSS_GROWTH_PCT:
            why.append(
                f"{role} RSS grew {s['rss_growth_pct']:.1f}% (limit {MAX_RSS_GROWTH_PCT:g}%)"
            )
        if s["still_answers"] is not True:
            why.append(f"{role} does not answer at the end: {s['still_answers']}")
    return why


# --------------------------------------------------------------------------- the soak


async def _drive(cfg: SoakConfig, servers: Mapping[str, Server]) -> dict[str, Any]:
    load = Load(cfg, servers)
    try:
        boot = {role: server_rss(s) for role, s in servers.items()}
        t = time.monotonic()
        warm = await load.run(cfg.warmup_s, cfg.seed)
        warm_s = time.monotonic() - t
        start = {role: server_rss(s) for role, s in servers.items()}
        samples: dict[str, list[tuple[float, float]]] = {role: [] for role in servers}
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_rss(servers, cfg.sample_every_s, samples, stop))
        t = time.monotonic()
        outcomes = await load.run(cfg.minutes * 60.0, cfg.seed + 1)
        soak_s = time.monotonic() - t
        stop.set()
        await sampler
        end = {role: server_rss(s) for role, s in servers.items()}
        answers = {role: await load.still_answers(s) for role, s in servers.items()}
    finally:
        await load.close()
    report_servers = {}
    for role, s in servers.items():
        report_servers[role] = {
            "model": s.source,
            "name": s.health.get("name"),
            "kind": s.health.get("kind"),
            "pid": s.proc.pid,
            "log": str(s.log),
            "rss_boot_mib": _round(boot[role]),
            **memory(samples[role], start[role], end[role]),
            "still_answers": answers[role] or True,
        }
    return {
        "warmup": {"seconds": round(warm_s, 1), **summarize(warm, warm_s)},
        "seconds": round(soak_s, 1),
        "kinds": summarize(outcomes, soak_s),
        "kinds_skipped": load.skipped,
        "servers": report_servers,
    }


def soak(cfg: SoakConfig, command: str = "python -m bench.soak") -> dict[str, Any]:
    """Run the soak of ``cfg`` (servers started and stopped here) and return its report."""
    log_dir = cfg.log_dir or Path(tempfile.mkdtemp(prefix="dhian-soak-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    servers: dict[str, Server] = {}
    try:
        for role, source in (("translator", cfg.translator), ("llm", cfg.llm)):
            if source is not None:
                ports = {int(s.url.rsplit(":", 1)[1]) for s in servers.values()}
                servers[role] = start_server(role, source, cfg, log_dir, ports)
        for s in servers.values():  # both load at once
            wait_ready(s, cfg.start_timeout_s)
        body = asyncio.run(_drive(cfg, servers))
    finally:
        codes = {role: stop_server(s) for role, s in servers.items()}
    for role, code in codes.items():
        body["servers"][role]["exit_code"] = code
    flags = cpu_flags()
    report = {
        "command": command,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_description(),
        "cpu_flags": [f for f in SPEED_FLAGS if f in flags],
        "cpu_count": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "config": {
            "minutes": cfg.minutes,
            "warmup_s": cfg.warmup_s,
            "concurrency": cfg.concurrency,
            "seed": cfg.seed,
            "mix": dict(cfg.mix),
            "max_tokens": cfg.max_tokens,
            "server_timeout_s": cfg.server_timeout_s,
            "threads": cfg.threads,
        },
        **body,
        "max_rss_growth_pct": MAX_RSS_GROWTH_PCT,
    }
    why = verdict(report)
    report["passed"] = not why
    report["failures"] = why
    return report


def table(report: Mapping[str, Any]) -> str:
    """The short text table of a report."""
    cfg = report["config"]
    lines = [
        f"soak of dhian serve: {report['seconds']:.0f} s at concurrency {cfg['concurrency']} "
        f"after {report['warmup']['seconds']:.0f} s of warm-up "
        f"({report['warmup']['all']['requests']} requests, "
        f"{report['warmup']['all']['errors']} errors); {report['cpu']}",
        f"{'kind':<18}{'requests':>9}{'errors':>8}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}"
        f"{'p99 ms':>9}",
    ]
    for kind, k in report["kinds"].items():
        lines.append(
            f"{kind:<18}{k['requests']:>9}{k['errors']:>8}{_fmt(k['per_s'], 8, '.2f')}"
            + "".join(_fmt(k[f"p{q}_ms"], 9, ".0f") for q in (50, 95, 99))
        )
        lines += [f"    {n} x {reason}" for reason, n in k["errors_by_reason"].items()]
    lines.append(f"{'server':<12}{'RSS start':>11}{'end':>9}{'max MiB':>9}{'growth':>9}  answers")
    for role, s in report["servers"].items():
        alive = "yes" if s["still_answers"] is True else f"NO: {s['still_answers']}"
        lines.append(
            f"{role:<12}{_fmt(s['rss_start_mib'], 11, '.1f')}{_fmt(s['rss_end_mib'], 9, '.1f')}"
            f"{_fmt(s['rss_max_mib'], 9, '.1f')}{_fmt(s['rss_growth_pct'], 8, '.1f')}%  {alive}"
        )
    lines.append("passed" if report["passed"] else "FAILED: " + "; ".join(report["failures"]))
    return "\n".join(lines)


def _fmt(value: float | None, width: int, spec: str) -> str:
    return f"{'-' if value is None else format(value, spec):>{width}}"


def parse_mix(text: str) -> dict[str, float]:
    """``"translate=4,chat=1"`` → weights; kinds not named get 0."""
    mix = dict.fromkeys(KINDS, 0.0)
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, _, weight = part.partition("=")
        try:
            mix[kind.strip()] = float(weight)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"--mix part {part!r} is not KIND=WEIGHT (e.g. translate=4,chat=1)"
            ) from None
    return mix


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.soak``: run, print the table, write ``--out``; 0 when it passed."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--translator", help="translation model for POST /translate")
    parser.add_argument("--llm", help="causal LM (dir, .gguf or smollm2) for /generate and /v1")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the soak (10)")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds of warm-up (60)")
    parser.add_argument("--concurrency", type=int, default=8, help="workers (8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mix", type=parse_mix, help="KIND=WEIGHT,... (default: all kinds)")
    parser.add_argument("--max-tokens", type=int, default=32, help="per LLM request (32)")
    parser.add_argument("--timeout", type=float, default=60.0, help="server --timeout (60)")
    parser.add_argument("--sample-every", type=float, default=10.0, help="RSS period, s (10)")
    parser.add_argument("--start-timeout", type=float, default=300.0, help="s to start (300)")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS of the servers")
    parser.add_argument("--logs", type=Path, help="folder for the server logs (a temp dir)")
    parser.add_argument("--out", type=Path, default=RESULTS / "soak.json", help="JSON report")
    args = parser.parse_args(list(argv) if argv is not None else None)
    raw = list(argv) if argv is not None else sys.argv[1:]
    try:
        cfg = SoakConfig(
            translator=args.translator,
            llm=args.llm,
            minutes=args.minutes,
            warmup_s=args.warmup,
            concurrency=args.concurrency,
            seed=args.seed,
            mix=args.mix or dict(DEFAULT_MIX),
            max_tokens=args.max_tokens,
            server_timeout_s=args.timeout,
            request_timeout_s=args.timeout + 60.0,
            sample_every_s=args.sample_every,
            start_timeout_s=args.start_timeout,
            threads=args.threads,
            log_dir=args.logs,
        )
        report = soak(cfg, "python -m bench.soak " + " ".join(shlex.quote(a) for a in raw))
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(table(report))
    print(f"wrote {args.out}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
