"""Draining on SIGTERM, so that a rollout or a scale-down drops no request.

What uvicorn does by itself on SIGTERM: it closes its listener at once (new connections are
refused), closes idle keep-alive connections, lets requests in flight finish (for ever unless
``--timeout-graceful-shutdown`` is given; then it cancels them), runs the lifespan shutdown
(here: pending Redis writes, closing Redis) and finally raises SIGTERM again, so the process
dies by the signal (exit status 143). With ``--workers N`` its supervisor forwards SIGTERM to
every worker (it polls for signals every 0.5 s) and waits for them.

What :class:`Drain` adds, in each worker process:

1. from the first SIGTERM, ``/readyz`` (and ``/v2/health/ready``) answer 503 ``draining`` with
   the reason, and responses carry ``Connection: close`` so keep-alive clients reconnect
   elsewhere;
2. the listener stays open ``drain_delay_seconds`` longer, still serving, for load balancers
   that follow readiness rather than endpoint removal (0: close at once, as uvicorn does);
3. then uvicorn's own graceful shutdown, bounded by ``drain_grace_seconds`` unless
   ``--timeout-graceful-shutdown`` was given;
4. the process exits 0: the stop was asked for and done.

A second SIGTERM skips what is left of the delay.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from http import HTTPStatus
from types import FrameType
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core.errors import error_response
from service.core.logging import LOGGER

CONNECTION_CLOSE = (b"connection", b"close")


class Drain:
    """The worker's draining state and its SIGTERM handler."""

    def __init__(self, delay_seconds: float, grace_seconds: float) -> None:
        self.delay_seconds = delay_seconds
        self.grace_seconds = grace_seconds
        self.since: float | None = None  # time.monotonic() of the first SIGTERM
        self._previous: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_handle: asyncio.TimerHandle | None = None
        self._stopped = False

    @property
    def draining(self) -> bool:
        return self.since is not None

    def detail(self) -> str:
        """Why the worker is not ready, for ``/readyz``."""
        elapsed = 0.0 if self.since is None else time.monotonic() - self.since
        return (
            f"draining: SIGTERM received {elapsed:.1f} s ago; requests in flight finish (up to "
            f"{self.grace_seconds:g} s once the listener closes, {self.delay_seconds:g} s after "
            "the signal), then the process exits"
        )

    def install(self) -> bool:
        """Takes SIGTERM over from the server; call in the main thread with the event loop
        running (the app's lifespan). False when that is not possible (another thread)."""
        if threading.current_thread() is not threading.main_thread():
            return False
        self._loop = asyncio.get_running_loop()
        self._previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._on_signal)
        return True

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Runs between two bytecodes of the event loop's thread: record, and hand over.
        first = self.since is None
        if first:
            self.since = time.monotonic()
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._begin if first else self._stop_server)

    def _begin(self) -> None:
        LOGGER.warning(
            "SIGTERM: draining; /readyz answers 503, the listener closes in %g s, requests in "
            "flight then get up to %g s",
            self.delay_seconds,
            self.grace_seconds,
        )
        assert self._loop is not None
        self._stop_handle = self._loop.call_later(self.delay_seconds, self._stop_server)

    def _stop_server(self) -> None:
        """Starts the server's graceful shutdown (once)."""
        if self._stop_handle is not None:
            self._stop_handle.cancel()
        if self._stopped:
            return
        self._stopped = True
        server = getattr(self._previous, "__self__", None)
        config = getattr(server, "config", None)
        if hasattr(server, "should_exit") and hasattr(config, "timeout_graceful_shutdown"):
            # uvicorn.Server: ask it to stop without recording a signal, so it returns (exit 0)
            # instead of raising SIGTERM again once it has shut down.
            if config.timeout_graceful_shutdown is None:
                config.timeout_graceful_shutdown = self.grace_seconds
            server.should_exit = True
        elif callable(self._previous):
            self._previous(signal.SIGTERM, None)
        else:  # no handler to hand over to: the default action
            signal.signal(signal.SIGTERM, self._previous or signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)


class DrainMiddleware:
    """While the worker drains: adds ``Connection: close`` to every response, and answers a
    request that the server cancels at the end of the grace period with 503 and
    ``Retry-After`` (a retry goes to another replica) instead of uvicorn's bare 500. The drain
    is read from ``app.state.service.drain``, set in the lifespan."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        service = getattr(scope["app"].state, "service", None)
        drain = getattr(service, "drain", None)
        started = False

        async def send_closing(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if drain is not None and drain.draining:
                    headers = [h for h in message.get("headers", []) if h[0] != b"connection"]
                    message = {**message, "headers": [*headers, CONNECTION_CLOSE]}
            await send(message)

        try:
            await self.app(scope, receive, send_closing)
        except asyncio.CancelledError:
            if drain is None or not drain.draining or started:
                raise
            # The server cancelled this request: the grace period is over. Answer, and end the
            # task here (it was cancelled precisely to end it).
            retry_after = str(getattr(service.settings, "retry_after_seconds", 1))
            response = error_response(
                HTTPStatus.SERVICE_UNAVAILABLE,
                "shutting_down",
                "this worker is shutting down and could not finish the request within its "
                "grace period (TAL_DRAIN_GRACE_SECONDS); retry, another replica will answer",
                {"Retry-After": retry_after, "Connection": "close"},
            )
            await response(scope, receive, send)
