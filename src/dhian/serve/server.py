"""Running the API with uvicorn: load a model dir, build the app, serve until SIGINT/SIGTERM.

Owns :func:`run_server`. Shutdown is graceful: on SIGTERM or
Ctrl-C uvicorn stops accepting connections, lets the requests in flight finish (up to
``timeout + 5`` seconds), then the app's lifespan stops the batcher after the queued work.
Imports: uvicorn (lazily: an optional dependency), :mod:`dhian.inference.load`, :mod:`dhian.serve.app`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dhian.inference.load import load_model, model_name
from dhian.models.model_dir import LoadedModel
from dhian.serve.app import ServeSettings, create_app

__all__ = ["run_server"]


def run_server(
    model_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: ServeSettings | None = None,
    device: str = "auto",
    log_level: str = "info",
    loaded: LoadedModel | None = None,
) -> None:
    """Serve ``model_dir`` (or an already ``loaded`` model) on ``host:port`` until stopped."""
    import uvicorn

    settings = settings or ServeSettings()
    model = loaded if loaded is not None else load_model(model_dir, device)
    app = create_app(model, settings, name=model_name(model_dir))
    config: Any = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=int(settings.timeout) + 5,
        limit_concurrency=settings.max_queue * 4 + 256,  # beyond: uvicorn's own 503
    )
    uvicorn.Server(config).run()
