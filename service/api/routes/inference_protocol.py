"""The KServe / Triton Open Inference Protocol (v2) health and metadata paths, beside ours.

Probes and platform clients know these paths: ``/v2/health/live`` and ``/v2/health/ready`` mean
what ``/healthz`` and ``/readyz`` mean (200 when true; ready answers 503 with ``Retry-After``
when false, as ``/readyz`` does), ``/v2`` is the server's metadata, and
``/v2/models/{name}[/versions/{version}]`` (``/ready``) describe the checkpoints in the model
store, as ``/v1/models`` does. Inference itself stays ``POST /v1/initialize``: a blob of weights
is not a tensor batch, so no ``/infer`` path is offered.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import ApiKeyDep, StateDep
from service.api.routes.health import readiness
from service.core.errors import NotFound
from tal import __version__

router = APIRouter(prefix="/v2", tags=["inference protocol (v2)"])
SERVER_NAME = "tal-initialization-service"
PLATFORM = "tal_learngene"
# The request and the answer of POST /v1/initialize, as the protocol's tensor metadata.
INPUTS = [
    {"name": name, "datatype": "BYTES", "shape": [1]}
    for name in ("arch", "task", "format", "dtype", "head")
]
OUTPUTS = [{"name": "weights", "datatype": "BYTES", "shape": [1]}]
NOT_READY = {503: {"description": "not ready (Retry-After)"}}
NOT_SERVING_STATUS = 400  # the protocol's "false" for a model: a 4xx, as Triton answers
MODEL_NOT_READY = {
    **NOT_READY,
    NOT_SERVING_STATUS: {"description": "this model or version is not the one serving"},
}


@router.get("/health/live", summary="the process is alive (as /healthz)")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", summary="ready to serve (as /readyz)", responses=NOT_READY)
async def ready(state: StateDep) -> JSONResponse:
    is_ready, _ = readiness(state)
    return _ready_response(state, is_ready)


@router.get("", summary="server metadata")
async def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": __version__, "extensions": []}


def _versions(state: StateDep, name: str) -> list[str]:
    """The store's versions of ``name`` (404 when the store has none); the embedded untrained
    default counts as its own version."""
    available = state.models.available()
    current = state.models.current
    versions = list(available.get(name, []))
    if current is not None and current.name == name and current.version not in versions:
        versions.append(current.version)
    if not versions:
        raise NotFound(f"model {name!r} is not in the store; known: {sorted(available)}")
    return versions


def _metadata(state: StateDep, name: str, version: str | None) -> dict[str, Any]:
    versions = _versions(state, name)
    if version is not None and version not in versions:
        raise NotFound(f"model {name!r} has no version {version!r}; versions: {versions}")
    return {
        "name": name,
        "versions": [version] if version is not None else versions,
        "platform": PLATFORM,
        "inputs": INPUTS,
        "outputs": OUTPUTS,
    }


def _serving(state: StateDep, name: str, version: str | None) -> bool:
    current = state.models.current
    is_ready, _ = readiness(state)
    return (
        is_ready
        and current is not None
        and current.name == name
        and version in (None, current.version)
    )


def _ready_response(state: StateDep, is_ready: bool) -> JSONResponse:
    """200 ``{"ready": true}``; when false, 503 + ``Retry-After`` while the worker itself is not
    ready (as ``/readyz``), else the protocol's 4xx (a ready worker serving another model or
    version: nothing to retry)."""
    if is_ready:
        return JSONResponse({"ready": True})
    if readiness(state)[0]:
        return JSONResponse({"ready": False}, status_code=NOT_SERVING_STATUS)
    retry = {"Retry-After": str(state.settings.retry_after_seconds)}
    return JSONResponse({"ready": False}, status_code=503, headers=retry)


@router.get("/models/{name}", summary="model metadata", dependencies=[ApiKeyDep])
async def model_metadata(name: str, state: StateDep) -> dict[str, Any]:
    return _metadata(state, name, None)


@router.get("/models/{name}/versions/{version}", summary="model metadata", dependencies=[ApiKeyDep])
async def model_version_metadata(name: str, version: str, state: StateDep) -> dict[str, Any]:
    return _metadata(state, name, version)


@router.get(
    "/models/{name}/ready",
    summary="the model is the one serving, and ready",
    dependencies=[ApiKeyDep],
    responses=MODEL_NOT_READY,
)
async def model_ready(name: str, state: StateDep) -> JSONResponse:
    _versions(state, name)
    return _ready_response(state, _serving(state, name, None))


@router.get(
    "/models/{name}/versions/{version}/ready",
    summary="this version is the one serving, and ready",
    dependencies=[ApiKeyDep],
    responses=MODEL_NOT_READY,
)
async def model_version_ready(name: str, version: str, state: StateDep) -> JSONResponse:
    _metadata(state, name, version)
    return _ready_response(state, _serving(state, name, version))
