"""ASGI middlewares of the API: request ids with one access-log line, and the body limit.

`AccessLogMiddleware` takes the client's ``X-Request-Id`` (if it is a short token) or makes
one, puts it in ``scope["state"]["request_id"]`` for the handlers (completion ids reuse it,
so a log line and a response can be matched) and in the response headers, and logs one
line on the ``roleplay.server.access`` logger — ``<id> <method> <path> <status> <ms>`` —
as the last piece of the response is sent: for a stream that is after ``[DONE]``, so the
duration is the whole stream. Request bodies are never logged (they hold conversations).

`BodyLimitMiddleware` answers 413 before the app reads an oversized body.
"""
from __future__ import annotations

import json
import logging
import re
import time
from typing import Any, Callable

from .schemas import error_body, new_request_id

log = logging.getLogger("roleplay.server.access")
_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def show_access_log(stream: Any = None) -> None:
    """Print access lines to ``stream`` (stderr) unless a handler is already attached.

    `roleplay serve` runs uvicorn with its own access log off; this is the one the
    operator sees. Records still propagate, so an application's logging config (or
    pytest's ``caplog``) receives them too.
    """
    if not log.handlers:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s access %(message)s"))
        log.addHandler(handler)
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)


class AccessLogMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"x-request-id"), "")
        rid = given if _ID.match(given) else new_request_id()
        scope.setdefault("state", {})["request_id"] = rid
        start = time.perf_counter()
        status = 0
        logged = False

        def line() -> None:
            nonlocal logged
            if not logged:
                logged = True
                log.info("%s %s %s %d %.1fms", rid, scope.get("method", "-"), scope.get("path", "-"),
                         status, (time.perf_counter() - start) * 1000.0)

        async def wrapped(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"x-request-id", rid.encode("latin-1"))]}
            if message["type"] == "http.response.body" and not message.get("more_body"):
                line()  # before the last write, so the line exists once the client has the response
            await send(message)

        try:
            await self.app(scope, receive, wrapped)
        finally:
            if not logged:  # the client went away, or the app failed before answering
                status = status or 500
                line()


class BodyLimitMiddleware:
    """Answers 413 (OpenAI format) when a request body exceeds ``max_bytes``.

    Checks ``Content-Length`` up front; a streamed (chunked) body is read into memory up to
    the limit before the app sees it (bodies here are small JSON), then replayed.
    """

    def __init__(self, app: Any, *, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        for key, value in scope.get("headers", []):
            if key == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                return await self._reject(send)
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                return await self._reject(send)
            if not message.get("more_body"):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # later calls wait for http.disconnect

        await self.app(scope, replay, send)

    async def _reject(self, send: Callable) -> None:
        body = json.dumps(error_body(f"request body larger than {self.max_bytes} bytes",
                                     code="request_too_large")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
