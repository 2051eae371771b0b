"""The LLaMA decoder family (SmolLM2, Llama 2/3 layouts): config, model and KV cache.

Re-exports :class:`LlamaConfig`, :class:`LlamaModel`, :class:`LlamaKVCache` and
:func:`build_llama`. Imports: :mod:`dhian.models.llama.config`, :mod:`dhian.models.llama.model`.
"""

from dhian.models.llama.config import LlamaConfig
from dhian.models.llama.model import LlamaKVCache, LlamaModel, build_llama

__all__ = ["LlamaConfig", "LlamaKVCache", "LlamaModel", "build_llama"]
