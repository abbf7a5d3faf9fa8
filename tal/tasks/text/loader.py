"""Load one split of a built-in text task as ``TextTaskData`` (memoised per process)."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import torch

from ..data import SPLITS, check_split
from .build import TextSplitArrays, load_text_task_raw
from .data import TextTaskData
from .sources import source_root
from .spec import TextTaskSpec

_MEMO: dict[tuple[str, str, str], dict[str, TextSplitArrays]] = {}
_MEMO_LOCK = threading.Lock()


def text_task_raw(spec: TextTaskSpec, data_dir: Path) -> dict[str, TextSplitArrays]:
    """Every split of ``spec`` as stored, from this process's memo, the disk cache, or a build.

    Checks each split's shape against the spec's sizes.
    """
    root = source_root()
    key = (spec.name, str(data_dir), str(root))
    with _MEMO_LOCK:
        if key in _MEMO:
            return _MEMO[key]
        splits = load_text_task_raw(spec, data_dir, root)
        for split in SPLITS:
            arrays = splits[split]
            expected = (spec.split_sizes[split], spec.max_tokens)
            if arrays.input_ids.shape != expected or arrays.labels.shape != expected[:1]:
                raise RuntimeError(
                    f"text task {spec.name!r} split {split!r}: got input_ids "
                    f"{arrays.input_ids.shape} / labels {arrays.labels.shape}, expected {expected}"
                )
        _MEMO[key] = splits
        return splits


def clear_text_memo() -> None:
    """Drop the in-process copies of loaded text tasks (the on-disk cache is kept)."""
    with _MEMO_LOCK:
        _MEMO.clear()


def load_text_split(
    spec: TextTaskSpec, split: str, data_dir: Path, limit: int | None = None
) -> TextTaskData:
    """One split of ``spec``: ``input_ids`` int64 ``(N, L)``, ``lengths`` and ``labels`` int64
    ``(N,)``; ``limit`` keeps the first examples of the fixed, shuffled split."""
    split = check_split(split)
    arrays = text_task_raw(spec, data_dir)[split]
    stop = None if limit is None else limit
    return TextTaskData(
        input_ids=torch.from_numpy(arrays.input_ids[:stop].astype(np.int64)),
        lengths=torch.from_numpy(np.array(arrays.lengths[:stop], dtype=np.int64)),
        labels=torch.from_numpy(np.array(arrays.labels[:stop], dtype=np.int64)),
        num_classes=spec.num_classes,
        class_names=spec.class_names,
        name=spec.name,
        split=split,
    )


def text_data_fingerprint(spec: TextTaskSpec, data_dir: Path) -> str:
    """sha256 (hex) over every split's token ids, lengths and labels (and shapes)."""
    splits = text_task_raw(spec, data_dir)
    digest = hashlib.sha256(spec.name.encode())
    for split in SPLITS:
        arrays = splits[split]
        for array in (
            np.ascontiguousarray(arrays.input_ids, dtype="<u2"),
            np.ascontiguousarray(arrays.lengths, dtype="<i8"),
            np.ascontiguousarray(arrays.labels, dtype="<i8"),
        ):
            digest.update(f"{split}:{array.shape}".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()
