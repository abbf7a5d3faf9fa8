"""The FastAPI application: ``uvicorn --factory service.main:create_app`` (``tal serve``)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import torch
from fastapi import FastAPI

from service.api.main import api_router
from service.core.config import Settings, get_settings
from service.core.cpus import torch_threads
from service.core.draining import DrainMiddleware
from service.core.errors import install_handlers
from service.core.metrics import mark_process_dead
from service.core.middleware import BodyLimitMiddleware, MetricsMiddleware
from service.state import ServiceState
from tal import __version__

UPLOAD_PATHS = ("/v1/tasks",)


def _configure_torch(settings: Settings) -> None:
    """Intra-op threads: ``TAL_TORCH_THREADS``, else this worker's share of the usable cores."""
    torch.set_num_threads(torch_threads(settings.torch_threads, settings.workers))


def create_app(settings: Settings | None = None) -> FastAPI:
    """A worker: loads the checkpoint in the background; ``/readyz`` is 503 until it is warm."""
    settings = settings or get_settings()
    _configure_torch(settings)
    logging.basicConfig(level=logging.INFO)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = ServiceState.build(settings)
        app.state.service = state
        state.drain.install()  # SIGTERM: readiness 503, then uvicorn's graceful shutdown
        loader = asyncio.create_task(state.models.initial_load())
        try:
            yield
        finally:
            loader.cancel()
            with suppress(asyncio.CancelledError):
                await loader
            await state.close()
            mark_process_dead(os.getpid())

    app = FastAPI(
        title="TAL initialization service",
        version=__version__,
        description="Task-aware predicted initial weights for ViT and GPT-2, as safetensors.",
        lifespan=lifespan,
    )
    install_handlers(app)

    def body_limit(path: str) -> int:
        return settings.max_upload_bytes if path in UPLOAD_PATHS else settings.max_body_bytes

    app.add_middleware(BodyLimitMiddleware, limit_for=body_limit)
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(DrainMiddleware)
    app.include_router(api_router)
    return app
