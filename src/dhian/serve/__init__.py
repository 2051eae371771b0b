"""The HTTP API over :mod:`dhian.inference`: a thin face beside :mod:`dhian.cli`.

- :mod:`~dhian.serve.batching` — the worker thread that batches concurrent requests;
- :mod:`~dhian.serve.schemas` — request and response models; :mod:`~dhian.serve.limits` — body
  size and validation messages;
- :mod:`~dhian.serve.app`, :mod:`~dhian.serve.page`, :mod:`~dhian.serve.server` — the FastAPI
  app, its page at ``/`` and running it with uvicorn.

Every model operation (load, translate, classify, generate, fill-mask, attention) is a
:mod:`dhian.inference` function; FastAPI and uvicorn are imported only by these modules.
"""

from __future__ import annotations
