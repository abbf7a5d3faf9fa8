"""Task embeddings: the checkpoint's own tasks plus tasks registered through the API.

Registered tasks belong to an owner (the API key's name, ``service.core.identity``): only the
owner or an admin key replaces or deletes one, an owner holds at most ``max_tasks_per_owner``
and a registration may expire. They are kept in this process and, when Redis is configured, in
Redis (``service.task_store``), so every replica sees them: a replica looks a registered task up
in Redis on each use (a few hundred bytes), so a task deleted or expired anywhere is unknown
everywhere at once; it falls back to its own copy only when Redis cannot answer.

A task registered from labelled images or texts also keeps those examples (its *support*, at
most ``task_support_images`` of them, a few MB) so that heads can be fitted to it
(``tal.heads.support.fit_head_to_support``). Each use reads only the support's reference (its
hash, class count and modality: images condition ViTs, texts GPT-2s); the examples themselves
are read on a cache miss that fits a head, and kept in memory for the
``max_local_task_supports`` most recently used tasks.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, get_args

import numpy as np
import torch

from service.cache.keys import task_hash
from service.cache.redis_tier import RedisTier
from service.core.errors import Conflict, InvalidInput, Unavailable
from service.core.identity import ANONYMOUS, Caller
from service.core.logging import LOGGER
from service.task_store import LocalTaskStore, NewTask, RedisTaskStore, TaskRecord
from tal.arch.specs import GPT2Spec, ViTSpec
from tal.checkpoints.learngene import Learngene
from tal.heads.support import Support, modality_of, support_from_bytes, support_to_bytes
from tal.tasks import get_task_info
from tal.tasks.data import Modality
from tal.tasks.errors import UnknownTaskError

EMBEDDING_DTYPE = np.float32
SOURCE_CHECKPOINT = "checkpoint"
SOURCE_REGISTERED = "registered"
SUPPORT_DIGEST_HEX_CHARS = 16
REFERENCE_SEPARATOR = ":"
RETRY_SUPPORT_SECONDS = 1
FAMILY_OF_MODALITY = {"image": "vit", "text": "gpt2"}


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
    """Which labelled examples (images or texts) a registered task keeps, without them."""

    digest: str  # of the support blob
    classes: int
    examples: int
    modality: Modality = "image"

    def encode(self) -> bytes:
        fields = (self.digest, str(self.classes), str(self.examples), self.modality)
        return REFERENCE_SEPARATOR.join(fields).encode("ascii")

    @classmethod
    def decode(cls, data: bytes) -> SupportRef | None:
        """None for anything this version did not write (references without a modality,
        written before texts were supported, are images)."""
        try:
            digest, classes, examples, *modality = data.decode("ascii").split(REFERENCE_SEPARATOR)
            kind = modality[0] if modality else "image"
            if len(modality) > 1 or kind not in get_args(Modality):
                return None
            return cls(digest, int(classes), int(examples), kind)  # type: ignore[arg-type]
        except (UnicodeDecodeError, ValueError):
            return None

    @classmethod
    def of(cls, blob: bytes, support: Support) -> SupportRef:
        return cls(
            support_digest(blob), support.num_classes, len(support.labels), modality_of(support)
        )


@dataclass(frozen=True)
class ResolvedTask:
    """A task as one request uses it: its name and embedding ``(task_dim,)`` (both None =
    unconditioned), for a task registered from labelled examples the reference of those
    examples, and its modality where known (None: a registered embedding vector)."""

    name: str | None
    embedding: torch.Tensor | None
    support: SupportRef | None = None
    modality: Modality | None = None

    def check_family(self, spec: ViTSpec | GPT2Spec) -> None:
        """Raises InvalidInput (422) when the task's examples are not the arch's kind: images
        for a ViT, texts for a GPT-2."""
        family = FAMILY_OF_MODALITY.get(self.modality) if self.modality else None
        if family is not None and family != spec.family:
            raise InvalidInput(
                f"task: {self.name!r} was registered from {self.modality}s, so it conditions "
                f"family {family!r} archs, not this arch of family {spec.family!r}; use a "
                f"{family} arch or a task of {spec.family}'s modality"
            )


def checkpoint_modality(name: str) -> Modality | None:
    """The modality of a task of the checkpoint (a suite task), or None when unknown."""
    try:
        return get_task_info(name).modality
    except UnknownTaskError:
        return None


@dataclass(frozen=True)
class Registered:
    """The outcome of a registration: the stored record, its embedding's hash and whether it
    is in Redis (every replica sees it)."""

    record: TaskRecord
    hash: str
    shared: bool


def timestamp(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def task_row(record: TaskRecord, embedding: torch.Tensor) -> dict[str, Any]:
    """One registered task as ``GET /v1/tasks`` lists it."""
    support = SupportRef.decode(record.reference) if record.reference else None
    return {
        "name": record.name,
        "source": SOURCE_REGISTERED,
        "hash": task_hash(embedding),
        "owner": record.owner,
        "created_at": timestamp(record.created),
        "expires_at": timestamp(record.expires),
        "modality": support.modality if support is not None else None,
    }


class TaskRegistry:
    """Resolves task names to embeddings ``(task_dim,)`` and labelled examples for the serving
    learngene, and registers, lists and deletes tasks on behalf of their owners."""

    def __init__(
        self,
        model_name: str,
        redis: RedisTier | None,
        max_supports: int,
        max_tasks_per_owner: int = 0,
        private_names: bool = False,
    ) -> None:
        """``private_names``: an unknown-task error names only the checkpoint's tasks, not
        other owners' registered ones (set when API keys are configured)."""
        self.model_name = model_name
        self.remote = RedisTaskStore(redis) if redis is not None else None
        self.max_supports = max_supports
        self.max_tasks_per_owner = max_tasks_per_owner
        self.private_names = private_names
        self.local = LocalTaskStore()
        self.supports: OrderedDict[str, Support] = OrderedDict()  # by support digest, LRU

    async def _lookup(self, name: str) -> TaskRecord | None:
        """The record of a registered task: Redis when it answers (a copy is kept for when it
        does not), else this process's copy."""
        if self.remote is not None:
            ok, record = await self.remote.get(self.model_name, name)
            if ok:
                if record is not None:
                    self.local.remember(record)
                    return record
                if name not in self.local.local_only:
                    self.local.forget(name)  # deleted or expired on another replica
        return self.local.get(name)

    async def resolve(self, name: str | None, learngene: Learngene) -> ResolvedTask:
        """The embedding of ``name`` and its support reference; raises UnknownTaskError."""
        if name is None:
            return ResolvedTask(None, None)
        if name in learngene.tasks:
            return ResolvedTask(name, learngene.tasks[name], None, checkpoint_modality(name))
        task_dim = learngene.hypernet.config.encoder.task_dim
        record = await self._lookup(name)
        embedding = _decode(record.embedding, task_dim) if record is not None else None
        if record is None or embedding is None:
            known = set(learngene.tasks)
            if not self.private_names:
                known |= {r.name for r in await self._records(None)}
            raise UnknownTaskError(name, known)
        support = SupportRef.decode(record.reference) if record.reference else None
        device = learngene.hypernet.device
        modality = support.modality if support is not None else None
        return ResolvedTask(name, embedding.to(device), support, modality)

    def _keep(self, digest: str, support: Support) -> None:
        self.supports[digest] = support
        self.supports.move_to_end(digest)
        while len(self.supports) > self.max_supports:
            self.supports.popitem(last=False)

    async def support_examples(self, task: ResolvedTask) -> Support:
        """The labelled examples behind ``task.support`` (from memory or Redis).

        Raises Unavailable (503) when they are gone or were replaced since the reference was
        read (the task was re-registered meanwhile): a retry reads the new ones.
        """
        name, reference = task.name, task.support
        assert name is not None and reference is not None  # heads fit registered tasks only
        support = self.supports.get(reference.digest)
        if support is not None:
            self.supports.move_to_end(reference.digest)
            return support
        if self.remote is None:
            raise Conflict(
                f"task {name!r}: its examples were dropped from this process's memory (over "
                "max_local_task_supports tasks registered, and no Redis to keep them); register "
                "it again, or ask for head 'predicted'"
            )
        blob = await self.remote.images(self.model_name, name)
        if blob is not None and support_digest(blob) == reference.digest:
            support = support_from_bytes(blob)  # the bytes register wrote
            self._keep(reference.digest, support)
            return support
        raise Unavailable(
            f"task {name!r}: its examples cannot be read now (the task was re-registered or "
            "deleted meanwhile, or Redis is unreachable); retry, or ask for head 'predicted'",
            RETRY_SUPPORT_SECONDS,
        )

    async def _records(self, owner: str | None) -> list[TaskRecord]:
        """Live registered tasks of ``owner`` (None: all): Redis's, plus those only this
        process holds; this process's copies when Redis cannot answer."""
        if self.remote is not None:
            ok, records = await self.remote.list(self.model_name, owner)
            if ok:
                for record in records:
                    self.local.remember(record)
                seen = {r.name for r in records}
                only_here = [
                    r
                    for r in self.local.owned(owner)
                    if r.name in self.local.local_only and r.name not in seen
                ]
                return records + only_here
        return self.local.owned(owner)

    async def list(self, learngene: Learngene, caller: Caller) -> list[dict[str, Any]]:
        """The checkpoint's tasks and the registered tasks ``caller`` sees: its own, or every
        owner's for an admin (and for everyone when no keys are configured)."""
        task_dim = learngene.hypernet.config.encoder.task_dim
        rows: list[dict[str, Any]] = [
            {
                "name": name,
                "source": SOURCE_CHECKPOINT,
                "hash": task_hash(embedding),
                "modality": checkpoint_modality(name),
            }
            for name, embedding in learngene.tasks.items()
        ]
        for record in await self._records(None if caller.admin else caller.owner):
            embedding = _decode(record.embedding, task_dim)
            if embedding is not None and record.name not in learngene.tasks:
                rows.append(task_row(record, embedding))
        return sorted(rows, key=lambda row: row["name"])

    def _check_replaceable(self, name: str, learngene: Learngene, action: str) -> None:
        if name in learngene.tasks:
            raise Conflict(
                f"task {name!r} is part of checkpoint {learngene.model_version} and cannot be "
                f"{action}; choose another name"
            )

    async def register(
        self,
        name: str,
        embedding: torch.Tensor,
        learngene: Learngene,
        support: Support | None = None,
        caller: Caller | None = None,
        ttl_seconds: int = 0,
    ) -> Registered:
        """Stores ``embedding`` ``(task_dim,)`` under ``name`` for ``caller`` (None: the
        anonymous admin), with the labelled images heads are fitted to (or none, removing
        earlier ones), expiring after ``ttl_seconds`` (0: never).

        Raises Forbidden (another owner's task), TaskLimitReached (409, the owner holds
        ``max_tasks_per_owner``), Conflict (a checkpoint task) and InvalidInput.
        """
        caller = caller or ANONYMOUS
        self._check_replaceable(name, learngene, "replaced")
        task_dim = learngene.hypernet.config.encoder.task_dim
        embedding = embedding.detach().to("cpu", torch.float32).reshape(-1)
        if embedding.shape != (task_dim,):
            raise InvalidInput(
                f"embedding: must have {task_dim} values (the checkpoint's task_dim), "
                f"got {embedding.numel()}"
            )
        if not torch.isfinite(embedding).all():
            raise InvalidInput("embedding: contains NaN or infinite values")
        task = NewTask(name, _encode(embedding))
        if support is not None:
            blob = support_to_bytes(support)
            reference = SupportRef.of(blob, support)
            task = NewTask(name, task.embedding, reference.encode(), blob)
            self._keep(reference.digest, support)
        limit = self.max_tasks_per_owner
        record = None
        if self.remote is not None:
            _, record = await self.remote.register(
                self.model_name, task, caller, limit, ttl_seconds
            )
        shared = record is not None
        if record is None:  # no Redis, or it cannot answer: this process only
            record = self.local.register(task, caller, limit, ttl_seconds)
        else:
            self.local.remember(record)
        LOGGER.info(
            "task %r registered by %s (owner %s, expires %s, shared %s)",
            name,
            caller.owner,
            record.owner,
            timestamp(record.expires) or "never",
            shared,
        )
        return Registered(record, task_hash(embedding), shared)

    async def delete(self, name: str, learngene: Learngene, caller: Caller) -> None:
        """Removes a registered task everywhere: its embedding, images and reference.

        Raises NotFound, Forbidden (another owner's task, not an admin), Conflict (a checkpoint
        task) and Unavailable when Redis holds it but cannot be reached now.
        """
        self._check_replaceable(name, learngene, "deleted")
        if self.remote is not None and name not in self.local.local_only:
            if not await self.remote.delete(self.model_name, name, caller):
                raise Unavailable(
                    f"task {name!r} cannot be deleted now: Redis, which every replica reads "
                    "it from, cannot be reached; retry",
                    RETRY_SUPPORT_SECONDS,
                )
            self.local.forget(name)
        else:
            self.local.delete(name, caller)
        LOGGER.info("task %r deleted by %s", name, caller.owner)
