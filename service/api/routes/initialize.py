"""``POST /v1/initialize``: a safetensors blob of predicted initial weights."""

from __future__ import annotations

import functools
import time
from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, Header, Response
from starlette.concurrency import run_in_threadpool

from service.api.deps import ApiKeyDep, StateDep
from service.api.responses import BlobResponse
from service.core.errors import InvalidInput, NotFound, TooLarge
from service.core.metrics import BLOB_BYTES, INITIALIZE_DURATION
from service.predictor import validate_request
from service.schemas import ErrorBody, InitializeRequest
from tal.heads.choice import HeadUnavailable, choose_head
from tal.tasks.errors import UnknownTaskError

router = APIRouter(tags=["initialize"], dependencies=[ApiKeyDep])
OCTET_STREAM = "application/octet-stream"
ERRORS = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        401: "API key missing",
        403: "API key not accepted",
        404: "unknown task (the known ones are listed)",
        413: "spec above the parameter limit, body too large, or a head fit above its limit",
        409: "the task's examples were dropped (no Redis, over max_local_task_supports)",
        422: "invalid spec or body (names the field)",
        503: "not ready, busy, out of GPU memory, or the task's examples unreadable (Retry-After)",
    }.items()
}
RESPONSES = {
    200: {
        "content": {OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}},
        "description": "safetensors blob with metadata (tal.spec, tal.task, tal.model_version, "
        "tal.format, tal.dtype, tal.seed, tal.head; tal.input_norm with a discriminant head)",
    },
    304: {"description": "If-None-Match matched the blob's ETag"},
    **ERRORS,
}


def _matches(if_none_match: str | None, etag: str | None) -> bool:
    if not if_none_match or not etag:
        return False
    candidates = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return etag.removeprefix("W/") in candidates or "*" in candidates  # weak comparison


async def initialize(
    body: InitializeRequest,
    state: StateDep,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Predicted initial weights of ``arch`` for ``task``, as a safetensors blob."""
    start = time.perf_counter()
    loaded = state.models.require()
    learngene = loaded.learngene
    request = await run_in_threadpool(
        validate_request,
        body.arch,
        body.task,
        body.format,
        body.dtype,
        state.settings.max_params,
    )
    try:
        task = await state.tasks.resolve(body.task, learngene)
    except UnknownTaskError as exc:
        raise NotFound(str(exc)) from exc
    task.check_family(request.spec)
    try:
        head = choose_head(
            body.head,
            body.task,
            request.spec,
            task.support,
            state.settings.max_head_fit_gflop,
            body.format,
        )
    except HeadUnavailable as exc:
        raise (TooLarge if exc.too_costly else InvalidInput)(exc.reason) from exc
    request = replace(request, head=head)
    predictor = state.predictor
    key = predictor.key(learngene.model_version, request, task)
    headers = {"X-TAL-Model-Version": learngene.model_version, "X-TAL-Head": request.head}
    if if_none_match:
        etag = await state.cache.etag(key)
        if _matches(if_none_match, etag):
            return Response(status_code=304, headers={**headers, "ETag": etag or ""})
    load_support = None
    if request.fits_head:
        load_support = functools.partial(state.tasks.support_examples, task)
    entry, tier = await predictor.get(key, learngene, request, task.embedding, load_support)
    outcome = "hit" if tier else "miss"
    headers |= {"ETag": entry.etag, "X-Cache": outcome, "X-Cache-Tier": tier or "none"}
    if _matches(if_none_match, entry.etag):
        return Response(status_code=304, headers=headers)
    BLOB_BYTES.labels(request.family).observe(len(entry.blob))
    INITIALIZE_DURATION.labels(request.family, request.format, outcome).observe(
        time.perf_counter() - start
    )
    return BlobResponse(entry.blob, headers=headers)


for path, include in (("/v1/initialize", True), ("/initialize", False)):
    router.add_api_route(
        path,
        initialize,
        methods=["POST"],
        response_class=Response,
        responses=RESPONSES,
        summary="predict initial weights",
        include_in_schema=include,
        operation_id="initialize" if include else "initialize_unversioned",
    )
