"""The llama.cpp peer of ``llm-generate-smollm2``: :class:`LlamaCpp` wraps ``llama-cpp-python``'s
``Llama`` on the GGUF file for the scenario's two workloads. The scenario builds it in its own
process (:mod:`bench.peer_process`, which says why), so this module imports only
``llama_cpp`` — never torch — and the child runs llama.cpp as a user's process would.
"""

from __future__ import annotations

from typing import Any

#: how to get the optional peer
INSTALL = "pip install llama-cpp-python (builds llama.cpp from its sdist with cmake, ~6 min)"


def unavailable() -> str | None:
    """Why llama.cpp cannot run here, or None when it can (without loading it here)."""
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        return f"llama-cpp-python not installed; {INSTALL}"
    return None


class LlamaCpp:
    """llama.cpp on ``path`` with ``threads`` threads: greedy decoding of exactly ``new``
    tokens after ``prompt`` (:meth:`decode`) and one prefill of ``long_ids`` (:meth:`prefill`)."""

    def __init__(self, path: str, threads: int, prompt: list[int], long_ids: list[int], new: int):
        import llama_cpp

        self.llm: Any = llama_cpp.Llama(
            model_path=path,
            n_threads=threads,
            n_threads_batch=threads,
            n_ctx=1024,
            n_batch=512,
            verbose=False,
        )
        self.prompt, self.long_ids, self.new = prompt, long_ids, new

    def decode(self) -> list[list[int]]:
        """The ``new`` greedy tokens after the prompt, as one row."""
        out: list[int] = []
        for t in self.llm.generate(self.prompt, temp=0.0, reset=True):
            out.append(int(t))
            if len(out) == self.new:
                break
        return [out]

    def prefill(self) -> int:
        """Evaluate the long prompt from an empty cache; returns its token count."""
        self.llm.reset()
        self.llm.eval(self.long_ids)
        return len(self.long_ids)
