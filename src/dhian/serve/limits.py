"""Request limits and error bodies of the HTTP API.

Owns :class:`ApiError` (status + one-line message → ``{"error", "detail"}`` JSON, or under
``/v1/`` OpenAI's ``{"error": {"message", "type", "param", "code"}}``: :meth:`ApiError.response_for`),
:class:`BodyLimit` (a pure ASGI middleware: a body over ``max_bytes`` is answered 413 before
the app parses it, whether it declares a Content-Length or is chunked) and
:func:`validation_message` (pydantic/FastAPI validation errors → one clear line: 400 for a
body that is not JSON or not sent as JSON, 422 for a missing, unknown or invalid field).
Imports: starlette and the standard library.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["OPENAI_PREFIX", "ApiError", "BodyLimit", "field_path", "validation_message"]

#: paths under this prefix answer errors in OpenAI's shape
OPENAI_PREFIX = "/v1/"


class ApiError(Exception):
    """An HTTP error with a one-line ``message`` (and optional ``detail`` and ``headers``);
    ``param`` (the request field at fault) and ``code`` (e.g. ``model_not_found``) fill the
    OpenAI-shaped body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        detail: Any = None,
        headers: Mapping[str, str] | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.detail = status, message, detail
        self.headers = dict(headers or {})
        self.param, self.code = param, code

    def openai_body(self) -> dict[str, Any]:
        """OpenAI's error object: ``{"error": {"message", "type", "param", "code"}}``."""
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {
            "error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        }

    def response_for(self, path: str) -> JSONResponse:
        """:meth:`response`, or the OpenAI-shaped body for a path under :data:`OPENAI_PREFIX`."""
        if path.startswith(OPENAI_PREFIX):
            return JSONResponse(self.openai_body(), status_code=self.status, headers=self.headers)
        return self.response()

    def response(self) -> JSONResponse:
        """The JSON response: ``{"error": message, "detail": detail or message}``."""
        body = {
            "error": self.message,
            "detail": self.detail if self.detail is not None else self.message,
        }
        return JSONResponse(body, status_code=self.status, headers=self.headers)


class BodyLimit:
    """ASGI middleware: answer 413 to a request whose body exceeds ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, int(max_bytes)

    def _too_large(self, size: str, path: str) -> JSONResponse:
        return ApiError(
            413,
            f"request body is {size} bytes; the limit is {self.max_bytes} "
            "(--max-chars × --max-batch): send shorter or fewer texts",
        ).response_for(path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        path = str(scope.get("path", ""))
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(declared.decode(), path)(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:  # read the whole (bounded) body, then replay it to the app
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(f"more than {self.max_bytes}", path)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


_TYPE_TAG = re.compile(r"^(str|int|float|bool|none|list\[.*\]|dict\[.*\])$")


def field_path(loc: Sequence[Any]) -> str:
    """``("body", "text", 0)`` → ``text[0]`` (union member tags like ``str`` dropped)."""
    parts = [str(p) for p in loc if p != "body" and not _TYPE_TAG.match(str(p))]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out


def validation_message(errors: Sequence[Mapping[str, Any]], path: str) -> tuple[int, str]:
    """(status, one line) for FastAPI's validation ``errors`` of a request to ``path``."""
    if not errors:
        return 422, f"invalid request to {path}"
    first = errors[0]
    kind = str(first.get("type", ""))
    where = field_path(first.get("loc", ()))
    if kind == "json_invalid":
        ctx = first.get("ctx") or {}
        why = f" ({ctx['error']})" if ctx.get("error") else ""
        return 400, (
            f"request body is not valid JSON{why}; send a JSON object with "
            "Content-Type: application/json, see /docs"
        )
    if kind == "missing" and not where:
        return 422, f"{path} needs a JSON body (an object); see /docs"
    if kind == "missing":
        return 422, f"missing field {where!r} in the body of {path}; see /docs"
    if kind == "extra_forbidden":
        return 422, f"unknown field {where!r} in the body of {path}; see /docs for its fields"
    if kind in ("model_attributes_type", "dict_type") and not where:
        if isinstance(first.get("input"), (bytes, bytearray)):  # not parsed: no JSON type
            return 400, (
                f"the body of {path} was not sent as JSON; send a JSON object with "
                "Content-Type: application/json (curl: -H 'Content-Type: application/json')"
            )
        return (
            422,
            f"the body of {path} must be a JSON object, received {_short(first.get('input'))}",
        )
    same = [e for e in errors if field_path(e.get("loc", ())) == where]  # union members
    why = " or ".join(dict.fromkeys(str(e.get("msg", "invalid")) for e in same))
    more = f" (and {len(errors) - len(same)} more)" if len(errors) > len(same) else ""
    return 422, f"field {where!r}: {why}{more}"


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."
