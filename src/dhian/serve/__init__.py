"""The HTTP API over :mod:`dhian.inference`: a thin face beside :mod:`dhian.cli`.

- :mod:`~dhian.serve.batching` — the worker thread that batches concurrent requests;
  :mod:`~dhian.serve.engine_worker` — the thread that continuously batches a LLaMA's ``/v1``
  generations;
- :mod:`~dhian.serve.schemas` — request and response models; :mod:`~dhian.serve.limits` — body
  size and validation messages;
- :mod:`~dhian.serve.app`, :mod:`~dhian.serve.page`, :mod:`~dhian.serve.server` — the FastAPI
  app, its page at ``/`` (with a chat box for chat models) and running it with uvicorn;
- :mod:`~dhian.serve.openai_api`, :mod:`~dhian.serve.openai_schemas` — the OpenAI-compatible
  ``/v1`` routes of a causal LM and their request bodies.

Every model operation (load, translate, classify, generate, chat, fill-mask, attention) is a
:mod:`dhian.inference` function; FastAPI and uvicorn are imported only by these modules.
"""

from __future__ import annotations
