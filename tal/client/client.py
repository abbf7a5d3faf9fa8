"""The Python client of the TAL initialization service: one implementation with a sync face
(:class:`TALClient`) and an async face (:class:`AsyncTALClient`).

Both build requests, retry and parse answers in the same code: :class:`TALClient` does the
work, and :class:`AsyncTALClient` runs its calls in worker threads (``asyncio.to_thread``), so
the event loop never waits on a socket. Retries: 502/503/504 answers and connection errors,
with exponential backoff that honours ``Retry-After``; an error while a body is being read is
not retried. Blobs are read into one buffer sized from ``Content-Length`` and handed back as
tensors without a further copy (:meth:`TALClient.state_dict`), or streamed to a file; with a
cache folder, blobs are reused by ETag (``If-None-Match`` -> 304).

    >>> with TALClient("http://tal:8000", api_key="...") as client:
    ...     state, metadata = client.state_dict("vit_small_patch16_224", task="fashion_mnist")
    >>> model.load_state_dict(state, strict=True)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import torch

from tal.blobs.io import load_state_dict, read_file, write_atomic
from tal.blobs.reader import read_state_dict
from tal.client.transport import CONNECTION_ERRORS, Response, Transport
from tal.heads.choice import HEAD_AUTO

DEFAULT_TIMEOUT_SECONDS = 300.0
DEFAULT_RETRIES = 5
DEFAULT_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0
JITTER_FRACTION = 0.1
RETRY_STATUSES = frozenset({502, 503, 504})
FIRST_ERROR_STATUS = 400
NOT_MODIFIED = 304
CACHE_KEY_HEX_CHARS = 32
BLOB_SUFFIX = ".safetensors"
ETAG_SUFFIX = ".etag"
JSON_TYPE = "application/json"
UPLOAD_TYPES = {".npz": "application/octet-stream", ".jsonl": "application/jsonl",
                ".csv": "text/csv", ".tsv": "text/tab-separated-values"}  # fmt: skip
Result = TypeVar("Result")


class TALError(RuntimeError):
    """The service refused a request (``status`` and its ``detail``), or retries ran out
    (``status`` None)."""

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
    arch: object,
    task: str | None = None,
    format: str = "timm",
    dtype: str = "float32",
    head: str = HEAD_AUTO,
) -> dict[str, Any]:
    """The JSON body of ``POST /v1/initialize`` (``arch``: spec, spec dict, timm name or HF
    config). ``head`` is sent only when it is not the server's default, so servers that predate
    it still answer."""
    if hasattr(arch, "model_dump"):
        arch = arch.model_dump(mode="json")  # a tal.arch.specs spec object
    body = {"arch": arch, "task": task, "format": format, "dtype": dtype}
    if head != HEAD_AUTO:
        body["head"] = head
    return body


def _error(response: Response) -> TALError:
    text = bytes(response.data).decode("utf-8", "replace") if response.body is not None else ""
    try:
        detail = json.loads(text).get("detail", text)
    except (json.JSONDecodeError, AttributeError):
        detail = text
    return TALError(response.status, str(detail))


def _multipart(fields: dict[str, str], file_field: str, path: Path) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body with ``fields`` and the file at ``path``."""
    from urllib3 import encode_multipart_formdata

    kind = UPLOAD_TYPES.get(path.suffix.lower(), "application/octet-stream")
    parts: dict[str, Any] = {**fields, file_field: (path.name, path.read_bytes(), kind)}
    return encode_multipart_formdata(parts)


