"""Liveness, readiness and the Prometheus endpoint (no API key: probes and scrapers)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from service.api.deps import StateDep
from service.core.metrics import render
from service.state import ServiceState

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="the process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="the checkpoint is loaded and warm, and the worker is not draining",
    responses={503: {"description": "loading, failed or draining (Retry-After)"}},
)
async def readyz(state: StateDep) -> JSONResponse:
    is_ready, body = readiness(state)
    if not is_ready:
        headers = {"Retry-After": str(state.settings.retry_after_seconds)}
        return JSONResponse(body, status_code=503, headers=headers)
    return JSONResponse(body)


def readiness(state: ServiceState) -> tuple[bool, dict[str, str]]:
    """Whether the worker serves requests, and the body ``/readyz`` answers with."""
    if state.drain.draining:
        return False, {"status": "draining", "detail": state.drain.detail()}
    models = state.models
    if models.current is None:
        status = "loading" if models.load_error is None else "failed"
        return False, {
            "status": status,
            "detail": models.load_error or "the checkpoint is still loading",
        }
    return True, {"status": "ready", "model_version": models.current.model_version}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics() -> Response:
    body, content_type = render()
    return Response(body, media_type=content_type)
