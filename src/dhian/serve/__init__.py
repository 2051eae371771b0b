"""Serving and inspecting trained models: attention extraction, an HTTP API and its web page.

The top layer beside :mod:`dhian.cli` (may import anything). Modules:

- :mod:`~dhian.serve.tokens` — subword strings for display (markers ▁ Ġ ## cleaned up);
- :mod:`~dhian.serve.inference` — which endpoints a model kind has; batched translate/classify,
  generate, fill-mask on a :class:`~dhian.models.io.LoadedModel`;
- :mod:`~dhian.serve.attention` — :func:`extract_attention` for every family (RNN, transformer,
  BERT, GPT) → tokens + weights → the viewer payload;
- :mod:`~dhian.serve.report` — the PNG/JSON/HTML files of ``dhian attention``;
- :mod:`~dhian.serve.batching` — the worker thread that batches concurrent requests;
- :mod:`~dhian.serve.schemas`, :mod:`~dhian.serve.app`, :mod:`~dhian.serve.page`,
  :mod:`~dhian.serve.server` — the FastAPI app, its page at ``/`` and running it with uvicorn.

FastAPI and uvicorn are imported only by the app modules, so ``dhian attention`` works
without them.
"""

from __future__ import annotations
