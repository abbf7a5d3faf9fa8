"""Request and response bodies of the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.core.config import MAX_TASK_TTL_SECONDS
from tal.arch.formats import OutputDType, OutputFormat
from tal.heads.choice import HeadChoice

TASK_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
RETIRED_SEED_MESSAGE = (
    "seed is retired: the predicted weights do not depend on a seed (the decoder has no random "
    "part, so every seed gave the same weights); leave the field out"
)
MAX_EMBEDDING_VALUES = 65_536
NAME_PATTERN = TASK_NAME_PATTERN
TTL_DESCRIPTION = (
    "seconds until the registration expires on every replica; absent: the server's default "
    "(TAL_TASK_TTL_SECONDS), 0: never (refused when the server bounds TTLs), at most "
    "TAL_MAX_TASK_TTL_SECONDS when that is set"
)

ARCH_EXAMPLES = [
    {"family": "vit", "depth": 12, "embed_dim": 384, "num_heads": 6},
    "vit_small_patch16_224",
    {"family": "gpt2", "n_layer": 6, "n_embd": 384, "n_head": 6},
    {"model_type": "gpt2", "n_layer": 6, "n_embd": 384, "n_head": 6},
]


class InitializeRequest(BaseModel):
    """What to predict weights for."""

    model_config = ConfigDict(extra="forbid")

    arch: dict[str, Any] | str = Field(
        description="a ViT or GPT-2 spec (with 'family'), a timm ViT model name, or a Hugging "
        "Face ViTConfig / GPT2Config dict (with 'model_type')",
        examples=ARCH_EXAMPLES,
    )
    task: str | None = Field(
        None, max_length=128, description="task name (GET /v1/tasks); null = unconditioned"
    )
    format: OutputFormat = Field("timm", description="tensor names: timm or transformers")
    dtype: OutputDType = "float32"
    seed: int | None = Field(
        None,
        deprecated=True,
        description="retired: predicted weights do not depend on a seed, so only 0 (or leaving "
        "the field out) is accepted",
    )
    head: HeadChoice = Field(
        "auto",
        description="the classifier head: 'discriminant' fits it to the labelled images of a "
        "task registered from an .npz (closed form; the blob's tal.input_norm says how to "
        "normalise inputs for it), 'predicted' keeps the hypernetwork's, 'auto' fits one "
        "where the task has images and the arch is a ViT with the task's num_classes",
    )

    @field_validator("seed")
    @classmethod
    def _seed_is_retired(cls, seed: int | None) -> int | None:
        if seed not in (None, 0):
            raise ValueError(RETIRED_SEED_MESSAGE)
        return seed


class TaskVector(BaseModel):
    """Registers a task from its embedding vector."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=TASK_NAME_PATTERN, description="task name")
    embedding: list[float] = Field(
        min_length=1, max_length=MAX_EMBEDDING_VALUES, description="task_dim floats"
    )
    ttl_seconds: int | None = Field(
        None, ge=0, le=MAX_TASK_TTL_SECONDS, description=TTL_DESCRIPTION
    )


class TaskInfo(BaseModel):
    name: str
    source: Literal["checkpoint", "registered"]
    hash: str = Field(description="hash of the embedding (part of the cache key)")
    owner: str | None = Field(
        None,
        description="who registered it: the API key's name, or 'key-' and a hash of the key "
        "for a key without a name; 'anonymous' without keys, 'legacy' for tasks registered "
        "before owners existed; null for the checkpoint's tasks",
    )
    created_at: datetime | None = Field(None, description="when it was registered (UTC)")
    expires_at: datetime | None = Field(
        None, description="when the registration expires (UTC); null = never"
    )
    modality: Literal["image", "text"] | None = Field(
        None,
        description="what the task's examples are: images condition ViTs, texts GPT-2s; null "
        "for a task registered from an embedding vector (either family)",
    )


class TaskList(BaseModel):
    model_version: str
    task_dim: int
    tasks: list[TaskInfo]


class TaskRegistered(BaseModel):
    name: str
    hash: str
    shared: bool = Field(description="stored in Redis, so every replica sees it")
    model_version: str
    support_images: int = Field(
        0,
        description="labelled examples (images or texts) kept to fit heads to (0: heads stay "
        "predicted)",
    )
    classes: int | None = Field(None, description="classes of the uploaded labels")
    note: str | None = Field(None, description="why no examples were kept, when none were")
    owner: str | None = Field(
        None, description="the task's owner (a replacement by an admin keeps the owner)"
    )
    expires_at: datetime | None = Field(
        None, description="when the registration expires (UTC); null = never"
    )


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="model name in the store")
    version: str = Field("latest", pattern=NAME_PATTERN, description="version or 'latest'")


class ModelSummary(BaseModel):
    name: str
    version: str
    model_version: str
    untrained: bool
    task_dim: int
    has_ancestry: bool
    device: str
    torch_threads: int = Field(description="intra-op threads of this worker")
    loaded_at: float
    manifest: dict[str, Any]


class ModelsResponse(BaseModel):
    loaded: ModelSummary
    available: dict[str, list[str]]


class ErrorBody(BaseModel):
    error: str
    detail: str
