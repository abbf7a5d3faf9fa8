"""``GET /v1/tasks``, ``POST /v1/tasks`` (register a task from labelled images or texts, or a
vector) and ``DELETE /v1/tasks/{name}``.

A task registered from labelled examples (an ``.npz`` of images, or a JSONL / CSV of texts) is
embedded by the checkpoint's ancestry model of that modality from at most
``task_support_images`` of them, balanced over classes, and keeps those examples so that
``POST /v1/initialize`` can fit a classifier head to them (``head``: ``auto`` or
``discriminant``): a ViT's ``head`` from images, a GPT-2's ``score`` (format
``hf-sequence-classification``) from texts.

A registered task belongs to the owner of the key that registered it: only that key's owner or
an admin key replaces or deletes it, and listing shows a key its own tasks (an admin every
owner's). Registrations may expire (``ttl_seconds``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import torch
from fastapi import APIRouter, Path, Request, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from service.api.deps import ApiKeyDep, CallerDep, StateDep
from service.core.config import MAX_TASK_TTL_SECONDS, Settings
from service.core.errors import Conflict, InvalidInput
from service.schemas import (
    TASK_NAME_PATTERN,
    TTL_DESCRIPTION,
    ErrorBody,
    TaskList,
    TaskRegistered,
    TaskVector,
)
from service.task_registry import timestamp
from service.uploads import (
    NPZ_SUFFIX,
    TEXT_SUFFIXES,
    task_data_from_npz,
    task_data_from_text,
    upload_modality,
)
from tal.checkpoints.ancestry import NoAncestryError
from tal.checkpoints.learngene import Learngene
from tal.heads.support import Support, missing_classes, task_support
from tal.tasks import TaskData
from tal.tasks.data import Modality

router = APIRouter(prefix="/v1/tasks", tags=["tasks"], dependencies=[ApiKeyDep])
MULTIPART = "multipart/form-data"
MAX_FORM_FIELDS = 4  # name, file, ttl_seconds and one spare
TTL_FIELD = "ttl_seconds"
MAX_FORM_FILES = 1
MIN_HEAD_CLASSES = 2  # a discriminant head separates at least two classes
NAMED_MISSING_CLASSES = 10  # a note names at most this many classes without an image

UPLOAD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "file"],
    "properties": {
        "name": {"type": "string", "pattern": TASK_NAME_PATTERN},
        "file": {
            "type": "string",
            "format": "binary",
            "description": "images: .npz with arrays images, labels; texts: "
            f"{', '.join(sorted(TEXT_SUFFIXES))} of {{text, label}} (the file name's suffix "
            "says which)",
        },
        TTL_FIELD: {
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_TASK_TTL_SECONDS,
            "description": TTL_DESCRIPTION,
        },
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
async def list_tasks(state: StateDep, caller: CallerDep) -> TaskList:
    """The checkpoint's tasks and the registered tasks of the caller's key (an admin key: every
    owner's; without keys configured: all)."""
    learngene = state.models.require().learngene
    rows = await state.tasks.list(learngene, caller)
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
    the labelled examples kept to fit heads to (None, with the reason in ``note`` when
    examples were sent but cannot fit one)."""

    name: str
    embedding: torch.Tensor
    classes: int
    support: Support | None
    note: str | None
    ttl_seconds: int  # 0: never expires


def _head_support(support: Support) -> tuple[Support | None, str | None]:
    """``support`` when a discriminant head can be fitted to it, else None and why."""
    if support.num_classes < MIN_HEAD_CLASSES:
        return None, f"a head needs at least {MIN_HEAD_CLASSES} classes"
    missing = missing_classes(support)
    if missing:
        return None, (
            f"classes {missing[:NAMED_MISSING_CLASSES]} have no example among the first "
            "examples read; heads stay predicted (shuffle the upload to fit heads)"
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
        raise InvalidInput(
            f"file: a file is required: {NPZ_SUFFIX} with arrays 'images' and 'labels', or "
            f"labelled texts ({', '.join(sorted(TEXT_SUFFIXES))})"
        )
    _check_name(name)
    ttl = registration_ttl(_form_ttl(form.get(TTL_FIELD)), settings)
    modality, suffix = upload_modality(upload.filename)
    _check_ancestry(learngene, modality)
    data = await upload.read()
    if modality == "text":
        task: Support = await run_in_threadpool(
            task_data_from_text, data, suffix, settings.max_task_images
        )
    else:
        task = await run_in_threadpool(
            task_data_from_npz,
            data,
            learngene.ancestry.spec,  # type: ignore[union-attr]  # checked above
            settings.max_upload_unpacked_bytes,
            settings.max_task_images,
        )
    support = task_support(task, settings.task_support_images)
    embedding = await run_in_threadpool(_embed, learngene, support)
    head_support, note = _head_support(support)
    return Registration(name, embedding, task.num_classes, head_support, note, ttl)


def _check_ancestry(learngene: Learngene, modality: Modality) -> None:
    """409 when the checkpoint has no ancestry model to embed ``modality`` examples with."""
    ancestry = learngene.text_ancestry if modality == "text" else learngene.ancestry
    if ancestry is None:
        kind = "text ancestry" if modality == "text" else "ancestry model"
        raise Conflict(
            f"checkpoint {learngene.model_version} has no {kind}, so it cannot embed a task "
            f"from {modality} examples; register the task with an embedding vector "
            '({"name": ..., "embedding": [...]}) instead'
        )


def _embed(learngene: Learngene, support: Support) -> torch.Tensor:
    """The task's embedding ``(task_dim,)`` from its examples. Blocking."""
    try:
        if isinstance(support, TaskData):
            return learngene.embed_task(support.images)
        return learngene.embed_text_task(support.input_ids, support.lengths)
    except NoAncestryError as exc:
        raise Conflict(str(exc)) from exc
    except (ValueError, RuntimeError) as exc:  # examples the ancestry model cannot take
        raise InvalidInput(f"file: cannot embed these examples ({exc})") from exc


def _form_ttl(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise InvalidInput(f"{TTL_FIELD}: a whole number of seconds (0 or more) is required")


def registration_ttl(requested: int | None, settings: Settings) -> int:
    """The TTL a registration gets (0 = none): the request's, bounded, or the default."""
    if requested is None:
        return settings.task_ttl_seconds
    if requested > MAX_TASK_TTL_SECONDS:
        raise InvalidInput(f"{TTL_FIELD}: at most {MAX_TASK_TTL_SECONDS}, got {requested}")
    bound = settings.max_task_ttl_seconds
    if bound and not 1 <= requested <= bound:
        raise InvalidInput(
            f"{TTL_FIELD}: must be 1 to {bound} on this server (TAL_MAX_TASK_TTL_SECONDS), got "
            f"{requested}; leave it out for the default of {settings.task_ttl_seconds}"
        )
    return requested


def _check_name(name: str) -> None:
    try:
        TaskVector(name=name, embedding=[0.0])
    except ValidationError as exc:
        raise InvalidInput(f"name: must match {TASK_NAME_PATTERN}") from exc


async def _from_json(request: Request, settings: Settings) -> Registration:
    body = await request.body()
    try:
        vector = TaskVector.model_validate_json(body)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInput(details) from exc
    embedding = torch.tensor(vector.embedding, dtype=torch.float32)
    ttl = registration_ttl(vector.ttl_seconds, settings)
    return Registration(vector.name, embedding, 0, None, None, ttl)


@router.post(
    "",
    response_model=TaskRegistered,
    status_code=201,
    summary="register a task from labelled images (.npz), labelled texts (JSONL / CSV) or an "
    "embedding vector",
    openapi_extra=REQUEST_BODY,
    responses={status: {"model": ErrorBody} for status in (401, 403, 409, 413, 415, 422, 503)},
)
async def register_task(request: Request, state: StateDep, caller: CallerDep) -> TaskRegistered:
    """JSON ``{"name", "embedding"[, "ttl_seconds"]}`` (``task_dim`` floats) or a multipart
    form with ``name``, ``file`` (an ``.npz`` holding ``images`` ``(N, H, W[, C])`` and
    ``labels`` ``(N,)``, or a ``.jsonl`` / ``.csv`` / ``.tsv`` of ``{text, label}`` rows, UTF-8)
    and optionally ``ttl_seconds``.

    The task belongs to the caller's key; replacing another owner's task needs an admin key
    (403), and past ``TAL_MAX_TASKS_PER_OWNER`` tasks a new name is refused (409)."""
    loaded = state.models.require()
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(MULTIPART):
        task = await _from_upload(request, state)
    else:
        task = await _from_json(request, state.settings)
    registered = await state.tasks.register(
        task.name, task.embedding, loaded.learngene, task.support, caller, task.ttl_seconds
    )
    record = registered.record
    return TaskRegistered(
        name=task.name,
        hash=registered.hash,
        shared=registered.shared,
        model_version=loaded.model_version,
        support_images=0 if task.support is None else len(task.support.labels),
        classes=task.classes or None,
        note=task.note,
        owner=record.owner,
        expires_at=timestamp(record.expires),
    )


@router.delete(
    "/{name}",
    status_code=204,
    response_class=Response,
    summary="delete a registered task (its owner's key or an admin key)",
    responses={status: {"model": ErrorBody} for status in (401, 403, 404, 409, 422, 503)},
)
async def delete_task(
    state: StateDep,
    caller: CallerDep,
    name: Annotated[str, Path(pattern=TASK_NAME_PATTERN, description="task name")],
) -> Response:
    """Removes the task's embedding, images and reference on every replica: 404 unknown, 403
    another owner's (unless an admin key), 409 one of the checkpoint's tasks, 503 when Redis
    cannot be reached."""
    learngene = state.models.require().learngene
    await state.tasks.delete(name, learngene, caller)
    return Response(status_code=204)
