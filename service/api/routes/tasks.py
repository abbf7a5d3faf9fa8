"""``GET /v1/tasks`` and ``POST /v1/tasks`` (register a task from images or a vector).

A task registered from labelled images is embedded from at most ``task_support_images`` of
them, balanced over classes, and keeps those images so that ``POST /v1/initialize`` can fit a
classifier head to them (``head``: ``auto`` or ``discriminant``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from service.api.deps import ApiKeyDep, StateDep
from service.core.errors import Conflict, InvalidInput
from service.schemas import TASK_NAME_PATTERN, ErrorBody, TaskList, TaskRegistered, TaskVector
from service.uploads import task_data_from_npz
from tal.checkpoints.ancestry import NoAncestryError
from tal.heads.support import missing_classes, task_support
from tal.tasks import TaskData

router = APIRouter(prefix="/v1/tasks", tags=["tasks"], dependencies=[ApiKeyDep])
MULTIPART = "multipart/form-data"
MAX_FORM_FIELDS = 4
MAX_FORM_FILES = 1
MIN_HEAD_CLASSES = 2  # a discriminant head separates at least two classes
NAMED_MISSING_CLASSES = 10  # a note names at most this many classes without an image

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


@dataclass(frozen=True)
class Registration:
    """A task to register: its embedding ``(task_dim,)``, its classes (0 from a vector) and
    the labelled images kept to fit heads to (None, with the reason in ``note`` when images
    were sent but cannot fit one)."""

    name: str
    embedding: torch.Tensor
    classes: int
    support: TaskData | None
    note: str | None


def _head_support(support: TaskData) -> tuple[TaskData | None, str | None]:
    """``support`` when a discriminant head can be fitted to it, else None and why."""
    if support.num_classes < MIN_HEAD_CLASSES:
        return None, f"a head needs at least {MIN_HEAD_CLASSES} classes"
    missing = missing_classes(support)
    if missing:
        return None, (
            f"classes {missing[:NAMED_MISSING_CLASSES]} have no image among the first "
            "images read; heads stay predicted (shuffle the upload to fit heads)"
        )
    return support, None


async def _from_upload(request: Request, state: StateDep) -> Registration:
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
    task = await run_in_threadpool(
        task_data_from_npz,
        data,
        ancestry.spec,
        settings.max_upload_unpacked_bytes,
        settings.max_task_images,
    )
    support = task_support(task, settings.task_support_images)
    try:
        embedding = await run_in_threadpool(learngene.embed_task, support.images)
    except NoAncestryError as exc:
        raise Conflict(str(exc)) from exc
    except (ValueError, RuntimeError) as exc:  # images the ancestry model cannot take
        raise InvalidInput(f"file: cannot embed these images ({exc})") from exc
    head_support, note = _head_support(support)
    return Registration(name, embedding, task.num_classes, head_support, note)


def _check_name(name: str) -> None:
    try:
        TaskVector(name=name, embedding=[0.0])
    except ValidationError as exc:
        raise InvalidInput(f"name: must match {TASK_NAME_PATTERN}") from exc


async def _from_json(request: Request) -> Registration:
    body = await request.body()
    try:
        vector = TaskVector.model_validate_json(body)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInput(details) from exc
    embedding = torch.tensor(vector.embedding, dtype=torch.float32)
    return Registration(vector.name, embedding, 0, None, None)


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
        task = await _from_upload(request, state)
    else:
        task = await _from_json(request)
    task_hash, shared = await state.tasks.register(
        task.name, task.embedding, loaded.learngene, task.support
    )
    return TaskRegistered(
        name=task.name,
        hash=task_hash,
        shared=shared,
        model_version=loaded.model_version,
        support_images=0 if task.support is None else len(task.support.labels),
        classes=task.classes or None,
        note=task.note,
    )
