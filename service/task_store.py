"""Where registered tasks are kept: one record per task with its owner, creation time and
expiry, in Redis (every replica reads it) or in this process (no Redis, or Redis down).

Redis layout (``<p>`` = prefix, ``<m>`` = model name):

* ``<p>:task.v2:<m>:<name>``: a hash with ``embedding`` (float32 bytes), ``owner``,
  ``created`` and ``expires`` (Unix seconds, ``0`` = never) and, for a task registered from
  labelled images, ``support-ref`` and ``support`` (the images, a few MB). One key per task,
  because fields of one hash cannot expire separately in Redis 7.0: a registration with a TTL
  gets ``PEXPIRE`` on its key, so every replica stops seeing it at the same moment and all of
  it (embedding, images, reference) goes at once.
* ``<p>:task-index.v2:<m>``: a sorted set of task names scored by expiry (``+inf`` = never),
  for listing; ``<p>:task-owner.v2:<m>:<owner>``: the same per owner, for the per-owner limit.
  Both are pruned when read (expired scores, and names whose key is gone, e.g. evicted).

Registering and deleting run as Lua scripts, so the owner check, the per-owner count and the
writes are one atomic step even when two replicas act on the same owner at once; times come
from Redis's clock (``TIME``), never a replica's.

Tasks stored by older versions (hashes ``<p>:tasks:<m>``, ``<p>:support-ref:<m>``,
``<p>:support:<m>``) are moved into this layout when first looked up or listed, owned by
``legacy`` (only an admin key replaces or deletes them) and without expiry.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from service.cache.redis_tier import (
    SUPPORT_KIND,
    SUPPORT_REF_KIND,
    TASKS_KIND,
    RedisTier,
)
from service.core.errors import Conflict, Forbidden, NotFound
from service.core.identity import LEGACY_OWNER, Caller

TASK_KIND, INDEX_KIND, OWNER_KIND = "task.v2", "task-index.v2", "task-owner.v2"
EMBEDDING, OWNER, CREATED, EXPIRES = "embedding", "owner", "created", "expires"
SUPPORT_REF, SUPPORT = "support-ref", "support"
RECORD_FIELDS = (EMBEDDING, OWNER, CREATED, EXPIRES, SUPPORT_REF)
NEVER = 0.0  # stored expiry of a task without one
MS_PER_SECOND = 1000
OK, FORBIDDEN, LIMIT, MISSING = b"ok", b"forbidden", b"limit", b"missing"

# Shared by the scripts: prune an owner's set and count the tasks it still owns.
_COUNT_LIVE = """
local function live_count(set, task_prefix, owner, now)
  redis.call('ZREMRANGEBYSCORE', set, '-inf', now)
  local live = 0
  for _, member in ipairs(redis.call('ZRANGE', set, 0, -1)) do
    if redis.call('HGET', task_prefix .. member, 'owner') == owner then
      live = live + 1
    else
      redis.call('ZREM', set, member)
    end
  end
  return live
end
local function now_seconds()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""

# KEYS: task key, index. ARGV: task key prefix, owner set prefix, name, caller, admin (1/0),
# max per owner (0 = none), ttl ms (0 = none), embedding, support reference ('' = none), images.
REGISTER_LUA = (
    _COUNT_LIVE
    + """
local now = now_seconds()
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner then
  if owner ~= ARGV[4] and ARGV[5] ~= '1' then return {'forbidden', owner} end
else
  owner = ARGV[4]
  local limit = tonumber(ARGV[6])
  if limit > 0 then
    local live = live_count(ARGV[2] .. owner, ARGV[1], owner, now)
    if live >= limit then return {'limit', tostring(live)} end
  end
end
local ttl = tonumber(ARGV[7])
local expires, score = 0, '+inf'
if ttl > 0 then
  expires = now + ttl / 1000
  score = string.format('%.3f', expires)
end
local created, expiry = string.format('%.3f', now), string.format('%.3f', expires)
redis.call('UNLINK', KEYS[1])
redis.call('HSET', KEYS[1], 'embedding', ARGV[8], 'owner', owner, 'created', created,
  'expires', expiry)
if ARGV[9] ~= '' then
  redis.call('HSET', KEYS[1], 'support-ref', ARGV[9], 'support', ARGV[10])
end
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZADD', KEYS[2], score, ARGV[3])
redis.call('ZADD', ARGV[2] .. owner, score, ARGV[3])
return {'ok', owner, created, expiry}
"""
)

