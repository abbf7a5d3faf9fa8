"""Client for the TAL initialization service (httpx): sync :class:`TALClient` and
:class:`AsyncTALClient`.

Both retry 503 answers and connection errors with exponential backoff (honouring
``Retry-After``), reuse blobs by ETag from a local cache folder (``If-None-Match`` -> 304), and
stream large blobs straight to a file.

    >>> client = TALClient("http://tal:8000", api_key="...")
    >>> state, metadata = client.state_dict("vit_small_patch16_224", task="fashion_mnist")
    >>> model.load_state_dict(state, strict=True)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tal.blobs import io
from tal.heads.choice import HEAD_AUTO

DEFAULT_TIMEOUT_SECONDS = 300.0
DEFAULT_RETRIES = 5
DEFAULT_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0
JITTER_FRACTION = 0.1
RETRY_STATUSES = frozenset({502, 503, 504})
STREAM_CHUNK_BYTES = 1 << 20
CACHE_KEY_HEX_CHARS = 32
NOT_MODIFIED = 304
BLOB_SUFFIX = ".safetensors"
ETAG_SUFFIX = ".etag"
RETRYABLE_ERRORS = (httpx.TransportError,)


class TALError(RuntimeError):
    """The service refused a request (``status`` and its ``detail``), or retries ran out."""

    def __init__(self, status: int | None, detail: str) -> None:
        super().__init__(f"{status}: {detail}" if status else detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: ``backoff * 2**attempt`` capped at ``max_backoff``, or the server's
    ``Retry-After`` when it says more."""

    retries: int = DEFAULT_RETRIES
    backoff: float = DEFAULT_BACKOFF_SECONDS
    max_backoff: float = MAX_BACKOFF_SECONDS

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        wait = min(self.max_backoff, self.backoff * 2**attempt)
        if retry_after:
            with suppress(ValueError):
                wait = max(wait, min(self.max_backoff, float(retry_after)))
        return wait * (1 + JITTER_FRACTION * random.random())


def initialize_body(
    arch: object, task: str | None, format: str, dtype: str, head: str = HEAD_AUTO
) -> dict[str, Any]:
    """The JSON body of ``POST /v1/initialize`` (``arch``: spec dict, timm name or HF config).
    ``head`` is sent only when it is not the server's default, so servers that predate it
    still answer."""
    if hasattr(arch, "model_dump"):
        arch = arch.model_dump(mode="json")  # a tal.arch.specs spec object
    body = {"arch": arch, "task": task, "format": format, "dtype": dtype}
    if head != HEAD_AUTO:
        body["head"] = head
    return body


def _error(response: httpx.Response) -> TALError:
    try:
        detail = response.json().get("detail", response.text)
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
        detail = response.text
    return TALError(response.status_code, str(detail))


