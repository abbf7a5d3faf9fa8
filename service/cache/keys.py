"""Cache keys: everything that changes the bytes of a blob, hashed to a fixed length."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

KEY_HEX_CHARS = 32
TASK_HASH_HEX_CHARS = 16
UNCONDITIONED = "none"


def task_hash(embedding: torch.Tensor | None) -> str:
    """Hash of a task embedding's float32 bytes (``(task_dim,)``); a re-registered task with a
    new embedding gets a new hash, so its old blobs are never served."""
    if embedding is None:
        return UNCONDITIONED
    data = embedding.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()[:TASK_HASH_HEX_CHARS]


@dataclass(frozen=True)
class BlobKey:
    """The identity of one predicted blob."""

    model_version: str
    spec_hash: str
    task_hash: str
    format: str
    dtype: str
    head: str  # "predicted", or "discriminant:<support digest>"

    def digest(self) -> str:
        text = "|".join(
            (self.model_version, self.spec_hash, self.task_hash, self.format, self.dtype)
        )
        return hashlib.sha256(f"{text}|{self.head}".encode()).hexdigest()[:KEY_HEX_CHARS]


def blob_etag(key: str, producer: str) -> str:
    """A weak ETag for the blob of cache key ``key`` made by ``producer`` (code version and
    device kind).

    Prediction is deterministic, so the key and the producer decide the weights; the tag is weak
    because another thread count or device may round differently. Deriving it from the key saves
    hashing the blob (0.29 s for ViT-B's 346 MB) and lets any replica compute it.
    """
    digest = hashlib.sha256(f"{key}|{producer}".encode()).hexdigest()[:KEY_HEX_CHARS]
    return f'W/"{digest}"'
