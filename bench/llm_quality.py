"""The quality bound of the LLM precision modes (issue #17), measured on SmolLM2-135M-Instruct.

``python -m bench.llm_quality [--docs N] [--modes fp32,bf16,int8,int4] [--out FILE]``:

- **news test perplexity per character** of every mode (dhian's ``score_documents``: documents
  packed behind an end-of-text token in blocks of 512, every token predicted once), and its
  relative difference to fp32 (the bound: within 1%);
- **greedy agreement**: 32 greedy tokens (no early stop) for 20 prompts (10 chat questions
  through the model's chat template, 10 plain text openings); a mode passes when its tokens
  equal fp32's on at least 15 of the 20;
- for context, **llama.cpp's own greedy agreement** with dhian's fp32 (``llama-cpp-python`` on
  the same Q4_1 file, the same 20 prompts as token ids, temperature 0, 32 tokens; a row of its
  own when llama-cpp-python is installed, ``--no-llamacpp`` skips it);
- **peak RSS** of a fresh process that loads the built-in model in the mode and greedily
  generates 128 tokens after a 16-token prompt (``VmHWM``: the whole Python process, torch
  included).

Prints a Markdown table and writes the JSON (``--out``, default ``bench/results/llm-quality.json``)
that docs/speed.md and the ``smollm2-*`` entries of docs/results.json quote. ``--docs N``
scores the first N test documents (0 = all 189).
"""

from __future__ import annotations

import argparse
import datetime
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn

from bench.harness import cpu_description

MODES = ("fp32", "bf16", "int8", "int4", "int4-fp32")
BLOCK = 512
QUESTIONS = (
    "What is the capital of France?",
    "Name three colours.",
    "How many legs does a spider have?",
    "Write a haiku about the sea.",
    "What is 12 times 7?",
    "Give me a tip for learning a new language.",
    "Why is the sky blue?",
    "Translate 'good morning' into Spanish.",
    "What is photosynthesis?",
    "Suggest a name for a pet turtle.",
)
OPENINGS = (
    "The history of the railway begins",
    "In a small village by the sea, there lived",
    "The best way to cook rice is",
    "Scientists announced on Tuesday that",
    "Once upon a time",
    "The stock market fell sharply after",
    "def fibonacci(n):",
    "Dear Sir or Madam, I am writing to",
    "The three laws of thermodynamics are",
    "My favourite book is",
)


