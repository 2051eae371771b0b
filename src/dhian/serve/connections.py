"""Slow and greedy clients: bounded connections per client and in total, bounded read time.

Owns :class:`ConnectionLimits` (the numbers), :func:`guarded_protocol` (a subclass of uvicorn's
HTTP protocol class that closes a new connection beyond ``per_client`` open connections from
one address or ``total`` in all, answering ``429`` / ``503`` first, and closes a connection
whose request headers have not arrived within ``read_timeout`` seconds) and
:class:`ReadDeadline` (a pure ASGI middleware: a request body that has not fully arrived
``read_timeout`` seconds after the request started is answered ``408`` with
``Connection: close``, and the app sees a disconnect, so it stops reading and frees its slot).
Together they keep a slowloris client (headers + one body byte, many connections) from
locking everyone else out: its connections are capped, and each one is cut off in bounded
time. These are generic: they apply to every route, streaming ones included.
Imports: asyncio, json and starlette's ASGI types (the protocol base class is passed in, so
uvicorn is imported only by :mod:`dhian.serve.server`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import Counter
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ConnectionLimits", "ReadDeadline", "guarded_protocol"]


@dataclasses.dataclass(frozen=True)
class ConnectionLimits:
    """``per_client``: most open connections from one client address; ``total``: most open
    connections in all; ``read_timeout``: seconds a request's headers, and then its whole
    body, may take to arrive."""

    per_client: int = 64
    total: int = 512
    read_timeout: float = 10.0


def _raw_response(status: int, reason: str, message: str, retry_after: int) -> bytes:
    body = json.dumps({"error": message, "detail": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nretry-after: {retry_after}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


def guarded_protocol(base: type[asyncio.Protocol], limits: ConnectionLimits) -> type[Any]:
    """A subclass of uvicorn's HTTP protocol ``base`` (h11 or httptools) enforcing ``limits``
    per connection (see the module docstring); its counters are shared by its connections."""
    open_by_client: Counter[str] = Counter()
    state = {"open": 0}

    class Guarded(base):  # type: ignore[valid-type,misc]
        _dhian_host: str | None = None
        _dhian_timer: asyncio.TimerHandle | None = None
        _dhian_refused = False

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            peer = transport.get_extra_info("peername")
            host = str(peer[0]) if isinstance(peer, (tuple, list)) and peer else "?"
            if open_by_client[host] >= limits.per_client:
                self._refuse(
                    transport,
                    429,
                    "Too Many Requests",
                    f"{host} has {limits.per_client} connections open (the per-client limit); "
                    "close some and retry",
                )
                return
            if state["open"] >= limits.total:
                self._refuse(
                    transport,
                    503,
                    "Service Unavailable",
                    f"the server has {limits.total} connections open (its limit); retry shortly",
                )
                return
            self._dhian_host = host
            open_by_client[host] += 1
            state["open"] += 1
            loop = asyncio.get_running_loop()
            self._dhian_timer = loop.call_later(limits.read_timeout, self._headers_too_slow)

        def _refuse(self, transport: Any, status: int, reason: str, message: str) -> None:
            """Answer, stop writing, and close a second later; what the client sends meanwhile
            is read and dropped (closing with unread data would reset the connection and the
            client might never see the answer)."""
            self._dhian_refused = True
            transport.write(_raw_response(status, reason, message, 1))
            if transport.can_write_eof():
                transport.write_eof()
            asyncio.get_running_loop().call_later(1.0, transport.close)

        def data_received(self, data: bytes) -> None:
            if not self._dhian_refused:
                super().data_received(data)

        def _headers_too_slow(self) -> None:
            """Close a connection whose first request headers are still incomplete."""
            self._dhian_timer = None
            if getattr(self, "cycle", None) is None and not self.transport.is_closing():
                self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._dhian_timer is not None:
                self._dhian_timer.cancel()
                self._dhian_timer = None
            host, self._dhian_host = self._dhian_host, None
            if host is not None:
                open_by_client[host] -= 1
                if open_by_client[host] <= 0:
                    del open_by_client[host]
                state["open"] -= 1
            super().connection_lost(exc)

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"
    return Guarded


class ReadDeadline:
    """ASGI middleware: a request body not complete within ``seconds`` → 408 + close."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app, self.seconds = app, float(seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds
        body_done = False
        started = timed_out = False

        async def timed_receive() -> Message:
            nonlocal body_done, timed_out
            if timed_out:  # answered 408 already: to the app the client is gone
                return {"type": "http.disconnect"}
            if body_done:  # later receives (disconnect checks) are not bounded
                return await receive()
            try:
                async with asyncio.timeout(max(deadline - loop.time(), 0.0)):
                    message = await receive()
            except TimeoutError:
                timed_out = True
                if not started:
                    await self._answer_408(send)
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if timed_out:
                return  # the client was answered 408 already
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, timed_receive, guarded_send)

    async def _answer_408(self, send: Send) -> None:
        message = (
            f"the request body did not arrive within {self.seconds:g} s (--read-timeout); "
            "send it at once"
        )
        body = json.dumps({"error": message, "detail": message}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 408,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
