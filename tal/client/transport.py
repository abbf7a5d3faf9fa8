"""HTTP/1.1 to the service over the standard library's ``http.client``, one kept-alive
connection per thread, with bodies read straight into one buffer sized from
``Content-Length`` (or streamed to a file through one reused buffer).

Why not httpx: it reads 64 KiB at a time and copies each piece several times; a ViT-B blob
(346 MB) took 5-8x curl's time through it, while ``http.client.HTTPResponse.readinto`` into a
huge-page buffer took 1.2x (``experiments/blob_transfer.md``). Proxies from the environment
are not read; connect to the service directly.
"""

from __future__ import annotations

import http.client
import os
import socket
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import torch

from tal.blobs.memory import read_into_new_buffer

FILE_CHUNK_BYTES = 16 << 20  # one buffer, reused, when a body streams to a file
DEFAULT_PORTS = {"http": 80, "https": 443}
CONNECTION_ERRORS = (ConnectionError, http.client.HTTPException, socket.timeout, OSError)
# what a kept-alive connection that the server closed meanwhile raises before any answer
STALE_CONNECTION_ERRORS = (
    BrokenPipeError,
    ConnectionResetError,
    ConnectionAbortedError,
    http.client.RemoteDisconnected,
)


class ShortBody(ConnectionError):
    """The connection ended before ``Content-Length`` bytes of the body arrived."""


@dataclass(frozen=True)
class Response:
    """A finished exchange: status, headers (lower-case names) and the body: a flat ``uint8``
    CPU tensor holding it, or the path it was streamed to (``None`` for 304 / HEAD)."""

    status: int
    headers: dict[str, str]
    body: torch.Tensor | Path | None

    @property
    def data(self) -> memoryview:
        """The in-memory body, read-only, without a copy."""
        assert isinstance(self.body, torch.Tensor), "this body was streamed to a file"
        return memoryview(self.body.numpy()).toreadonly()


class Transport:
    """Connections to one service (``http`` or ``https`` base URL), one per thread."""

    def __init__(self, base_url: str, timeout: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"the server URL must be http(s)://host[:port], got {base_url!r}")
        self.scheme, self.host = parts.scheme, parts.hostname
        self.port = parts.port or DEFAULT_PORTS[parts.scheme]
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            kind = (
                http.client.HTTPSConnection
                if self.scheme == "https"
                else http.client.HTTPConnection
            )
            connection = kind(self.host, self.port, timeout=self.timeout)
            self._local.connection = connection
            with self._lock:
                self._all.append(connection)
        return connection

    def _drop(self) -> None:
        """Closes this thread's connection after an error (the next request reconnects)."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None
        self._local.used = False

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        out: Path | None = None,
    ) -> Response:
        """One request; the body of a 2xx answer goes to ``out`` when given (written to a
        temporary file renamed over it), else into memory. Raises an error of
        ``CONNECTION_ERRORS`` when the exchange fails (the connection is then dropped).

        A kept-alive connection the server has closed meanwhile (its idle timeout) fails before
        any answer arrives; the request is then sent once more on a fresh connection, as
        urllib3 and browsers do."""
        reused = getattr(self._local, "used", False)
        try:
            answer = self._send(method, path, body, headers)
        except STALE_CONNECTION_ERRORS:
            if not reused:
                raise
            answer = self._send(method, path, body, headers)
        try:
            names = {k.lower(): v for k, v in answer.getheaders()}
            if answer.status == http.client.NOT_MODIFIED or method == "HEAD":
                answer.read()
                return Response(answer.status, names, None)
            if out is not None and 200 <= answer.status < 300:
                return Response(answer.status, names, _to_file(answer, out))
            return Response(answer.status, names, _to_memory(answer))
        except BaseException:
            self._drop()
            raise

    def _send(
        self, method: str, path: str, body: bytes | None, headers: Mapping[str, str] | None
    ) -> http.client.HTTPResponse:
        """Sends a request and reads the answer's head on this thread's connection (dropped
        when that fails)."""
        connection = self._connection()
        try:
            connection.request(method, self.prefix + path, body=body, headers=dict(headers or {}))
            answer = connection.getresponse()
        except BaseException:
            self._drop()
            raise
        self._local.used = True
        return answer

    def close(self) -> None:
        with self._lock:
            for connection in self._all:
                connection.close()
            self._all.clear()
        self._local = threading.local()


def _to_memory(answer: http.client.HTTPResponse) -> torch.Tensor:
    """The whole body in one fresh buffer (``Content-Length`` sized, read straight into it)."""
    length = answer.length
    if length is None:  # no Content-Length (chunked): http.client joins the chunks
        data = answer.read()
        return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else _empty()
    if not length:
        return _empty()
    try:
        return read_into_new_buffer(answer.readinto, length)
    except EOFError as exc:
        raise ShortBody(f"the body ended early: {exc}") from exc


def _empty() -> torch.Tensor:
    return torch.empty(0, dtype=torch.uint8)


def _to_file(answer: http.client.HTTPResponse, out: Path) -> Path:
    """Streams the body to ``out`` through one reused buffer; atomic (temporary file, rename)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
    chunk = memoryview(bytearray(FILE_CHUNK_BYTES))
    try:
        with os.fdopen(fd, "wb") as handle:
            done, length = 0, answer.length
            while length is None or done < length:
                count = answer.readinto(chunk)
                if not count:
                    break
                handle.write(chunk[:count])
                done += count
            if length is not None and done < length:
                raise ShortBody(f"the body ended after {done} of {length} bytes")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
