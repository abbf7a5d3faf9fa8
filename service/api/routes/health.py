"""Liveness, readiness and the Prometheus endpoint (no API key: probes and scrapers)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from service.api.deps import StateDep
from service.core.metrics import render

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="the process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="the checkpoint is loaded and warm",
    responses={503: {"description": "not ready yet (Retry-After)"}},
)
async def readyz(state: StateDep) -> JSONResponse:
    models = state.models
    if models.current is None:
        return JSONResponse(
            {
                "status": "loading" if models.load_error is None else "failed",
                "detail": models.load_error or "the checkpoint is still loading",
            },
            status_code=503,
            headers={"Retry-After": str(state.settings.retry_after_seconds)},
        )
    return JSONResponse({"status": "ready", "model_version": models.current.model_version})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics() -> Response:
    body, content_type = render()
    return Response(body, media_type=content_type)
