"""Task embeddings: the checkpoint's own tasks plus tasks registered through the API.

Registered tasks are kept in this process and, when Redis is configured, in a Redis hash per
model name, so every replica sees them: a replica looks a registered task up in Redis on each
use (a few hundred bytes), falling back to its own copy when Redis is unavailable.
"""

from __future__ import annotations

import numpy as np
import torch

from service.cache.keys import task_hash
from service.cache.redis_tier import RedisTier
from service.core.errors import Conflict, InvalidInput
from tal.learngene import Learngene, UnknownTaskError

EMBEDDING_DTYPE = np.float32
SOURCE_CHECKPOINT = "checkpoint"
SOURCE_REGISTERED = "registered"


def _decode(data: bytes, task_dim: int) -> torch.Tensor | None:
    """float32 bytes -> ``(task_dim,)``; None when the length does not fit this model."""
    if len(data) != task_dim * np.dtype(EMBEDDING_DTYPE).itemsize:
        return None
    return torch.from_numpy(np.frombuffer(data, dtype=EMBEDDING_DTYPE).copy())


def _encode(embedding: torch.Tensor) -> bytes:
    return embedding.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()


class TaskRegistry:
    """Resolves task names to embeddings ``(task_dim,)`` for the serving learngene."""

    def __init__(self, model_name: str, redis: RedisTier | None) -> None:
        self.model_name = model_name
        self.redis = redis
        self.local: dict[str, torch.Tensor] = {}

    async def _registered(self, task_dim: int) -> dict[str, torch.Tensor]:
        """Registered tasks of the right width: Redis merged over the local copies."""
        tasks = {k: v for k, v in self.local.items() if v.shape == (task_dim,)}
        if self.redis is not None:
            remote = await self.redis.get_tasks(self.model_name)
            for name, data in (remote or {}).items():
                embedding = _decode(data, task_dim)
                if embedding is not None:
                    tasks[name] = self.local[name] = embedding
        return tasks

    async def resolve(self, name: str | None, learngene: Learngene) -> torch.Tensor | None:
        """The embedding of ``name`` (None = unconditioned); raises UnknownTaskError."""
        if name is None:
            return None
        if name in learngene.tasks:
            return learngene.tasks[name]
        task_dim = learngene.hypernet.config.encoder.task_dim
        if self.redis is not None:
            data = await self.redis.get_task(self.model_name, name)
            embedding = _decode(data, task_dim) if data else None
            if embedding is not None:
                self.local[name] = embedding
        embedding = self.local.get(name)
        if embedding is None or embedding.shape != (task_dim,):
            known = sorted({*learngene.tasks, *await self._registered(task_dim)})
            raise UnknownTaskError(name, known)
        return embedding.to(learngene.hypernet.device)

    async def list(self, learngene: Learngene) -> list[dict[str, str]]:
        task_dim = learngene.hypernet.config.encoder.task_dim
        rows = [
            {"name": name, "source": SOURCE_CHECKPOINT, "hash": task_hash(embedding)}
            for name, embedding in learngene.tasks.items()
        ]
        registered = await self._registered(task_dim)
        rows += [
            {"name": name, "source": SOURCE_REGISTERED, "hash": task_hash(embedding)}
            for name, embedding in registered.items()
            if name not in learngene.tasks
        ]
        return sorted(rows, key=lambda row: row["name"])

    async def register(
        self, name: str, embedding: torch.Tensor, learngene: Learngene
    ) -> tuple[str, bool]:
        """Stores ``embedding`` ``(task_dim,)`` under ``name``; returns (hash, shared in Redis)."""
        if name in learngene.tasks:
            raise Conflict(
                f"task {name!r} is part of checkpoint {learngene.model_version} and cannot be "
                "replaced; choose another name"
            )
        task_dim = learngene.hypernet.config.encoder.task_dim
        embedding = embedding.detach().to("cpu", torch.float32).reshape(-1)
        if embedding.shape != (task_dim,):
            raise InvalidInput(
                f"embedding: must have {task_dim} values (the checkpoint's task_dim), "
                f"got {embedding.numel()}"
            )
        if not torch.isfinite(embedding).all():
            raise InvalidInput("embedding: contains NaN or infinite values")
        self.local[name] = embedding
        shared = False
        if self.redis is not None:
            shared = await self.redis.put_task(self.model_name, name, _encode(embedding))
        return task_hash(embedding), shared
