"""Running the API with uvicorn: load a model dir, build the app, serve until SIGINT/SIGTERM.

Owns :func:`run_server`. Connections go through
:func:`dhian.serve.connections.guarded_protocol` (per-client and total connection caps, a
header read timeout) around uvicorn's own HTTP protocol class; idle keep-alive connections close
after 5 s. A port that is taken is one :class:`~dhian.errors.ConfigError` (checked by binding
before the model server starts), not uvicorn's log and exit 3. Shutdown is graceful: on SIGTERM or
Ctrl-C uvicorn stops accepting connections, lets the requests in flight finish (up to
``timeout + 5`` seconds), then the app's lifespan stops the batcher after the queued work.
Imports: uvicorn (lazily: an optional dependency), :mod:`dhian.inference.load`, :mod:`dhian.serve.app`,
:mod:`dhian.serve.connections`, :mod:`dhian.errors`, :mod:`dhian.nn.compute_thread` (loads and builds
the model on the thread that will run it).
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from typing import Any

from dhian.errors import ConfigError
from dhian.inference.load import load_model, model_name
from dhian.models.model_dir import LoadedModel
from dhian.nn.compute_thread import on_compute_thread
from dhian.serve.app import ServeSettings, create_app
from dhian.serve.connections import guarded_protocol

__all__ = ["run_server"]


def run_server(
    model_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: ServeSettings | None = None,
    device: str = "auto",
    log_level: str = "info",
    loaded: LoadedModel | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Serve ``model_dir`` (or an already ``loaded`` model) on ``host:port`` (or on ``sock``,
    from :func:`bind_socket`) until stopped."""
    import uvicorn
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    settings = settings or ServeSettings()
    sock = sock or bind_socket(host, port)
    # the model is loaded, built and run on one thread (dhian.nn.compute_thread says why)
    model = loaded if loaded is not None else on_compute_thread(load_model, model_dir, device)
    app = on_compute_thread(create_app, model, settings, name=model_name(model_dir))
    config: Any = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=guarded_protocol(AutoHTTPProtocol, settings.connection_limits()),
        timeout_keep_alive=5,
        timeout_graceful_shutdown=int(settings.timeout) + 5,
        limit_concurrency=settings.max_connections + settings.max_queue,  # uvicorn's own 503
    )
    uvicorn.Server(config).run(sockets=[sock])


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; a port in use or a bad host is one ConfigError."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host!r} is not an address of this machine ({exc})") from exc
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {host} is already in use; stop what listens there or "
                "choose another --port"
            ) from exc
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock
