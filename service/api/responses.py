"""A bytes response sent in fixed-size memoryview slices.

One ``send`` of a 300 MB body makes the transport copy whatever the socket does not take at
once (up to the whole blob) into its buffer. Slices of ``CHUNK_BYTES`` keep that copy to one
chunk per connection, and uvicorn's flow control paces the writes. ``Content-Length`` is set,
so nothing is chunk-encoded.
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

CHUNK_BYTES = 1 << 20


class BlobResponse(Response):
    media_type = "application/octet-stream"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        view = memoryview(self.body)
        if not view.nbytes:
            await send({"type": "http.response.body", "body": b""})
            return
        for start in range(0, view.nbytes, CHUNK_BYTES):
            end = start + CHUNK_BYTES
            await send(
                {
                    "type": "http.response.body",
                    "body": view[start:end],
                    "more_body": end < view.nbytes,
                }
            )
