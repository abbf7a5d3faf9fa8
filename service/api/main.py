"""The API router: every route group."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.routes import health, inference_protocol, initialize, models, tasks

api_router = APIRouter()
for module in (health, initialize, tasks, models, inference_protocol):
    api_router.include_router(module.router)
