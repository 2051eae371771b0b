"""``dhian chat --model smollm2 [--system "..."]``: a multi-turn chat in the terminal.

Wiring only: load the model, keep a :class:`dhian.inference.chat.Conversation`, read a line,
stream the reply to stdout (flushed as it grows). ``/reset`` forgets the history (the system
message stays), ``/exit``, end of input (Ctrl-D) and Ctrl-C leave with status 0. A turn that no
longer fits the model's context is refused with one line (``/reset`` to go on); the history is
unchanged by a refused turn. ``--compile`` as for ``dhian generate`` (decided per turn).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from dhian.cli.options import add_compile_argument, add_dtype_argument, notice
from dhian.errors import ConfigError, DhianError

HELP = "/reset forgets the conversation, /exit (or Ctrl-D, Ctrl-C) leaves"


def register(sub: Any) -> None:
    """Add the ``chat`` verb."""
    p = sub.add_parser(
        "chat",
        help="chat with an instruction-tuned LLM in the terminal (e.g. --model smollm2)",
        description="A multi-turn chat with the model in --model through its chat template: "
        f"type a message, the reply streams back; {HELP}.",
    )
    p.add_argument(
        "--model",
        required=True,
        metavar="MODEL",
        help="built-in name (smollm2), .gguf file, HF or dhian model dir with a chat template",
    )
    p.add_argument("--system", default=None, help="a system message that opens the chat")
    p.add_argument("--max-new-tokens", type=int, default=256, metavar="N", help="per reply")
    p.add_argument(
        "--temperature", type=float, default=0.7, metavar="T", help="0 = greedy (default 0.7)"
    )
    p.add_argument("--top-k", type=int, default=0, metavar="K", help="0 = off (default)")
    p.add_argument("--top-p", type=float, default=0.9, metavar="P", help="default 0.9")
    p.add_argument("--repetition-penalty", type=float, default=1.1, metavar="R", help="default 1.1")
    p.add_argument("--seed", type=int, default=None, metavar="S", help="turn i uses S + i")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    add_dtype_argument(p)
    add_compile_argument(p)
    p.set_defaults(handler=run)


def _check(args: argparse.Namespace) -> None:
    if args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.temperature < 0:
        raise ConfigError(f"--temperature must be >= 0 (0 = greedy), got {args.temperature}")
    if args.top_k < 0:
        raise ConfigError(f"--top-k must be >= 0 (0 = off), got {args.top_k}")
    if not 0.0 < args.top_p <= 1.0:
        raise ConfigError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.repetition_penalty <= 0:
        raise ConfigError(f"--repetition-penalty must be > 0, got {args.repetition_penalty}")


def run(args: argparse.Namespace) -> int:
    """Chat until ``/exit``, end of input or Ctrl-C."""
    _check(args)
    from dhian.inference.chat import Conversation
    from dhian.inference.generate import compiled_decoder
    from dhian.inference.load import load_model, require_task

    loaded = load_model(args.model, args.device, args.dtype)
    require_task(loaded, args.model, "chat", "lm")
    chat = Conversation(
        loaded,
        system=args.system,
        compiled=compiled_decoder(loaded, args.compile, notice=notice),
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
    )
    out = sys.stdout

    def show(text: str) -> None:
        out.write(text)
        out.flush()

    print(f"chatting with {args.model}; {HELP}", flush=True)
    try:
        while True:
            try:
                line = input("you> ")
            except EOFError:
                out.write("\n")
                break
            text = line.strip()
            if not text:
                continue
            if text == "/exit":
                break
            if text == "/reset":
                chat.reset()
                print("(history cleared)", flush=True)
                continue
            show("bot> ")
            try:
                chat.say(text, on_text=show)
            except DhianError as exc:
                show(f"\nerror: {exc}; /reset starts over")
            show("\n")
    except KeyboardInterrupt:
        out.write("\n")
        out.flush()
    return 0
