"""``GET /v1/tasks`` and ``POST /v1/tasks`` (register a task from images or a vector)."""

from __future__ import annotations

from typing import Any

import torch
from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from service.api.deps import ApiKeyDep, StateDep
from service.core.errors import Conflict, InvalidInput
from service.schemas import TASK_NAME_PATTERN, ErrorBody, TaskList, TaskRegistered, TaskVector
from service.uploads import images_from_npz
from tal.ancestry import NoAncestryError

router = APIRouter(prefix="/v1/tasks", tags=["tasks"], dependencies=[ApiKeyDep])
MULTIPART = "multipart/form-data"
MAX_FORM_FIELDS = 4
MAX_FORM_FILES = 1

UPLOAD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "file"],
    "properties": {
        "name": {"type": "string", "pattern": TASK_NAME_PATTERN},
        "file": {"type": "string", "format": "binary", "description": ".npz: images, labels"},
    },
}
REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": TaskVector.model_json_schema()},
            MULTIPART: {"schema": UPLOAD_SCHEMA},
        },
    }
}


@router.get("", response_model=TaskList, summary="tasks the serving checkpoint can use")
async def list_tasks(state: StateDep) -> TaskList:
    learngene = state.models.require().learngene
    rows = await state.tasks.list(learngene)
    return TaskList.model_validate(
        {
            "model_version": learngene.model_version,
            "task_dim": learngene.hypernet.config.encoder.task_dim,
            "tasks": rows,
        }
    )


async def _from_upload(request: Request, state: StateDep) -> tuple[str, torch.Tensor]:
    settings = state.settings
    learngene = state.models.require().learngene
    try:
        form = await request.form(max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FIELDS)
    except Exception as exc:  # malformed multipart from the client
        raise InvalidInput(f"body: cannot parse multipart form ({exc})") from exc
    name, upload = form.get("name"), form.get("file")
    if not isinstance(name, str):
        raise InvalidInput("name: a form field with the task name is required")
    if not isinstance(upload, UploadFile):
        raise InvalidInput("file: a .npz file with arrays 'images' and 'labels' is required")
    _check_name(name)
    if learngene.ancestry is None:
        raise Conflict(
            f"checkpoint {learngene.model_version} has no ancestry model, so it cannot embed a "
            "task from images; register the task with an embedding vector "
            '({"name": ..., "embedding": [...]}) instead'
        )
    data = await upload.read()
    ancestry = learngene.ancestry
    images = await run_in_threadpool(
        images_from_npz,
        data,
        ancestry.spec,
        settings.max_upload_unpacked_bytes,
        settings.max_task_images,
    )
    try:
        embedding = await run_in_threadpool(learngene.embed_task, images)
    except NoAncestryError as exc:
        raise Conflict(str(exc)) from exc
    except (ValueError, RuntimeError) as exc:  # images the ancestry model cannot take
        raise InvalidInput(f"file: cannot embed these images ({exc})") from exc
    return name, embedding


def _check_name(name: str) -> None:
    try:
        TaskVector(name=name, embedding=[0.0])
    except ValidationError as exc:
        raise InvalidInput(f"name: must match {TASK_NAME_PATTERN}") from exc


async def _from_json(request: Request) -> tuple[str, torch.Tensor]:
    body = await request.body()
    try:
        vector = TaskVector.model_validate_json(body)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInput(details) from exc
    return vector.name, torch.tensor(vector.embedding, dtype=torch.float32)


@router.post(
    "",
    response_model=TaskRegistered,
    status_code=201,
    summary="register a task from example images (.npz upload) or an embedding vector",
    openapi_extra=REQUEST_BODY,
    responses={status: {"model": ErrorBody} for status in (401, 403, 409, 413, 415, 422, 503)},
)
async def register_task(request: Request, state: StateDep) -> TaskRegistered:
    """JSON ``{"name", "embedding"}`` (``task_dim`` floats) or a multipart form with ``name``
    and ``file`` (an ``.npz`` holding ``images`` ``(N, H, W[, C])`` and ``labels`` ``(N,)``)."""
    loaded = state.models.require()
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(MULTIPART):
        name, embedding = await _from_upload(request, state)
    else:
        name, embedding = await _from_json(request)
    task_hash, shared = await state.tasks.register(name, embedding, loaded.learngene)
    return TaskRegistered(
        name=name, hash=task_hash, shared=shared, model_version=loaded.model_version
    )
