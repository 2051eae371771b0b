"""``dhian generate``: continue a prompt with a causal LM, streaming to the terminal.

Wiring only: load the model (:func:`dhian.inference.load.load_model`: model dir, run dir, HF dir,
``.gguf`` file or a built-in name such as ``smollm2``), call
:func:`dhian.inference.generate.generate_text` (GPT: ``--no-cache`` applies) or
:func:`dhian.inference.generate.complete_texts` (LLaMA family), print decoded increments as they
are produced (with flush). ``--chat`` wraps the prompt as one user message in the model's chat
template (:func:`dhian.inference.chat.render_messages`, optional ``--system``) and prints only
the reply. ``--n`` samples are generated one after another, sample i with seed ``seed + i``
(the same text a batch of n would give, see :mod:`dhian.decoding.sampling`). ``--compile``
(LLaMA) runs the decoding step compiled where it pays (:mod:`dhian.decoding.compiled_step`);
its notices go to stderr.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from dhian.cli.options import add_compile_argument, add_dtype_argument, finite_float, notice
from dhian.errors import ConfigError


def register(sub: Any) -> None:
    """Add the ``generate`` verb."""
    p = sub.add_parser(
        "generate",
        help="continue a prompt with a causal LM: GPT, LLaMA, built-in smollm2 (streams tokens)",
        description="Continue --prompt with the causal language model in --model, printing the "
        "text as it is generated. --temperature 0 is greedy decoding. --chat sends the prompt "
        "as a user message through the model's chat template and prints the reply.",
    )
    p.add_argument(
        "--model",
        required=True,
        metavar="MODEL",
        help="model dir (dhian train output), HF dir, .gguf file or built-in name (smollm2)",
    )
    p.add_argument("--prompt", default="", help="text to continue (default: start a new document)")
    p.add_argument("--n", type=int, default=1, help="number of samples (default 1)")
    p.add_argument("--max-new-tokens", type=int, default=200, metavar="N", help="default 200")
    p.add_argument(
        "--temperature",
        type=finite_float,
        default=0.8,
        metavar="T",
        help="0 = greedy (default 0.8)",
    )
    p.add_argument("--top-k", type=int, default=0, metavar="K", help="0 = off (default)")
    p.add_argument("--top-p", type=finite_float, default=1.0, metavar="P", help="1 = off (default)")
    p.add_argument(
        "--repetition-penalty",
        type=finite_float,
        default=1.0,
        metavar="R",
        help="1 = off (default)",
    )
    p.add_argument("--seed", type=int, default=None, metavar="S", help="for reproducible samples")
    p.add_argument(
        "--stop",
        action="append",
        default=[],
        metavar="STR",
        help="stop a sample when its text contains STR (repeatable)",
    )
    p.add_argument(
        "--chat",
        action="store_true",
        help="wrap --prompt in the model's chat template (instruction-tuned models)",
    )
    p.add_argument("--system", default=None, help="with --chat: a system message")
    p.add_argument("--no-cache", action="store_true", help="GPT: recompute the context every step")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    add_dtype_argument(p)
    add_compile_argument(p)
    p.set_defaults(handler=run)


def _check(args: argparse.Namespace) -> None:
    if args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    if args.max_new_tokens < 0:
        raise ConfigError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    if args.temperature < 0:
        raise ConfigError(f"--temperature must be >= 0 (0 = greedy), got {args.temperature}")
    if args.top_k < 0:
        raise ConfigError(f"--top-k must be >= 0 (0 = off), got {args.top_k}")
    if not 0.0 < args.top_p <= 1.0:
        raise ConfigError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.repetition_penalty <= 0:
        raise ConfigError(f"--repetition-penalty must be > 0, got {args.repetition_penalty}")
    if args.system is not None and not args.chat:
        raise ConfigError("--system needs --chat (it is a chat message)")
    if args.chat and not args.prompt.strip():
        raise ConfigError("--chat needs a --prompt (the user's message)")


def run(args: argparse.Namespace) -> int:
    """Load the model, then generate and stream ``--n`` continuations of ``--prompt``."""
    _check(args)
    from dhian.inference.chat import render_messages
    from dhian.inference.generate import (
        compiled_decoder,
        complete_texts,
        generate_text,
        uses_static_cache,
    )
    from dhian.inference.load import load_model, require_task

    loaded = load_model(args.model, args.device, args.dtype)  # a run dir means its best/
    require_task(loaded, args.model, "generate", "lm")
    compiled = compiled_decoder(loaded, args.compile, notice=notice)
    tokenizer = loaded.tokenizers.get("tgt") or loaded.tokenizers.get("src")
    prompt = args.prompt
    if args.chat:
        messages = [{"role": "user", "content": args.prompt}]
        if args.system is not None:
            messages.insert(0, {"role": "system", "content": args.system})
        prompt = render_messages(loaded, messages)
    out = sys.stdout

    def show(_row: int, text: str) -> None:
        out.write(text)
        out.flush()

    sampling = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "repetition_penalty": args.repetition_penalty,
        "stop": args.stop,
    }
    for i in range(args.n):
        if args.n > 1:
            out.write(f"{'' if i == 0 else chr(10)}--- sample {i + 1} ---\n")
        if not args.chat:
            out.write(args.prompt)
        out.flush()
        seed = None if args.seed is None else args.seed + i
        if uses_static_cache(loaded.model):
            complete_texts(loaded, [prompt], seed=seed, on_text=show, compiled=compiled, **sampling)
        else:
            generate_text(
                loaded.model,
                tokenizer,
                [prompt],
                seed=seed,
                use_cache=not args.no_cache,
                on_text=show,
                **sampling,
            )
        out.write("\n")
        out.flush()
    return 0