class _BlobCache:
    """``<folder>/<request hash>.safetensors`` and its ``.etag``."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

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


class TALClient:
    """Synchronous client; thread-safe (one connection per thread). Use as a context manager
    or call :meth:`close`."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        retry: RetryPolicy | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.retry = retry or RetryPolicy()
        self.cache = _BlobCache(Path(cache_dir) if cache_dir else None)
        self.transport = Transport(self.base_url, timeout)

    def __enter__(self) -> TALClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.transport.close()

    def _send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        out: Path | None = None,
    ) -> Response:
        """A successful (or 304) response after retries; raises TALError otherwise."""
        attempt = 0
        while True:
            try:
                response = self.transport.request(
                    method, path, body, {**self.headers, **(headers or {})}, out
                )
            except CONNECTION_ERRORS as exc:
                if attempt >= self.retry.retries:
                    raise TALError(None, f"{self.base_url}{path}: {exc!r}") from exc
                wait = self.retry.delay(attempt)
            else:
                if response.status in RETRY_STATUSES and attempt < self.retry.retries:
                    wait = self.retry.delay(attempt, response.headers.get("retry-after"))
                elif response.status >= FIRST_ERROR_STATUS:
                    raise _error(response)
                else:
                    return response
            time.sleep(wait)
            attempt += 1

    def _json(self, method: str, path: str, payload: object | None = None) -> Any:
        body = None if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": JSON_TYPE} if body is not None else {}
        return json.loads(bytes(self._send(method, path, body, headers).data))

    def _blob(
        self, body: dict[str, Any], out: str | Path | None
    ) -> tuple[torch.Tensor | Path, str | None]:
        """The blob of ``body`` (in memory, or the path it was streamed to), reusing the cache
        folder's copy when the server answers 304."""
        paths = self.cache.paths(body)
        etag = self.cache.etag(body)
        target = paths[0] if paths else (Path(out) if out else None)
        headers = {"Content-Type": JSON_TYPE, **({"If-None-Match": etag} if etag else {})}
        response = self._send("POST", "/v1/initialize", json.dumps(body).encode(), headers, target)
        if paths is None:
            assert response.body is not None
            return response.body, response.headers.get("etag")
        if response.status != NOT_MODIFIED and response.headers.get("etag"):
            write_atomic(paths[1], response.headers["etag"].encode())
        if out is None:
            return paths[0], response.headers.get("etag")
        write_atomic(Path(out), paths[0].read_bytes())
        return Path(out), response.headers.get("etag")

    def initialize(
        self,
        arch: object,
        task: str | None = None,
        format: str = "timm",
        dtype: str = "float32",
        out: str | Path | None = None,
        head: str = HEAD_AUTO,
    ) -> memoryview | Path:
        """The blob (a read-only memoryview of the received buffer), or the path ``out`` it was
        streamed to. ``head``: ``"auto"``, ``"predicted"`` or ``"discriminant"`` (fitted to a
        task registered from images)."""
        blob, _ = self._blob(initialize_body(arch, task, format, dtype, head), out)
        if isinstance(blob, Path):
            if out is None:  # the cached copy, read into memory
                return memoryview(read_file(blob).numpy()).toreadonly()
            return blob
        return memoryview(blob.numpy()).toreadonly()

    def state_dict(
        self,
        arch: object,
        task: str | None = None,
        format: str = "timm",
        dtype: str = "float32",
        out: str | Path | None = None,
        head: str = HEAD_AUTO,
    ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """``(tensors, metadata)``: views of the received buffer (no copy); tied tensors (GPT-2
        ``lm_head``) are restored. Arguments as :meth:`initialize`."""
        blob, _ = self._blob(initialize_body(arch, task, format, dtype, head), out)
        if isinstance(blob, Path):
            return load_state_dict(blob)
        return read_state_dict(blob)

    def load_into(self, model: Any, arch: object, **kwargs: Any) -> dict[str, str]:
        """Loads predicted weights into ``model`` (``strict=True``); returns the metadata."""
        tensors, metadata = self.state_dict(arch, **kwargs)
        model.load_state_dict(tensors, strict=True)
        return metadata

    def tasks(self) -> dict[str, Any]:
        return self._json("GET", "/v1/tasks")

    def register_task(
        self,
        name: str,
        embedding: list[float] | None = None,
        data: str | Path | None = None,
        ttl_seconds: int | None = None,
    ) -> dict[str, Any]:
        """From an embedding vector, or from a file of labelled examples (``data``: an
        ``.npz`` with ``images`` and ``labels``, or a ``.jsonl`` / ``.csv`` / ``.tsv`` of
        ``{text, label}``); ``ttl_seconds`` makes the registration expire (None: the server's
        default)."""
        if (embedding is None) == (data is None):
            raise ValueError("give exactly one of embedding or data")
        ttl = {} if ttl_seconds is None else {"ttl_seconds": ttl_seconds}
        if embedding is not None:
            return self._json("POST", "/v1/tasks", {"name": name, "embedding": embedding, **ttl})
        fields = {"name": name, **{k: str(v) for k, v in ttl.items()}}
        body, content_type = _multipart(fields, "file", Path(data))  # type: ignore[arg-type]
        response = self._send("POST", "/v1/tasks", body, {"Content-Type": content_type})
        return json.loads(bytes(response.data))

    def delete_task(self, name: str) -> None:
        """Deletes a registered task (its owner's key or an admin key)."""
        self._send("DELETE", f"/v1/tasks/{quote(name, safe='')}")

    def models(self) -> dict[str, Any]:
        return self._json("GET", "/v1/models")

    def reload(self, name: str, version: str = "latest") -> dict[str, Any]:
        return self._json("POST", "/v1/models/reload", {"name": name, "version": version})

    def wait_ready(self) -> dict[str, Any]:
        """Blocks (with the retry policy) until ``/readyz`` answers 200."""
        return self._json("GET", "/readyz")


class AsyncTALClient:
    """The async face of :class:`TALClient`: the same methods, awaited; each call runs the sync
    client's code in a worker thread (``async with`` or :meth:`aclose`)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        retry: RetryPolicy | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.sync = TALClient(base_url, api_key, timeout, retry, cache_dir)

    async def __aenter__(self) -> AsyncTALClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self.sync.close()

    async def _call(self, method: Callable[..., Result], *args: Any, **kwargs: Any) -> Result:
        return await asyncio.to_thread(partial(method, *args, **kwargs))

    async def initialize(self, arch: object, **kwargs: Any) -> memoryview | Path:
        return await self._call(self.sync.initialize, arch, **kwargs)

    async def state_dict(
        self, arch: object, **kwargs: Any
    ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        return await self._call(self.sync.state_dict, arch, **kwargs)

    async def load_into(self, model: Any, arch: object, **kwargs: Any) -> dict[str, str]:
        return await self._call(self.sync.load_into, model, arch, **kwargs)

    async def tasks(self) -> dict[str, Any]:
        return await self._call(self.sync.tasks)

    async def register_task(
        self,
        name: str,
        embedding: list[float] | None = None,
        data: str | Path | None = None,
        ttl_seconds: int | None = None,
    ) -> dict[str, Any]:
        return await self._call(self.sync.register_task, name, embedding, data, ttl_seconds)

    async def delete_task(self, name: str) -> None:
        await self._call(self.sync.delete_task, name)

    async def models(self) -> dict[str, Any]:
        return await self._call(self.sync.models)

    async def reload(self, name: str, version: str = "latest") -> dict[str, Any]:
        return await self._call(self.sync.reload, name, version)

    async def wait_ready(self) -> dict[str, Any]:
        return await self._call(self.sync.wait_ready)
