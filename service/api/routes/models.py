"""``GET /v1/models`` and ``POST /v1/models/reload`` (admin)."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import AdminKeyDep, ApiKeyDep, StateDep
from service.schemas import ErrorBody, ModelsResponse, ModelSummary, ReloadRequest

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=ModelsResponse, dependencies=[ApiKeyDep])
async def models(state: StateDep) -> ModelsResponse:
    """The serving checkpoint (manifest summary) and the versions in the store."""
    loaded = state.models.require()
    return ModelsResponse(
        loaded=ModelSummary(**loaded.summary()), available=state.models.available()
    )


@router.post(
    "/reload",
    response_model=ModelSummary,
    dependencies=[AdminKeyDep],
    responses={status: {"model": ErrorBody} for status in (401, 403, 404, 409, 422)},
)
async def reload(body: ReloadRequest, state: StateDep) -> ModelSummary:
    """Loads ``name/version`` beside the serving checkpoint and switches; on failure the old
    one keeps serving (404 missing, 409 corrupt or incompatible)."""
    loaded = await state.models.reload(body.name, body.version)
    state.tasks.model_name = loaded.name
    return ModelSummary(**loaded.summary())