class _BlobCache:
    """``<dir>/<request hash>.safetensors`` and its ``.etag``."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    def paths(self, body: dict[str, Any]) -> tuple[Path, Path] | None:
        if self.folder is None:
            return None
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        name = hashlib.sha256(text.encode()).hexdigest()[:CACHE_KEY_HEX_CHARS]
        return self.folder / f"{name}{BLOB_SUFFIX}", self.folder / f"{name}{ETAG_SUFFIX}"

    def etag(self, body: dict[str, Any]) -> str | None:
        paths = self.paths(body)
        if paths and paths[0].is_file() and paths[1].is_file():
            return paths[1].read_text().strip()
        return None


class _Sink:
    """Where a blob goes: a temporary file renamed over ``out`` at the end, or memory."""

    def __init__(self, out: Path | None) -> None:
        self.out = out
        self.chunks: list[bytes] = []
        self._handle = None
        self._tmp: str | None = None
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            fd, self._tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
            self._handle = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        if self._handle is not None:
            self._handle.write(chunk)
        else:
            self.chunks.append(chunk)

    def finish(self) -> bytes | Path:
        if self._handle is None:
            return b"".join(self.chunks)
        self._handle.close()
        assert self.out is not None and self._tmp is not None
        os.replace(self._tmp, self.out)
        return self.out

    def abort(self) -> None:
        if self._handle is not None:
            self._handle.close()
            Path(self._tmp or "").unlink(missing_ok=True)
        self.chunks.clear()


class _Common:
    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        timeout: float,
        retry: RetryPolicy | None,
        cache_dir: str | Path | None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.cache = _BlobCache(Path(cache_dir) if cache_dir else None)
        if self.cache.folder:
            self.cache.folder.mkdir(parents=True, exist_ok=True)

    def _blob_out(self, body: dict[str, Any], out: str | Path | None) -> Path | None:
        """Where to stream: the cache file when caching, else ``out`` (None = memory)."""
        paths = self.cache.paths(body)
        if paths:
            return paths[0]
        return Path(out) if out else None

    def _finish_blob(
        self, body: dict[str, Any], result: bytes | Path, etag: str | None, out: str | Path | None
    ) -> bytes | Path:
        paths = self.cache.paths(body)
        if paths and etag:
            io.write_atomic(paths[1], etag.encode())
        if paths:  # the blob is in the cache; copy it where asked
            cached = paths[0]
            if out is None:
                return cached.read_bytes()
            io.write_atomic(Path(out), cached.read_bytes())
            return Path(out)
        return result


class TALClient(_Common):
    """Synchronous client. Use as a context manager or call :meth:`close`."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        retry: RetryPolicy | None = None,
        cache_dir: str | Path | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout, retry, cache_dir)
        self.http = httpx.Client(
            base_url=self.base_url, headers=self.headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> TALClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    @contextmanager
    def _send(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed response after retries; raises TALError for error answers."""
        attempt = 0
        yielded = False
        while True:
            try:
                with self.http.stream(method, path, **kwargs) as response:
                    if response.status_code in RETRY_STATUSES and attempt < self.retry.retries:
                        wait = self.retry.delay(attempt, response.headers.get("retry-after"))
                    elif response.status_code >= httpx.codes.BAD_REQUEST:
                        response.read()
                        raise _error(response)
                    else:
                        yielded = True  # errors while the caller reads are not retried
                        yield response
                        return
            except RETRYABLE_ERRORS as exc:
                if yielded or attempt >= self.retry.retries:
                    raise TALError(None, f"{self.base_url}{path}: {exc!r}") from exc
                wait = self.retry.delay(attempt)
            time.sleep(wait)
            attempt += 1

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        with self._send(method, path, **kwargs) as response:
            response.read()
            return response.json()

    def initialize(
        self,
        arch: object,
        task: str | None = None,
        format: str = "timm",
        dtype: str = "float32",
        out: str | Path | None = None,
        head: str = HEAD_AUTO,
    ) -> bytes | Path:
        """The blob (bytes), or the path ``out`` it was streamed to. ``head``: ``"auto"``,
        ``"predicted"`` or ``"discriminant"`` (fitted to a task registered from images)."""
        body = initialize_body(arch, task, format, dtype, head)
        headers = {}
        etag = self.cache.etag(body)
        if etag:
            headers["If-None-Match"] = etag
        target = self._blob_out(body, out)
        with self._send("POST", "/v1/initialize", json=body, headers=headers) as response:
            if response.status_code == NOT_MODIFIED:
                return self._finish_blob(body, b"", None, out)
            sink = _Sink(target)
            try:
                for chunk in response.iter_bytes(STREAM_CHUNK_BYTES):
                    sink.write(chunk)
            except BaseException:
                sink.abort()
                raise
            result = sink.finish()
            return self._finish_blob(body, result, response.headers.get("etag"), out)

    def state_dict(self, arch: object, **kwargs: Any) -> tuple[dict, dict[str, str]]:
        """``(tensors, metadata)``; tied tensors (GPT-2 ``lm_head``) are restored."""
        blob = self.initialize(arch, **kwargs)
        return io.load_state_dict(blob if isinstance(blob, bytes) else Path(blob))

    def load_into(self, model: Any, arch: object, **kwargs: Any) -> dict[str, str]:
        """Loads predicted weights into ``model`` (``strict=True``); returns the metadata."""
        tensors, metadata = self.state_dict(arch, **kwargs)
        model.load_state_dict(tensors, strict=True)
        return metadata

    def tasks(self) -> dict[str, Any]:
        return self._json("GET", "/v1/tasks")

    def register_task(
        self, name: str, embedding: list[float] | None = None, npz: str | Path | None = None
    ) -> dict[str, Any]:
        """From an embedding vector, or from an ``.npz`` with ``images`` and ``labels``."""
        if (embedding is None) == (npz is None):
            raise ValueError("give exactly one of embedding or npz")
        if embedding is not None:
            return self._json("POST", "/v1/tasks", json={"name": name, "embedding": embedding})
        data = Path(npz).read_bytes()  # type: ignore[arg-type]
        files = {"file": (Path(npz).name, data, "application/octet-stream")}  # type: ignore[arg-type]
        return self._json("POST", "/v1/tasks", data={"name": name}, files=files)

    def models(self) -> dict[str, Any]:
        return self._json("GET", "/v1/models")

    def reload(self, name: str, version: str = "latest") -> dict[str, Any]:
        return self._json("POST", "/v1/models/reload", json={"name": name, "version": version})

    def wait_ready(self) -> dict[str, Any]:
        """Blocks (with the retry policy) until ``/readyz`` answers 200."""
        return self._json("GET", "/readyz")


class AsyncTALClient(_Common):
    """The asynchronous twin of :class:`TALClient` (``async with``)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        retry: RetryPolicy | None = None,
        cache_dir: str | Path | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout, retry, cache_dir)
        self.http = httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers, timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncTALClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _request(
        self, method: str, path: str, out: Path | None = None, **kwargs: Any
    ) -> tuple[httpx.Response, bytes | Path]:
        """Response and body (streamed to ``out`` when given), after retries."""
        attempt = 0
        while True:
            try:
                async with self.http.stream(method, path, **kwargs) as response:
                    if response.status_code in RETRY_STATUSES and attempt < self.retry.retries:
                        wait = self.retry.delay(attempt, response.headers.get("retry-after"))
                    elif response.status_code >= httpx.codes.BAD_REQUEST:
                        await response.aread()
                        raise _error(response)
                    else:
                        sink = _Sink(out if response.status_code != NOT_MODIFIED else None)
                        try:
                            async for chunk in response.aiter_bytes(STREAM_CHUNK_BYTES):
                                sink.write(chunk)
                        except BaseException:
                            sink.abort()
                            raise
                        return response, sink.finish()
            except RETRYABLE_ERRORS as exc:
                if attempt >= self.retry.retries:
                    raise TALError(None, f"{self.base_url}{path}: {exc!r}") from exc
                wait = self.retry.delay(attempt)
            await asyncio.sleep(wait)
            attempt += 1

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        _, body = await self._request(method, path, **kwargs)
        assert isinstance(body, bytes)
        return json.loads(body)

    async def initialize(
        self,
        arch: object,
        task: str | None = None,
        format: str = "timm",
        dtype: str = "float32",
        out: str | Path | None = None,
        head: str = HEAD_AUTO,
    ) -> bytes | Path:
        """The blob (bytes), or the path ``out`` it was streamed to. ``head``: ``"auto"``,
        ``"predicted"`` or ``"discriminant"`` (fitted to a task registered from images)."""
        body = initialize_body(arch, task, format, dtype, head)
        etag = self.cache.etag(body)
        headers = {"If-None-Match": etag} if etag else {}
        response, result = await self._request(
            "POST", "/v1/initialize", self._blob_out(body, out), json=body, headers=headers
        )
        if response.status_code == NOT_MODIFIED:
            return self._finish_blob(body, b"", None, out)
        return self._finish_blob(body, result, response.headers.get("etag"), out)

    async def state_dict(self, arch: object, **kwargs: Any) -> tuple[dict, dict[str, str]]:
        blob = await self.initialize(arch, **kwargs)
        return io.load_state_dict(blob if isinstance(blob, bytes) else Path(blob))

    async def load_into(self, model: Any, arch: object, **kwargs: Any) -> dict[str, str]:
        """Loads predicted weights into ``model`` (``strict=True``); returns the metadata."""
        tensors, metadata = await self.state_dict(arch, **kwargs)
        model.load_state_dict(tensors, strict=True)
        return metadata

    async def tasks(self) -> dict[str, Any]:
        return await self._json("GET", "/v1/tasks")

    async def models(self) -> dict[str, Any]:
        return await self._json("GET", "/v1/models")

    async def register_task(self, name: str, embedding: list[float]) -> dict[str, Any]:
        return await self._json("POST", "/v1/tasks", json={"name": name, "embedding": embedding})

    async def reload(self, name: str, version: str = "latest") -> dict[str, Any]:
        return await self._json(
            "POST", "/v1/models/reload", json={"name": name, "version": version}
        )

    async def wait_ready(self) -> dict[str, Any]:
        return await self._json("GET", "/readyz")