# KEYS: task key, index. ARGV: owner set prefix, name, caller, admin (1/0).
DELETE_LUA = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if not owner then
  redis.call('ZREM', KEYS[2], ARGV[2])
  return {'missing'}
end
if owner ~= ARGV[3] and ARGV[4] ~= '1' then return {'forbidden', owner} end
redis.call('UNLINK', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREM', ARGV[1] .. owner, ARGV[2])
return {'ok', owner}
"""

# KEYS: legacy embeddings, legacy references, legacy images, task key, index, legacy owner set.
# ARGV: name, legacy owner. Moves one task (unless the new layout already has the name).
MIGRATE_LUA = (
    _COUNT_LIVE
    + """
local embedding = redis.call('HGET', KEYS[1], ARGV[1])
local moved = 0
if embedding and redis.call('EXISTS', KEYS[4]) == 0 then
  redis.call('HSET', KEYS[4], 'embedding', embedding, 'owner', ARGV[2],
    'created', string.format('%.3f', now_seconds()), 'expires', '0')
  local reference = redis.call('HGET', KEYS[2], ARGV[1])
  local images = redis.call('HGET', KEYS[3], ARGV[1])
  if reference and images then
    redis.call('HSET', KEYS[4], 'support-ref', reference, 'support', images)
  end
  redis.call('ZADD', KEYS[5], '+inf', ARGV[1])
  redis.call('ZADD', KEYS[6], '+inf', ARGV[1])
  moved = 1
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return moved
"""
)


@dataclass(frozen=True)
class TaskRecord:
    """One registered task as stored: ``embedding`` is ``(task_dim,)`` float32 bytes,
    ``reference`` the encoded support reference (None: no images kept), times Unix seconds."""

    name: str
    embedding: bytes
    owner: str
    created: float
    expires: float | None  # None = never
    reference: bytes | None

    def expired(self, now: float | None = None) -> bool:
        return self.expires is not None and (now or time.time()) >= self.expires


@dataclass(frozen=True)
class NewTask:
    """What a registration writes: the embedding bytes and, optionally, the images' encoded
    reference and blob."""

    name: str
    embedding: bytes
    reference: bytes | None = None
    images: bytes | None = None


class TaskLimitReached(Conflict):
    code = "task_limit"


def forbidden(name: str, action: str) -> Forbidden:
    return Forbidden(
        f"task {name!r} belongs to another owner: only its owner's key or an admin key can "
        f"{action} it; choose another name"
    )


def limit_reached(owner: str, count: int, limit: int) -> TaskLimitReached:
    return TaskLimitReached(
        f"owner {owner!r} holds {count} registered tasks, the limit is {limit} "
        "(TAL_MAX_TASKS_PER_OWNER): delete one with DELETE /v1/tasks/{name} (GET /v1/tasks "
        "lists yours), replace one by registering its name again, or register with "
        "ttl_seconds so they expire"
    )


def not_found(name: str) -> NotFound:
    return NotFound(f"task {name!r} is not registered (GET /v1/tasks lists the tasks you see)")


def _expiry(value: bytes | None) -> float | None:
    seconds = float(value) if value else NEVER
    return None if seconds == NEVER else seconds


class RedisTaskStore:
    """Task records in Redis, read by every replica. Methods return ``(ok, value)``: ``ok`` is
    False when Redis cannot answer (the tier fails open and is skipped for a while)."""

    def __init__(self, tier: RedisTier) -> None:
        self.tier = tier
        self._register = tier.client.register_script(REGISTER_LUA)
        self._delete = tier.client.register_script(DELETE_LUA)
        self._migrate = tier.client.register_script(MIGRATE_LUA)

    def _key(self, kind: str, *parts: str) -> str:
        return ":".join((self.tier.prefix, kind, *parts))

    def task_key(self, model: str, name: str) -> str:
        return self._key(TASK_KIND, model, name)

    def _owner_prefix(self, model: str) -> str:
        return self._key(OWNER_KIND, model, "")

    def _legacy_keys(self, model: str) -> list[str]:
        return [self._key(kind, model) for kind in (TASKS_KIND, SUPPORT_REF_KIND, SUPPORT_KIND)]

    async def register(
        self,
        model: str,
        task: NewTask,
        caller: Caller,
        max_per_owner: int,
        ttl_seconds: int,
    ) -> tuple[bool, TaskRecord | None]:
        """Writes ``task`` owned by ``caller`` (a replacement keeps its owner); raises
        Forbidden for another owner's task and TaskLimitReached past ``max_per_owner``."""
        if not self.tier.available:
            return False, None
        await self.migrate_one(model, task.name)
        keys = [self.task_key(model, task.name), self._key(INDEX_KIND, model)]
        args: Sequence[str | bytes | int] = (
            self.task_key(model, ""),
            self._owner_prefix(model),
            task.name,
            caller.owner,
            int(caller.admin),
            max_per_owner,
            ttl_seconds * MS_PER_SECOND,
            task.embedding,
            task.reference or b"",
            task.images or b"",
        )
        ok, reply = await self.tier.run("set", self._register(keys=keys, args=args))
        if not ok or not reply:
            return False, None
        outcome, detail = reply[0], reply[1].decode()
        if outcome == FORBIDDEN:
            raise forbidden(task.name, "replace")
        if outcome == LIMIT:
            raise limit_reached(caller.owner, int(detail), max_per_owner)
        created, expires = reply[2], reply[3]
        record = TaskRecord(
            task.name, task.embedding, detail, float(created), _expiry(expires), task.reference
        )
        return True, record

    async def get(self, model: str, name: str) -> tuple[bool, TaskRecord | None]:
        """``(True, None)``: Redis answered and has no such task."""
        if not self.tier.available:
            return False, None
        ok, values = await self.tier.run(
            "get", self.tier.client.hmget(self.task_key(model, name), RECORD_FIELDS)
        )
        if not ok:
            return False, None
        record = self._record(name, values)
        if record is None and await self.migrate_one(model, name):
            return await self.get(model, name)
        return True, record

    @staticmethod
    def _record(name: str, values: list[bytes | None] | None) -> TaskRecord | None:
        if not values or values[0] is None or values[1] is None:
            return None
        embedding, owner, created, expires, reference = values
        return TaskRecord(
            name=name,
            embedding=bytes(embedding),
            owner=owner.decode(),
            created=float(created or 0),
            expires=_expiry(expires),
            reference=bytes(reference) if reference else None,
        )

    async def images(self, model: str, name: str) -> bytes | None:
        """The support blob of a task (a few MB); None when absent or unreadable."""
        if not self.tier.available:
            return None
        ok, value = await self.tier.run(
            "get", self.tier.client.hget(self.task_key(model, name), SUPPORT)
        )
        return bytes(value) if ok and value else None

    async def delete(self, model: str, name: str, caller: Caller) -> bool:
        """Removes the task (embedding, images, reference, index entries) at once; False when
        Redis cannot answer. Raises NotFound and Forbidden."""
        if not self.tier.available:
            return False
        await self.migrate_one(model, name)
        keys = [self.task_key(model, name), self._key(INDEX_KIND, model)]
        args = (self._owner_prefix(model), name, caller.owner, int(caller.admin))
        ok, reply = await self.tier.run("delete", self._delete(keys=keys, args=args))
        if not ok or not reply:
            return False
        if reply[0] == MISSING:
            raise not_found(name)
        if reply[0] == FORBIDDEN:
            raise forbidden(name, "delete")
        return True

    async def list(self, model: str, owner: str | None) -> tuple[bool, list[TaskRecord]]:
        """Live tasks of ``owner`` (None: every owner's), dropping index entries of tasks that
        are gone."""
        if not self.tier.available:
            return False, []
        await self.migrate(model)
        index = self._key(INDEX_KIND, model) if owner is None else self._owner_prefix(model) + owner
        ok, names = await self.tier.run("get", self.tier.client.zrange(index, 0, -1))
        if not ok:
            return False, []
        names = [n.decode() for n in names or []]
        async with self.tier.client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hmget(self.task_key(model, name), RECORD_FIELDS)
            ok, rows = await self.tier.run("get", pipe.execute())
        if not ok:
            return False, []
        records = [self._record(name, values) for name, values in zip(names, rows, strict=True)]
        gone = [name for name, record in zip(names, records, strict=True) if record is None]
        if gone:
            await self.tier.run("delete", self.tier.client.zrem(index, *gone))
        return True, [r for r in records if r is not None and (owner is None or r.owner == owner)]

    async def migrate_one(self, model: str, name: str) -> bool:
        """Moves ``name`` from the old layout, if it is there; True when it was moved."""
        legacy = self._legacy_keys(model)
        ok, present = await self.tier.run("get", self.tier.client.hexists(legacy[0], name))
        if not ok or not present:
            return False
        keys = [
            *legacy,
            self.task_key(model, name),
            self._key(INDEX_KIND, model),
            self._owner_prefix(model) + LEGACY_OWNER,
        ]
        ok, moved = await self.tier.run("set", self._migrate(keys=keys, args=(name, LEGACY_OWNER)))
        return bool(ok and moved)

    async def migrate(self, model: str) -> None:
        """Moves every task of the old layout (none after the first call, one ``HKEYS``)."""
        ok, names = await self.tier.run("get", self.tier.client.hkeys(self._legacy_keys(model)[0]))
        if not ok or not names:
            return
        for name in names:
            await self.migrate_one(model, name.decode())


class LocalTaskStore:
    """Task records in this process: every task without Redis, and with Redis the copies read
    from it (used while Redis cannot answer) plus tasks registered while it could not
    (``local_only``: no other replica sees them)."""

    def __init__(self) -> None:
        self.records: dict[str, TaskRecord] = {}
        self.local_only: set[str] = set()

    def get(self, name: str) -> TaskRecord | None:
        record = self.records.get(name)
        if record is not None and record.expired():
            self.forget(name)
            return None
        return record

    def remember(self, record: TaskRecord) -> None:
        """A copy of what Redis holds."""
        self.records[record.name] = record
        self.local_only.discard(record.name)

    def forget(self, name: str) -> None:
        self.records.pop(name, None)
        self.local_only.discard(name)

    def owned(self, owner: str | None) -> list[TaskRecord]:
        """Live records of ``owner`` (None: all)."""
        now = time.time()
        return [
            r
            for r in list(self.records.values())
            if not r.expired(now) and (owner is None or r.owner == owner)
        ]

    def register(
        self, task: NewTask, caller: Caller, max_per_owner: int, ttl_seconds: int
    ) -> TaskRecord:
        """The same rules as the Redis script, for this process alone."""
        existing = self.get(task.name)
        if existing is not None and existing.owner != caller.owner and not caller.admin:
            raise forbidden(task.name, "replace")
        owner = caller.owner if existing is None else existing.owner
        if existing is None and max_per_owner:
            count = len(self.owned(owner))
            if count >= max_per_owner:
                raise limit_reached(owner, count, max_per_owner)
        now = time.time()
        record = TaskRecord(
            name=task.name,
            embedding=task.embedding,
            owner=owner,
            created=now,
            expires=now + ttl_seconds if ttl_seconds else None,
            reference=task.reference,
        )
        self.records[task.name] = record
        self.local_only.add(task.name)
        return record

    def delete(self, name: str, caller: Caller) -> None:
        existing = self.get(name)
        if existing is None:
            raise not_found(name)
        if existing.owner != caller.owner and not caller.admin:
            raise forbidden(name, "delete")
        self.forget(name)
