"""Task embeddings: the checkpoint's own tasks plus tasks registered through the API.

Registered tasks are kept in this process and, when Redis is configured, in a Redis hash per
model name, so every replica sees them: a replica looks a registered task up in Redis on each
use (a few hundred bytes), falling back to its own copy when Redis is unavailable.

A task registered from labelled images also keeps those images (its *support*, at most
``task_support_images`` of them, a few MB) so that heads can be fitted to it
(``tal.heads.support.fit_head_to_support``). Each use reads only the support's reference (its hash
and class count); the images themselves are read on a cache miss that fits a head, and kept in
memory for the ``max_local_task_supports`` most recently used tasks.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from service.cache.keys import task_hash
from service.cache.redis_tier import RedisTier
from service.core.errors import Conflict, InvalidInput, Unavailable
from tal.checkpoints.learngene import Learngene
from tal.heads.support import support_from_bytes, support_to_bytes
from tal.tasks import TaskData
from tal.tasks.errors import UnknownTaskError

EMBEDDING_DTYPE = np.float32
SOURCE_CHECKPOINT = "checkpoint"
SOURCE_REGISTERED = "registered"
SUPPORT_DIGEST_HEX_CHARS = 16
REFERENCE_SEPARATOR = ":"
RETRY_SUPPORT_SECONDS = 1


def _decode(data: bytes, task_dim: int) -> torch.Tensor | None:
    """float32 bytes -> ``(task_dim,)``; None when the length does not fit this model."""
    if len(data) != task_dim * np.dtype(EMBEDDING_DTYPE).itemsize:
        return None
    return torch.from_numpy(np.frombuffer(data, dtype=EMBEDDING_DTYPE).copy())


def _encode(embedding: torch.Tensor) -> bytes:
    return embedding.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()


def support_digest(blob: bytes) -> str:
    """The short hash naming a support blob (in its reference and in cache keys)."""
    return hashlib.sha256(blob).hexdigest()[:SUPPORT_DIGEST_HEX_CHARS]


@dataclass(frozen=True)
class SupportRef:
    """Which labelled images a registered task keeps, without the images."""

    digest: str  # of the support blob
    classes: int
    examples: int

    def encode(self) -> bytes:
        fields = (self.digest, str(self.classes), str(self.examples))
        return REFERENCE_SEPARATOR.join(fields).encode("ascii")

    @classmethod
    def decode(cls, data: bytes) -> SupportRef | None:
        """None for anything this version did not write."""
        try:
            digest, classes, examples = data.decode("ascii").split(REFERENCE_SEPARATOR)
            return cls(digest, int(classes), int(examples))
        except (UnicodeDecodeError, ValueError):
            return None

    @classmethod
    def of(cls, blob: bytes, support: TaskData) -> SupportRef:
        return cls(support_digest(blob), support.num_classes, len(support.labels))


@dataclass(frozen=True)
class ResolvedTask:
    """A task as one request uses it: its name and embedding ``(task_dim,)`` (both None =
    unconditioned) and, for a task registered from labelled images, the reference of those
    images."""

    name: str | None
    embedding: torch.Tensor | None
    support: SupportRef | None = None


class TaskRegistry:
    """Resolves task names to embeddings ``(task_dim,)`` and support images for the serving
    learngene."""

    def __init__(self, model_name: str, redis: RedisTier | None, max_supports: int) -> None:
        self.model_name = model_name
        self.redis = redis
        self.max_supports = max_supports
        self.local: dict[str, torch.Tensor] = {}
        self.local_refs: dict[str, SupportRef] = {}
        self.supports: OrderedDict[str, TaskData] = OrderedDict()  # by support digest, LRU

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

    async def resolve(self, name: str | None, learngene: Learngene) -> ResolvedTask:
        """The embedding of ``name`` and its support reference; raises UnknownTaskError."""
        if name is None:
            return ResolvedTask(None, None)
        if name in learngene.tasks:
            return ResolvedTask(name, learngene.tasks[name])
        task_dim = learngene.hypernet.config.encoder.task_dim
        if self.redis is not None:
            data, reference = await self.redis.get_task(self.model_name, name)
            embedding = _decode(data, task_dim) if data else None
            if embedding is not None:
                self.local[name] = embedding
                support = SupportRef.decode(reference) if reference else None
                self._set_ref(name, support)
        embedding = self.local.get(name)
        if embedding is None or embedding.shape != (task_dim,):
            known = sorted({*learngene.tasks, *await self._registered(task_dim)})
            raise UnknownTaskError(name, known)
        device = learngene.hypernet.device
        return ResolvedTask(name, embedding.to(device), self.local_refs.get(name))

    def _set_ref(self, name: str, support: SupportRef | None) -> None:
        if support is None:
            self.local_refs.pop(name, None)
        else:
            self.local_refs[name] = support

    def _keep(self, digest: str, support: TaskData) -> None:
        self.supports[digest] = support
        self.supports.move_to_end(digest)
        while len(self.supports) > self.max_supports:
            self.supports.popitem(last=False)

    async def support_images(self, task: ResolvedTask) -> TaskData:
        """The labelled images behind ``task.support`` (from memory or Redis).

        Raises Unavailable (503) when they are gone or were replaced since the reference was
        read (the task was re-registered meanwhile): a retry reads the new ones.
        """
        name, reference = task.name, task.support
        assert name is not None and reference is not None  # heads fit registered tasks only
        support = self.supports.get(reference.digest)
        if support is not None:
            self.supports.move_to_end(reference.digest)
            return support
        if self.redis is None:
            raise Conflict(
                f"task {name!r}: its images were dropped from this process's memory (over "
                "max_local_task_supports tasks registered, and no Redis to keep them); register "
                "it again, or ask for head 'predicted'"
            )
        blob = await self.redis.get_support(self.model_name, name)
        if blob is not None and support_digest(blob) == reference.digest:
            support = support_from_bytes(blob)  # the bytes register wrote
            self._keep(reference.digest, support)
            return support
        raise Unavailable(
            f"task {name!r}: its images cannot be read now (the task was re-registered "
            "meanwhile, or Redis is unreachable); retry, or ask for head 'predicted'",
            RETRY_SUPPORT_SECONDS,
        )

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
        self,
        name: str,
        embedding: torch.Tensor,
        learngene: Learngene,
        support: TaskData | None = None,
    ) -> tuple[str, bool]:
        """Stores ``embedding`` ``(task_dim,)`` under ``name``, with the labelled images heads
        are fitted to (or none, removing earlier ones); returns (hash, shared in Redis)."""
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
        stored = None
        reference = None
        if support is not None:
            blob = support_to_bytes(support)
            reference = SupportRef.of(blob, support)
            stored = (reference.encode(), blob)
            self._keep(reference.digest, support)
        self.local[name] = embedding
        self._set_ref(name, reference)
        shared = False
        if self.redis is not None:
            shared = await self.redis.put_task(self.model_name, name, _encode(embedding), stored)
        return task_hash(embedding), shared
