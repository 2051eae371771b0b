"""``dhian serve --model DIR [--host 127.0.0.1 --port 8000] [--max-batch 16] ...``.

Wiring only: check the numbers, then :func:`dhian.serve.server.run_server` (FastAPI + uvicorn;
a web page at ``/``, the JSON API described at ``/docs``; a causal LM such as ``smollm2`` also
gets the OpenAI-compatible ``/v1`` routes). ``--compile auto`` (the default) compiles a
LLaMA model's decoding step in the background for each batch size and cache length requests
need (a long-lived process: it pays), the requests decode eagerly until it is ready.
"""

from __future__ import annotations

import argparse
from typing import Any

from dhian.cli.options import add_compile_argument, add_dtype_argument, finite_float
from dhian.errors import ConfigError


def register(sub: Any) -> None:
    """Add the ``serve`` verb."""
    p = sub.add_parser(
        "serve",
        help="serve a model over HTTP: JSON API + a web page with its attention",
        description="Serve the model in --model: POST /translate, /classify, /generate, "
        "/fill-mask (as fits the model) and /attention; GET /health; a web page at /. "
        "Language models also answer OpenAI's POST /v1/chat/completions, /v1/completions and "
        "GET /v1/models. "
        "Concurrent requests are batched; SIGTERM / Ctrl-C finish the requests in flight.",
    )
    p.add_argument(
        "--model",
        required=True,
        metavar="MODEL",
        help="dhian or HF model dir, .gguf file or built-in name (smollm2)",
    )
    p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only)")
    p.add_argument("--port", type=int, default=8000, help="default 8000")
    p.add_argument("--max-batch", type=int, default=16, metavar="N", help="texts per model call")
    p.add_argument(
        "--max-queue", type=int, default=64, metavar="N", help="waiting requests before 503"
    )
    p.add_argument(
        "--timeout", type=finite_float, default=30.0, metavar="S", help="seconds per request"
    )
    p.add_argument(
        "--read-timeout",
        type=finite_float,
        default=10.0,
        metavar="S",
        help="seconds a request's headers, then its body, may take to arrive (beyond: 408)",
    )
    p.add_argument(
        "--max-connections", type=int, default=512, metavar="N", help="open connections in all"
    )
    p.add_argument(
        "--max-connections-per-client",
        type=int,
        default=64,
        metavar="N",
        help="open connections from one address (beyond: 429)",
    )
    p.add_argument("--max-chars", type=int, default=2000, metavar="N", help="characters per text")
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=1024,
        metavar="N",
        help="most new tokens one /v1 request may ask for (default 1024)",
    )
    p.add_argument(
        "--llm-batch",
        type=int,
        default=8,
        metavar="N",
        help="LLaMA-family models: /v1 requests decoded together (continuous batching; "
        "more wait for a free row, up to --max-queue; default 8)",
    )
    p.add_argument(
        "--llm-context",
        type=int,
        default=2048,
        metavar="N",
        help="LLaMA-family models: tokens (prompt + new) per /v1 request, at most the model's "
        "context; the KV cache holds --llm-batch x N tokens (default 2048)",
    )
    p.add_argument(
        "--batch-wait-ms", type=finite_float, default=5.0, metavar="MS", help="wait to fill a batch"
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    add_dtype_argument(p)
    add_compile_argument(p)
    p.set_defaults(handler=run)


def _check(args: argparse.Namespace) -> None:
    for flag, value, low in (
        ("--max-batch", args.max_batch, 1),
        ("--max-queue", args.max_queue, 1),
        ("--max-chars", args.max_chars, 1),
        ("--max-new-tokens", args.max_new_tokens, 1),
        ("--llm-batch", args.llm_batch, 1),
        ("--llm-context", args.llm_context, 2),
        ("--max-connections", args.max_connections, 1),
        ("--max-connections-per-client", args.max_connections_per_client, 1),
    ):
        if value < low:
            raise ConfigError(f"{flag} must be >= {low}, got {value}")
    if args.timeout <= 0:
        raise ConfigError(f"--timeout must be > 0 seconds, got {args.timeout}")
    if args.read_timeout <= 0:
        raise ConfigError(f"--read-timeout must be > 0 seconds, got {args.read_timeout}")
    if args.batch_wait_ms < 0:
        raise ConfigError(f"--batch-wait-ms must be >= 0, got {args.batch_wait_ms}")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {args.port}")


def run(args: argparse.Namespace) -> int:
    """Load the model and serve it until interrupted."""
    _check(args)
    try:
        from dhian.inference.load import load_model  # heavy: see dhian.cli
        from dhian.nn.compute_thread import on_compute_thread
        from dhian.serve.app import ServeSettings
        from dhian.serve.server import bind_socket, run_server
    except ImportError as exc:
        raise ConfigError(
            f"dhian serve needs FastAPI and uvicorn ({exc.name} is missing): "
            "pip install fastapi uvicorn"
        ) from exc
    settings = ServeSettings(
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        timeout=args.timeout,
        max_chars=args.max_chars,
        batch_wait_ms=args.batch_wait_ms,
        max_new_tokens=args.max_new_tokens,
        llm_batch=args.llm_batch,
        llm_context=args.llm_context,
        read_timeout=args.read_timeout,
        max_connections=args.max_connections,
        max_connections_per_client=args.max_connections_per_client,
        compile=args.compile,
    )
    sock = bind_socket(args.host, args.port)  # a port in use: one line before the model loads
    try:
        loaded = on_compute_thread(load_model, args.model, args.device, args.dtype)
        run_server(
            args.model, args.host, args.port, settings, device=args.device, loaded=loaded, sock=sock
        )
    finally:
        sock.close()
    return 0
