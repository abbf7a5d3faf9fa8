"""Training state on disk (safetensors only): module weights, AdamW moments, step, guard state.

Written atomically (temporary file, then rename), so a killed job leaves the previous state.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from tal.blobs.io import read_metadata, write_atomic

OPTIMIZER_PREFIX = "optim."


def save_state(
    path: Path,
    modules: dict[str, nn.Module],
    optimizer: torch.optim.Optimizer | None,
    step: int,
    extra: dict[str, Any] | None = None,
) -> None:
    tensors: dict[str, torch.Tensor] = {}
    for prefix, module in modules.items():
        for name, value in module.state_dict().items():
            tensors[f"{prefix}.{name}"] = value.detach().cpu().contiguous()
    if optimizer is not None:
        for index, state in optimizer.state_dict()["state"].items():
            for key, value in state.items():
                tensor = value if isinstance(value, torch.Tensor) else torch.tensor(value)
                tensors[f"{OPTIMIZER_PREFIX}{index}.{key}"] = tensor.detach().cpu().contiguous()
    metadata = {"step": str(step), "extra": json.dumps(extra or {}, sort_keys=True)}
    write_atomic(path, safetensors.torch.save(tensors, metadata=metadata))


def load_state(
    path: Path, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer | None
) -> tuple[int, dict[str, Any]]:
    """Restores modules (and the optimizer if given); returns ``(step, extra)``."""
    blob = Path(path).read_bytes()
    tensors = safetensors.torch.load(blob)
    metadata = read_metadata(blob)
    for prefix, module in modules.items():
        own = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
        module.load_state_dict(own, strict=True)
    if optimizer is not None:
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith(OPTIMIZER_PREFIX):
                index, name = key[len(OPTIMIZER_PREFIX) :].split(".", 1)
                state.setdefault(int(index), {})[name] = value
        groups = optimizer.state_dict()["param_groups"]
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    return int(metadata["step"]), json.loads(metadata.get("extra", "{}"))
