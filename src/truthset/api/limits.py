"""Request limits: body sizes, enforced while the body streams in (chunked bodies included), and
how many requests one server process works on at once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLargeError(HTTPException):
    """The body passed its limit (HTTP 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


class BodyLimitMiddleware:
    """Refuse bodies over ``default_limit`` bytes, or ``upload_limit`` for upload routes.

    A declared ``Content-Length`` over the limit is refused before anything is read; otherwise
    the bytes are counted as they arrive and the read fails with 413 once past the limit.
    """

    def __init__(
        self, app: ASGIApp, *, default_limit: int, upload_limit: int,
        is_upload: Callable[[str, str], bool],
    ) -> None:
        self.app = app
        self.default_limit = default_limit
        self.upload_limit = upload_limit
        self.is_upload = is_upload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = (self.upload_limit if self.is_upload(scope["method"], scope["path"])
                 else self.default_limit)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > limit:
                    await _refuse(send, limit if declared >= 0 else None)
                    return
        seen = 0
        started = False
        exceeded = False
        refused = False

        async def counted_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    exceeded = True
                    raise BodyTooLargeError(limit)
            return message

        async def tracked_send(message: Message) -> None:
            # The framework may turn the read error into its own 4xx (FastAPI answers 400
            # "error parsing the body"): once the limit is passed, answer 413 instead.
            nonlocal started, refused
            if exceeded and not started:
                if not refused:
                    refused = True
                    await _refuse(send, limit)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLargeError:
            if started:
                raise
            if not refused:
                await _refuse(send, limit)


async def _refuse(send: Send, limit: int | None) -> None:
    detail = (f"request body larger than {limit} bytes" if limit is not None
              else "invalid Content-Length header")
    body: dict[str, Any] = {"error": "payload_too_large" if limit is not None else "bad_request",
                            "field": "body", "detail": detail}
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": 413 if limit is not None else 400,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": data})


class ConcurrencyLimitMiddleware:
    """At most ``limit`` requests of this process are inside the application at once.

    The routes are synchronous: each holds a worker thread and a database connection while it
    runs. Without a cap, a burst larger than the connection pool fills every thread with
    requests waiting for a connection, and the requests that hold one cannot get a thread to
    finish on: throughput collapses until the pool's wait times out. Requests over the cap wait
    here instead, in the event loop, holding neither; after ``queue_timeout`` seconds they are
    answered 503 with ``Retry-After``. ``exempt`` paths (the health check) are never held.
    """

    def __init__(self, app: ASGIApp, *, limit: int, queue_timeout: float,
                 exempt: frozenset[str] = frozenset({"/healthz"})) -> None:
        self.app = app
        self.limit = max(1, limit)
        self.queue_timeout = queue_timeout
        self.exempt = exempt
        self._gate: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._gate is None or self._gate[0] is not loop:
            self._gate = (loop, asyncio.Semaphore(self.limit))
        return self._gate[1]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        gate = self._semaphore()
        try:
            await asyncio.wait_for(gate.acquire(), self.queue_timeout)
        except TimeoutError:
            await _busy(send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            gate.release()


async def _busy(send: Send) -> None:
    data = json.dumps({"error": "overloaded", "field": None,
                       "detail": "the server is busy; retry shortly"}).encode()
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode()),
                            (b"retry-after", b"1")]})
    await send({"type": "http.response.body", "body": data})
