"""The loaded checkpoint: start-up loading, warm-up, readiness and reloads without downtime."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from starlette.concurrency import run_in_threadpool

from service.core.config import Settings
from service.core.errors import Conflict, InvalidInput, NotFound, Unavailable
from service.core.logging import LOGGER
from service.core.metrics import MODEL_READY, set_model_info
from tal.arch.specs import GPT2Spec, ViTSpec
from tal.checkpoints import store
from tal.checkpoints.learngene import Learngene, default_device, load_default
from tal.predict import predict_blob

EMBEDDED_VERSION = "embedded"
# Warm-up: the smallest ViT and GPT-2 the service can be asked for, predicted and serialised.
WARMUP_SPECS = (
    ViTSpec(depth=1, embed_dim=8, num_heads=1, img_size=8, patch_size=4, num_classes=2),
    GPT2Spec(n_layer=1, n_embd=8, n_head=1, vocab_size=16, n_positions=8),
)
MANIFEST_SUMMARY_KEYS = ("checkpoint_format", "tasks", "code_version", "metrics", "created_at")


@dataclass(frozen=True)
class LoadedModel:
    """A learngene ready to serve, and where it came from."""

    learngene: Learngene
    name: str
    version: str
    path: Path | None
    loaded_at: float = field(default_factory=time.time)

    @property
    def model_version(self) -> str:
        return self.learngene.model_version

    def summary(self) -> dict[str, Any]:
        manifest = self.learngene.manifest
        return {
            "name": self.name,
            "version": self.version,
            "model_version": self.model_version,
            "untrained": self.path is None,
            "task_dim": self.learngene.hypernet.config.encoder.task_dim,
            "has_ancestry": self.learngene.ancestry is not None,
            "device": str(self.learngene.hypernet.device),
            "torch_threads": torch.get_num_threads(),
            "loaded_at": self.loaded_at,
            "manifest": {k: manifest[k] for k in MANIFEST_SUMMARY_KEYS if k in manifest},
        }


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        return default_device()
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("TAL_DEVICE=cuda but CUDA is not available")
    return torch.device(setting)


def load_checkpoint(
    name: str, version: str, root: Path | None, device: torch.device
) -> LoadedModel:
    """Loads, verifies (sha256) and warms up a checkpoint. Blocking; raises StoreError.

    The default name with no stored version gives the embedded fresh hypernetwork.
    """
    store.check_name(name, "model name")
    if version != store.LATEST:
        store.check_name(version, "version")
    if name == store.DEFAULT_NAME and not store.list_versions(name, root):
        learngene = load_default(root, device)
        loaded = LoadedModel(learngene, name, EMBEDDED_VERSION, None)
    else:
        path = store.resolve(name, version, root)
        learngene = Learngene.load(path.parent.name, path.name, root, device)
        loaded = LoadedModel(learngene, name, path.name, path)
    warm_up(loaded.learngene)
    return loaded


def warm_up(learngene: Learngene) -> None:
    """One small blob per family: first requests pay no lazy start-up."""
    for spec in WARMUP_SPECS:
        predict_blob(
            spec, None, "hf" if isinstance(spec, GPT2Spec) else "timm", learngene=learngene
        )


class ModelManager:
    """Holds the serving checkpoint; swaps it atomically on reload."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.model_store
        self.current: LoadedModel | None = None
        self.load_error: str | None = None
        self._reload_lock = asyncio.Lock()
        MODEL_READY.set(0)

    @property
    def ready(self) -> bool:
        return self.current is not None

    def require(self) -> LoadedModel:
        """The serving model, or 503 while none is loaded."""
        if self.current is None:
            reason = self.load_error or "the checkpoint is still loading"
            raise Unavailable(f"not ready: {reason}", self.settings.retry_after_seconds)
        return self.current

    def _install(self, loaded: LoadedModel) -> None:
        previous = (self.current.name, self.current.version) if self.current else None
        self.current = loaded
        self.load_error = None
        set_model_info(loaded.name, loaded.version, previous)
        MODEL_READY.set(1)

    async def initial_load(self) -> None:
        """Start-up: load the configured checkpoint; readiness follows success."""
        settings = self.settings
        try:
            device = resolve_device(settings.device)
            loaded = await run_in_threadpool(
                load_checkpoint, settings.model_name, settings.model_version, self.root, device
            )
        except Exception as exc:  # keep the process alive: /readyz reports the reason
            self.load_error = (
                f"loading {settings.model_name}/{settings.model_version} failed: {exc}"
            )
            LOGGER.error("%s", self.load_error)
            return
        self._install(loaded)
        LOGGER.info("serving %s (%s)", loaded.model_version, loaded.path or "embedded default")

    async def reload(self, name: str, version: str) -> LoadedModel:
        """Loads ``name/version`` next to the serving one, then switches. On failure the old one
        keeps serving and the error says why."""
        try:
            store.check_name(name, "model name")
            if version != store.LATEST:
                store.check_name(version, "version")
        except store.StoreError as exc:
            raise InvalidInput(str(exc)) from exc
        embedded = name == store.DEFAULT_NAME and not store.list_versions(name, self.root)
        if not embedded:
            try:
                store.resolve(name, version, self.root)
            except store.StoreError as exc:
                raise NotFound(f"{exc}; still serving {self._serving()}") from exc
        async with self._reload_lock:
            device = (
                self.current.learngene.hypernet.device
                if self.current
                else resolve_device(self.settings.device)
            )
            try:
                loaded = await run_in_threadpool(load_checkpoint, name, version, self.root, device)
            except Exception as exc:  # corrupt, partial or mismatched: keep the old one serving
                raise Conflict(f"reload failed: {exc}; still serving {self._serving()}") from exc
            self._install(loaded)
        LOGGER.info("reloaded: now serving %s", loaded.model_version)
        return loaded

    def _serving(self) -> str:
        return self.current.model_version if self.current else "nothing (not ready)"

    def available(self) -> dict[str, list[str]]:
        """Every model name in the store with its complete versions."""
        return {name: store.list_versions(name, self.root) for name in store.list_models(self.root)}
