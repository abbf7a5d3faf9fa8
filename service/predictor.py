"""Serving ``POST /v1/initialize``: validate, look up the cache, predict once on a miss."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import torch
from starlette.concurrency import run_in_threadpool

from service.cache.keys import BlobKey, blob_etag, task_hash
from service.cache.memory import CacheEntry
from service.cache.singleflight import SingleFlight
from service.cache.tiered import TieredCache
from service.core.admission import MissQueue, QueueFull
from service.core.budget import BudgetExhausted, InflightBudget, estimate_bytes
from service.core.config import Settings
from service.core.errors import InvalidInput, TooLarge, Unavailable
from service.core.logging import LOGGER, RateLimitedLog
from service.core.metrics import HEAD_FIT_DURATION, PREDICTION_DURATION
from service.task_registry import ResolvedTask
from tal import __version__ as tal_version
from tal.arch.formats import check_format
from tal.arch.parse import parse_arch
from tal.arch.specs import GPT2Spec, SpecError, ViTSpec
from tal.checkpoints.learngene import Learngene
from tal.checkpoints.provenance import code_version
from tal.heads.choice import HEAD_DISCRIMINANT, HEAD_PREDICTED, ServedHead
from tal.heads.support import Support
from tal.predict import predict_blob

Spec = ViTSpec | GPT2Spec
SupportLoader = Callable[[], Awaitable[Support]]


@dataclass(frozen=True)
class BlobRequest:
    """A validated request: the spec, its size and everything in the cache key."""

    spec: Spec
    num_params: int
    task: str | None
    format: str
    dtype: str
    head: ServedHead = HEAD_PREDICTED  # or HEAD_DISCRIMINANT: fitted to the task's examples

    @property
    def family(self) -> str:
        return self.spec.family

    @property
    def fits_head(self) -> bool:
        return self.head == HEAD_DISCRIMINANT


def validate_request(
    arch: object, task: str | None, format: str, dtype: str, max_params: int
) -> BlobRequest:
    """Parses the architecture and checks its size before anything is allocated.

    Blocking (a timm name builds a model on the meta device): call it in a thread.
    Raises InvalidInput (422) naming the field, or TooLarge (413).
    """
    try:
        spec = parse_arch(arch)  # type: ignore[arg-type]
        check_format(spec, format)
    except SpecError as exc:
        raise InvalidInput(f"arch: {exc}") from exc
    except Exception as exc:  # anything a client can send must end as 422, never 500
        LOGGER.warning("unexpected error parsing arch: %r", exc)
        raise InvalidInput(f"arch: cannot be parsed ({type(exc).__name__}: {exc})") from exc
    num_params = spec.num_params()
    if num_params > max_params:
        raise TooLarge(
            f"arch: {num_params:,} parameters exceed this server's limit of {max_params:,}; "
            "use a smaller spec"
        )
    return BlobRequest(spec, num_params, task, format, dtype)


def compute_entry(
    learngene: Learngene,
    request: BlobRequest,
    embedding: torch.Tensor | None,
    key: str,
    support: Support | None = None,
) -> CacheEntry:
    """Predicts one blob straight into its buffer, tagged for cache key ``key`` (blocking: run
    it in a thread).

    ``embedding`` is the task's ``(task_dim,)`` vector or None (unconditioned); ``support``,
    the task's labelled examples, when the request fits a discriminant head to them.
    """
    start = time.perf_counter()
    result = predict_blob(
        request.spec,
        request.task,
        request.format,  # type: ignore[arg-type]
        request.dtype,  # type: ignore[arg-type]
        learngene=learngene,
        embedding=embedding,
        support=support,
        head=request.head,
    )
    histogram = HEAD_FIT_DURATION if request.fits_head else PREDICTION_DURATION
    histogram.labels(request.family).observe(time.perf_counter() - start)
    return CacheEntry(blob_etag(key, _producer(learngene)), result.blob.memoryview())


def _producer(learngene: Learngene) -> str:
    """What besides the cache key decides a blob's bytes: the code and the device kind."""
    return f"{tal_version}+{_code_version()}|{learngene.hypernet.device.type}"


@functools.cache
def _code_version() -> str:
    return code_version()


class Predictor:
    """Cache look-up, single flight, the in-flight budget and the prediction threads."""

    def __init__(self, settings: Settings, cache: TieredCache, log: RateLimitedLog) -> None:
        self.settings = settings
        self.cache = cache
        self.log = log
        self.flight: SingleFlight[CacheEntry] = SingleFlight()
        self.budget = InflightBudget(settings.inflight_budget_bytes, settings.budget_wait_seconds)
        self.queue = MissQueue(
            settings.max_queued_misses,
            settings.max_concurrent_predictions,
            settings.retry_after_seconds,
        )
        _code_version()  # runs `git` once at start-up, not in the first request's prediction

    def key(self, model_version: str, request: BlobRequest, task: ResolvedTask) -> str:
        head = request.head
        if request.fits_head:
            assert task.support is not None  # choose_head fits heads to tasks with examples
            head = f"{head}:{task.support.digest}"
        return BlobKey(
            model_version,
            request.spec.spec_hash(),
            task_hash(task.embedding),
            request.format,
            request.dtype,
            head,
        ).digest()

    async def get(
        self,
        key: str,
        learngene: Learngene,
        request: BlobRequest,
        embedding: torch.Tensor | None,
        load_support: SupportLoader | None = None,
    ) -> tuple[CacheEntry, str | None]:
        """``(entry, tier)``: tier is ``"memory"`` / ``"redis"`` for hits, None for misses.
        ``load_support`` reads the task's examples, on a miss that fits a head."""
        entry, tier = await self.cache.get(key)
        if entry is not None:
            return entry, tier
        entry, _ = await self.flight.run(
            key, lambda: self._compute(key, learngene, request, embedding, load_support)
        )
        return entry, None

    async def _compute(
        self,
        key: str,
        learngene: Learngene,
        request: BlobRequest,
        embedding: torch.Tensor | None,
        load_support: SupportLoader | None,
    ) -> CacheEntry:
        cached = self.cache.memory.get(key)
        if cached is not None:  # a computation finished while this request awaited Redis
            return cached
        support = await load_support() if load_support is not None else None
        retry_after = self.settings.retry_after_seconds
        try:
            async with self.queue.slot():
                reservation = self.budget.reserve(
                    estimate_bytes(request.num_params, request.dtype, support is not None)
                )
                async with reservation:
                    entry = await run_in_threadpool(
                        compute_entry, learngene, request, embedding, key, support
                    )
        except QueueFull as exc:
            raise Unavailable(
                f"server busy: {exc}; retry in {exc.retry_after} s", exc.retry_after
            ) from exc
        except BudgetExhausted as exc:
            raise Unavailable(
                "server busy: the in-flight memory budget is full; retry shortly", retry_after
            ) from exc
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            self.log.warning("cuda-oom", f"CUDA out of memory predicting {request.spec}: {exc}")
            raise Unavailable(
                "GPU out of memory for this request; retry shortly", retry_after
            ) from exc
        self.cache.put(key, entry)
        return entry
