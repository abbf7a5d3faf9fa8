"""ASGI middleware: request metrics, and the body-size cap (checked before anything is parsed)."""

from __future__ import annotations

import time
from collections.abc import Callable
from http import HTTPStatus

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core.errors import error_response
from service.core.metrics import INFLIGHT_REQUESTS, REQUEST_DURATION, REQUESTS

UNMATCHED_ROUTE = "unmatched"


class MetricsMiddleware:
    """``tal_requests_total``, ``tal_request_duration_seconds``, ``tal_inflight_requests``.

    The ``route`` label is the route template (``/v1/tasks``), never the raw path, so label
    cardinality stays bounded.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = HTTPStatus.INTERNAL_SERVER_ERROR.value
        start = time.perf_counter()

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        INFLIGHT_REQUESTS.inc()
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            INFLIGHT_REQUESTS.dec()
            route = scope.get("route")
            label = getattr(route, "path", UNMATCHED_ROUTE)
            labels = (label, scope["method"], str(status))
            REQUESTS.labels(*labels).inc()
            REQUEST_DURATION.labels(*labels).observe(time.perf_counter() - start)


class BodyLimitMiddleware:
    """Refuses bodies above a per-path limit with 413: by ``Content-Length`` without reading,
    and by counting while reading (chunked bodies), never buffering more than the limit.

    The body is read here once and replayed to the app.
    """

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await self._refuse(
                    scope, receive, send, HTTPStatus.BAD_REQUEST, "bad Content-Length"
                )
                return
            if declared > limit:
                await self._too_large(scope, receive, send, limit)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._too_large(scope, receive, send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        detail = f"request body exceeds this endpoint's limit of {limit:,} bytes"
        await self._refuse(scope, receive, send, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, detail)

    @staticmethod
    async def _refuse(
        scope: Scope, receive: Receive, send: Send, status: HTTPStatus, detail: str
    ) -> None:
        code = status.phrase.lower().replace(" ", "_")
        response = error_response(status, code, detail, {"Connection": "close"})
        await response(scope, receive, send)
