"""Admission control in front of the gateway's routes: body size, a bounded queue, a fast 429.

A pure ASGI middleware, so it works before FastAPI parses anything and without taking a worker thread:

- a request body larger than ``max_body_bytes`` gets 413 (from ``Content-Length`` at once, or while the
  body is read when it is chunked), before any JSON parsing;
- chat completions are admitted at most ``max_concurrent_requests`` at a time; up to ``queue_size`` more
  wait their turn on the event loop (no thread held while waiting); the next one gets 429 with
  ``Retry-After`` at once, so a burst never piles up threads or memory;
- every chat request that ends without a log row of its own (refused here, or rejected by validation or
  authentication) is handed to ``on_unlogged`` so it still ends as exactly one row in the log.

The handler marks a request as logged by setting ``request.state.homegrown_logged = True``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

LOGGED_FLAG = "homegrown_logged"
CHAT_PATH = "/v1/chat/completions"

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BodyTooLarge(Exception):
    pass


def _error_body(message: str, type_: str, code: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}}).encode()


class Unlogged:
    """What the middleware knows of a chat request that the handler did not log."""

    def __init__(self, scope: Scope, status: int, body: bytes, started: float):
        self.headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        self.status = status
        self.body = body
        self.latency_ms = round((time.perf_counter() - started) * 1000, 1)

    def error_message(self) -> str:
        try:
            return str(json.loads(self.body)["error"]["message"])[:2000]
        except (ValueError, KeyError, TypeError):
            return self.body[:2000].decode("utf-8", "replace")


class AdmissionMiddleware:
    """Body-size limit for every route; bounded admission and a log row for every chat request."""

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        *,
        max_body_bytes: int,
        max_concurrent: int,
        queue_size: int,
        retry_after_s: int,
        on_unlogged: Callable[[Unlogged], Awaitable[None]] | None = None,
    ):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.capacity = max_concurrent + queue_size
        self.retry_after_s = retry_after_s
        self.on_unlogged = on_unlogged
        self._working = asyncio.Semaphore(max_concurrent)
        self.admitted = 0  # at work or waiting
        self.refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        if "app" in scope:
            scope["app"].state.admission = self  # for /health
        is_chat = scope["path"] == CHAT_PATH
        scope.setdefault("state", {})
        status = 0
        error_chunks: list[bytes] = []

        async def watching_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and status >= 400 and sum(map(len, error_chunks)) < 8192:
                error_chunks.append(message.get("body", b""))
            await send(message)

        try:
            if is_chat and self.admitted >= self.capacity:
                self.refused += 1
                await self._reply(watching_send, 429, "the gateway is at capacity; retry after a moment",
                                  "rate_limit_error", "queue_full", {"retry-after": str(self.retry_after_s)})
                return
            try:
                body = await self._read_body(scope, receive)
            except BodyTooLarge:
                await self._reply(watching_send, 413, f"the request body is larger than {self.max_body_bytes} bytes",
                                  "invalid_request_error", "body_too_large")
                return
            replay = _replayer(body, receive)
            if not is_chat:
                await self.app(scope, replay, watching_send)
                return
            self.admitted += 1
            try:
                async with self._working:
                    await self.app(scope, replay, watching_send)
            finally:
                self.admitted -= 1
        finally:
            if is_chat and not scope["state"].get(LOGGED_FLAG) and self.on_unlogged is not None:
                await self.on_unlogged(Unlogged(scope, status or 499, b"".join(error_chunks), started))

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        headers = dict(scope.get("headers", []))
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise BodyTooLarge
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    @staticmethod
    async def _reply(send: Send, status: int, message: str, type_: str, code: str,
                     headers: dict[str, str] | None = None) -> None:
        body = _error_body(message, type_, code)
        raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        raw_headers += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": body})


def _replayer(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the already-read body to the app, then passes the client's later messages
    (the disconnect that a streaming response listens for) through."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