class _Scored(nn.Module):
    """``model(ids)`` with a ``.logits`` attribute, as ``score_documents`` expects."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: Tensor) -> Any:
        logits, _ = self.model(ids)  # (B, T, V)
        return SimpleNamespace(logits=logits.float())


def _load(mode: str) -> Any:
    from dhian.inference.load import load_model

    return load_model("smollm2", "cpu", mode, quiet=True)


def prompts(tok: Any) -> list[list[int]]:
    """The 20 prompts as token ids (chat-rendered questions, then plain openings)."""
    from dhian.text.chat_template import render_chat

    chats = [
        render_chat(
            tok.chat_template,
            [{"role": "user", "content": q}],
            add_generation_prompt=True,
            bos_token=tok.id_to_token(tok.bos_id),
            eos_token=tok.id_to_token(tok.eos_id),
        )
        for q in QUESTIONS
    ]
    return [tok.encode(t) for t in [*chats, *OPENINGS]]


def measure(mode: str, docs: int) -> dict[str, Any]:
    """ppl_char on the news test documents and the greedy tokens of the 20 prompts."""
    from dhian.decoding.llm_generate import llm_generate
    from dhian.train.tasks.lm_eval import lm_documents, score_documents

    loaded = _load(mode)
    tok = loaded.tokenizers["src"]
    texts = lm_documents("news", "test", quiet=True)
    if docs > 0:
        texts = texts[:docs]
    t0 = time.perf_counter()
    score = score_documents(_Scored(loaded.model), tok, texts, BLOCK, "cpu", batch_size=4)
    scored_s = time.perf_counter() - t0
    greedy = [llm_generate(loaded.model, [p], max_new_tokens=32)[0].tokens for p in prompts(tok)]
    return {
        **score.metrics(),
        "chars": score.chars,
        "tokens": score.tokens,
        "documents": len(texts),
        "score_s": round(scored_s, 1),
        "greedy": greedy,
    }


def llamacpp_greedy(threads: int) -> list[list[int]] | None:
    """32 greedy tokens of llama.cpp (the GGUF as it is) for the 20 prompts, or ``None`` when
    llama-cpp-python is not installed."""
    try:
        import llama_cpp
    except ImportError:
        return None
    from dhian.data.builtin_corpora import fetch_pretrained
    from dhian.text.gguf_tokenizer import tokenizer_from_gguf

    path = str(fetch_pretrained("smollm2", quiet=True))
    tok = tokenizer_from_gguf(path)
    llm = llama_cpp.Llama(
        model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=512, verbose=False
    )
    out = []
    for ids in prompts(tok):
        tokens: list[int] = []
        for t in llm.generate(ids, temp=0.0, reset=True):  # no early stop, like dhian's rows
            tokens.append(int(t))
            if len(tokens) == 32:
                break
        out.append(tokens)
    return out


def _common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


def peak_rss(mode: str) -> float:
    """Peak RSS (MiB) of this process after loading ``mode`` and generating 128 tokens."""
    from dhian.decoding.llm_generate import llm_generate

    loaded = _load(mode)
    tok = loaded.tokenizers["src"]
    ids = tok.encode(OPENINGS[0] + " in England, where the first public line")[:16]
    llm_generate(loaded.model, [ids], max_new_tokens=128)
    # VmHWM, not ru_maxrss: a child forked from a big parent inherits the parent's ru_maxrss
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.llm_quality", description=__doc__)
    parser.add_argument("--docs", type=int, default=40, help="news test documents (0 = all)")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results/llm-quality.json"))
    parser.add_argument("--no-llamacpp", action="store_true", help="skip the llama.cpp row")
    parser.add_argument("--rss-only", metavar="MODE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.rss_only:
        print(json.dumps({"peak_rss_mib": round(peak_rss(args.rss_only), 1)}))
        return 0
    modes = [m for m in args.modes.split(",") if m]
    results: dict[str, Any] = {}
    for mode in modes:
        results[mode] = measure(mode, args.docs)
        cmd = [sys.executable, "-m", "bench.llm_quality", "--rss-only", mode]
        cmd += ["--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        results[mode]["peak_rss_mib"] = json.loads(out.strip().splitlines()[-1])["peak_rss_mib"]
        print(mode, {k: v for k, v in results[mode].items() if k != "greedy"}, flush=True)
    ref = results.get("fp32")
    rows = []
    for mode, r in results.items():
        if ref is not None:
            r["ppl_char_rel"] = r["ppl_char"] / ref["ppl_char"] - 1.0
            pairs = list(zip(r["greedy"], ref["greedy"], strict=True))
            r["greedy_same"] = sum(a == b for a, b in pairs)
            r["greedy_prefix"] = sum(_common_prefix(a, b) for a, b in pairs) / len(pairs)
            r["passes"] = abs(r["ppl_char_rel"]) <= 0.01 and r["greedy_same"] >= 15
        rows.append(
            f"| {mode} | {r['ppl_char']:.4f} | {100 * r.get('ppl_char_rel', 0.0):+.2f}% | "
            f"{r.get('greedy_same', '-')}/20 | {r.get('greedy_prefix', 32.0):.1f} | "
            f"{r['peak_rss_mib']:.0f} | {r.get('passes', '-')} |"
        )
    cpp = None
    if ref is not None and not args.no_llamacpp:
        cpp = llamacpp_greedy(args.threads)
    if cpp is not None and ref is not None:
        pairs = list(zip(cpp, ref["greedy"], strict=True))
        same, prefix = sum(a == b for a, b in pairs), sum(_common_prefix(a, b) for a, b in pairs)
        results["llamacpp"] = {"greedy": cpp, "greedy_same": same, "greedy_prefix": prefix / 20}
        rows.append(f"| llama.cpp Q4_1 | – | – | {same}/20 | {prefix / 20:.1f} | – | – |")
    print(
        "| mode | news test ppl_char | vs fp32 | greedy 32 = fp32 | common prefix | "
        "peak RSS MiB | passes |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    print("\n".join(rows))
    payload = {
        "command": "python -m bench.llm_quality " + " ".join(argv or sys.argv[1:]),
        "date": datetime.date.today().isoformat(),
        "cpu": cpu_description(),
        "threads": args.threads,
        "block_size": BLOCK,
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
